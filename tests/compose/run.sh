#!/usr/bin/env bash
# Compose tier: a REAL `docker-compose up` of docker-compose.yml + docker-compose.test.yml.
#
#   sudo bash tests/compose/run.sh          # as root, on a fresh Debian (bookworm) machine
#
# 1. installs docker.io, docker-compose, debootstrap (and python3-pip) when missing;
# 2. starts a local engine when none answers (no bridge, no iptables; overlay2, else vfs);
# 3. builds the base image local/bookworm-py from Debian packages once (cached by its label);
# 4. builds a wheelhouse of the project + deps on the host (pip inside a build cannot reach
#    the index), then the project image offline (`docker-compose build`);
# 5. `docker-compose up -d`, waits for every healthcheck;
# 6. drops three tasks (TASK-2 depends on TASK-1) into the mounted projects dir and checks
#    that the fake agent in the worker got each once, TASK-2 only after TASK-1 was done;
# 7. `docker-compose exec -T worker dispatcher status` shows them;
# 8. Flower on 127.0.0.1 answers 200 with credentials, 401 without, and listens on loopback only;
# 9. `docker-compose down` (volumes kept), a task dropped while everything is down, `up -d`:
#    nothing lost, nothing twice, the new task dispatched;
# 10. always `down -v` of its own project at the end (trap), removes its image tag, and stops the
#     engine only if a run of this script started it and no other run still uses it.
#
# Several runs on one machine do not collide (tests/compose/lib.sh): each has its own compose
# project, image tag, work dir (tests/compose/.work/<project>, removed after a passing run), wheelhouse and
# free loopback ports. Host networking: every container shares the host's loopback.
# Environment knobs:
#   AQ_COMPOSE_PROJECT      compose project name (default aqcompose-<random>)
#   AQ_TEST_REDIS_PORT      loopback Redis port (default: a free one)
#   AQ_TEST_FLOWER_PORT     loopback Flower port (default: a free one)
#   AQ_ENGINE_STATE         where runs record the engine they share (default /run/agent-queue-compose)
#   AQ_BASE_IMAGE           base image name (default local/bookworm-py)
#   AQ_REBUILD_BASE=1       rebuild the base image even if cached
#   AQ_DOCKER_STORAGE       storage driver for an engine started here (default: overlay2, else vfs)
#   AQ_KEEP_ENGINE=1        leave an engine started here running at the end (faster reruns)
#   AQ_COMPOSE_KEEP=1       do not `down -v` at the end (debugging; stop it yourself)
#   AQ_DEBIAN_MIRROR        Debian mirror for debootstrap (default: from /etc/apt/sources*)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=tests/compose/lib.sh
source "${ROOT}/tests/compose/lib.sh"
aq_run_ids "${ROOT}"   # PROJECT_NAME WORK WHEELS IMAGE REDIS_PORT FLOWER_PORT of this run
BASE_IMAGE="${AQ_BASE_IMAGE:-local/bookworm-py}"
BASE_LABEL_VALUE="3"   # bump when the debootstrap package list changes
BASE_PACKAGES="python3,python3-venv,tmux,ca-certificates,redis-server,procps,tini"
AGENT_UID=1000
now_us() { echo "${EPOCHREALTIME/./}"; }   # bash 5: microseconds, no bc/date needed
secs() { local us=$(( $1 )); printf '%d.%01d' $((us / 1000000)) $(((us % 1000000) / 100000)); }
T0=$(now_us)

STEPS=()
PASSED=0
FAILED=0
ENGINE_PID=""
IMAGE_BUILT=0

log() { printf '[compose %6ss] %s\n' "$(secs "$(now_us) - T0")" "$*"; }
die() { log "FAIL: $*"; FAILED=$((FAILED + 1)); exit 1; }
ok() { log "ok: $*"; PASSED=$((PASSED + 1)); }

# step NAME CMD...: run and record its duration
step() {
    local name="$1"; shift
    local s
    s=$(now_us)
    log "── ${name}"
    "$@"
    STEPS+=("$(printf '%-34s %7s s' "${name}" "$(secs "$(now_us) - s")")")
}

summary() {
    echo
    echo "compose tier: step durations"
    local line
    for line in "${STEPS[@]}"; do echo "  ${line}"; done
    printf '  %-34s %7s s\n' "total" "$(secs "$(now_us) - T0")"
}

# ----------------------------------------------------------------------------- helpers
need_root() {
    if [[ "$(id -u)" != 0 ]]; then
        echo "tests/compose/run.sh: run as root (it installs packages and starts dockerd)" >&2
        exit 2
    fi
}

install_prereqs() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v docker-compose >/dev/null || missing+=(docker-compose)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v python3 >/dev/null || missing+=(python3)
    python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
    command -v ss >/dev/null || missing+=(iproute2)
    if ((${#missing[@]})); then
        echo "installing: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

engine_up() { timeout 10 docker info >/dev/null 2>&1; }

start_engine() {
    # Under the engine lock: two runs never both start one, and each registers as a user.
    engine_lock
    engine_register
    ENGINE_LOG="$(_engine_state)/dockerd.log"
    if engine_up; then
        log "engine already running: $(docker info -f '{{.ServerVersion}} {{.Driver}}')"
        engine_unlock
        return
    fi
    mkdir -p "${WORK}"
    local drivers=("${AQ_DOCKER_STORAGE:-overlay2}")
    [[ -z "${AQ_DOCKER_STORAGE:-}" ]] && drivers+=(vfs)
    local driver deadline
    for driver in "${drivers[@]}"; do
        log "starting dockerd (--storage-driver=${driver}, no bridge, no iptables), log: ${ENGINE_LOG}"
        # The engine may outlive this run (another run uses it): its log is not in this run's WORK,
        # and it must not inherit the engine lock (it would hold it for its whole life).
        setsid dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver="${driver}" \
            >"${ENGINE_LOG}" 2>&1 </dev/null {ENGINE_LOCK_FD}>&- &
        ENGINE_PID=$!
        deadline=$((SECONDS + 60))
        while ((SECONDS < deadline)); do
            if engine_up; then
                log "engine up: $(docker info -f '{{.ServerVersion}} {{.Driver}}')"
                engine_adopt "${ENGINE_PID}"
                engine_unlock
                return
            fi
            kill -0 "${ENGINE_PID}" 2>/dev/null || break
            sleep 0.5
        done
        log "dockerd with ${driver} did not come up; last log lines:"
        tail -n 5 "${ENGINE_LOG}" || true
        kill "${ENGINE_PID}" 2>/dev/null || true
        wait "${ENGINE_PID}" 2>/dev/null || true
        ENGINE_PID=""
    done
    engine_unlock
    die "no Docker engine could be started (see ${ENGINE_LOG})"
}

# The engine is stopped by the last run out, and only if a run started it (tests/compose/lib.sh).
stop_engine() {
    local keep=""
    [[ "${AQ_KEEP_ENGINE:-0}" == 1 ]] && keep=keep
    log "$(engine_release ${keep})"
}

debian_mirror() {
    if [[ -n "${AQ_DEBIAN_MIRROR:-}" ]]; then echo "${AQ_DEBIAN_MIRROR}"; return; fi
    local m
    # deb822 (.sources): the URIs of a stanza for bookworm's main archive (not -security)
    m=$(awk '/^URIs:/ {u=$2} /^Suites:/ && u !~ /security/ && / bookworm( |$)/ {print u; exit}' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    if [[ -z "${m}" ]]; then
        m=$(grep -hE '^deb .*(/debian/?) ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | grep -v security | awk '{print $2}' | head -n1 || true)
    fi
    echo "${m:-http://deb.debian.org/debian}"
}

build_base() {
    # One run at a time builds the shared base image; the others then find it cached.
    local lock_fd
    mkdir -p "$(_engine_state)"
    exec {lock_fd}>"$(_engine_state)/base.lock"
    flock "${lock_fd}"
    build_base_locked
    exec {lock_fd}>&-
}

build_base_locked() {
    if [[ "${AQ_REBUILD_BASE:-0}" != 1 ]] \
        && [[ "$(docker image inspect -f '{{index .Config.Labels "org.agent-queue.base"}}' "${BASE_IMAGE}" 2>/dev/null)" == "${BASE_LABEL_VALUE}" ]]; then
        log "base image ${BASE_IMAGE} cached (label org.agent-queue.base=${BASE_LABEL_VALUE})"
        return
    fi
    local mirror rootfs
    mirror=$(debian_mirror)
    rootfs="${WORK}/rootfs"
    rm -rf "${rootfs}"
    log "debootstrap bookworm from ${mirror} (${BASE_PACKAGES})"
    if ! debootstrap --variant=minbase --include="${BASE_PACKAGES}" bookworm "${rootfs}" "${mirror}" \
        >"${WORK}/debootstrap.log" 2>&1; then
        tail -n 20 "${WORK}/debootstrap.log"
        die "debootstrap failed (log: ${WORK}/debootstrap.log)"
    fi
    rm -rf "${rootfs}"/var/cache/apt/archives/*.deb "${rootfs}"/var/lib/apt/lists/*
    tar -C "${rootfs}" -c . | docker import \
        -c 'CMD ["/bin/bash"]' -c 'ENV LANG=C.UTF-8' \
        -c "LABEL org.agent-queue.base=${BASE_LABEL_VALUE}" - "${BASE_IMAGE}" >/dev/null
    rm -rf "${rootfs}"
    docker run --rm --network host "${BASE_IMAGE}" sh -c \
        'python3 -c "import venv, ensurepip" && tmux -V && tini --version && redis-server --version' >/dev/null \
        || die "base image ${BASE_IMAGE} lacks python3-venv/tmux/tini/redis-server"
}

build_wheelhouse() {
    # The project's sources, copied so the build leaves nothing in the working tree.
    local src="${WORK}/src" wheels="${WHEELS}"
    rm -rf "${src}"
    mkdir -p "${src}" "${wheels}"
    (cd "${ROOT}" && for f in pyproject.toml setup.cfg setup.py README.md LICENSE celeryconfig.py MANIFEST.in; do
        [[ -e "${f}" ]] && cp -p "${f}" "${src}/"
    done; true)
    for d in dispatcher workers; do
        [[ -d "${ROOT}/${d}" ]] && cp -rp "${ROOT}/${d}" "${src}/"
    done
    find "${src}" -name __pycache__ -prune -exec rm -rf {} +
    rm -f "${wheels}"/agent_queue_dispatcher-*.whl
    local pyver
    pyver=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    if [[ "${pyver}" == 3.11 ]]; then
        # async-timeout: redis needs it below Python 3.11.3 (Debian bookworm has 3.11.2).
        python3 -m pip wheel -qq --disable-pip-version-check -w "${wheels}" "${src}" async-timeout
    else
        log "host python is ${pyver}: downloading cp311 wheels for the image's Python 3.11"
        python3 -m pip wheel -qq --disable-pip-version-check --no-deps -w "${wheels}" "${src}"
        python3 -m pip download -qq --disable-pip-version-check -d "${wheels}" --only-binary=:all: \
            --python-version 3.11 --implementation cp --abi cp311 --platform manylinux2014_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
            "${wheels}"/agent_queue_dispatcher-*.whl async-timeout
    fi
    log "wheelhouse: $(ls "${wheels}" | wc -l) wheels, $(du -sh "${wheels}" | cut -f1)"
}

# docker-compose with the test files, an isolated env file (a user's .env in the repo is not
# read) and none of the user's Claude/login variables.
dc() {
    env -u CLAUDE_CONFIG -u DISPATCHER_CONFIG_FILE -u ANTHROPIC_API_KEY -u CLAUDE_CODE_OAUTH_TOKEN \
        -u AGENT_UID -u AGENT_GID -u CLAUDE_CODE_VERSION \
        docker-compose --env-file "${WORK}/test.env" -p "${PROJECT_NAME}" \
        -f "${ROOT}/docker-compose.yml" -f "${ROOT}/docker-compose.test.yml" "$@"
}

port_free() { ! ss -Htln "sport = :$1" | grep -q .; }

prepare_env() {
    local pw auth
    pw=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
    auth="aqtest:$(head -c 12 /dev/urandom | base64 | tr -d '/+=')"
    port_free "${REDIS_PORT}" || die "loopback port ${REDIS_PORT} is taken (set AQ_TEST_REDIS_PORT)"
    while ! port_free "${FLOWER_PORT}"; do FLOWER_PORT=$((FLOWER_PORT + 1)); done
    PROJECTS="${WORK}/projects"
    LOGS="${WORK}/logs"
    rm -rf "${PROJECTS}" "${LOGS}"
    mkdir -p "${PROJECTS}/proj/.agent-queue/inbox" "${PROJECTS}/proj/.agent-queue/done" "${LOGS}"
    chown -R "${AGENT_UID}:${AGENT_UID}" "${PROJECTS}" "${LOGS}"
    cat >"${WORK}/test.env" <<EOF
REDIS_PASSWORD=${pw}
FLOWER_BASIC_AUTH=${auth}
PROJECTS_DIR=${PROJECTS}
AQ_TEST_LOG_DIR=${LOGS}
AQ_TEST_REDIS_PORT=${REDIS_PORT}
AQ_TEST_FLOWER_PORT=${FLOWER_PORT}
AQ_TEST_BASE=${BASE_IMAGE}
AQ_TEST_WHEELS=${WHEELS#"${ROOT}/"}
DISPATCHER_IMAGE=${IMAGE}
EOF
    FLOWER_AUTH="${auth}"
    # leftovers of an aborted run under the same project name would carry old state
    dc down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true
    # these would override the env file
    unset REDIS_PASSWORD FLOWER_BASIC_AUTH PROJECTS_DIR AQ_TEST_LOG_DIR DISPATCHER_IMAGE AQ_TEST_BASE || true
    dc config -q
}

build_image() {
    IMAGE_BUILT=1
    dc build worker >"${WORK}/build.log" 2>&1 || { tail -n 40 "${WORK}/build.log"; die "image build failed (${WORK}/build.log)"; }
    docker image inspect "${IMAGE}" >/dev/null
    log "image ${IMAGE}: $(docker image inspect -f '{{.Size}}' "${IMAGE}" | awk '{printf "%.0f MB", $1/1e6}')"
}

dump_state() {
    log "state for debugging:"
    dc ps || true
    dc logs --no-color --tail 60 || true
    find "${PROJECTS}" -path '*/.agent-queue/*' -type f | sort || true
    [[ -f "${LOGS}/fake-agent.log" ]] && tail -n 20 "${LOGS}/fake-agent.log" || true
}

SERVICES=(redis worker beat watcher flower-test)

wait_healthy() {
    local deadline=$((SECONDS + ${1:-180})) svc cid st all bad
    while ((SECONDS < deadline)); do
        all=1 bad=""
        for svc in "${SERVICES[@]}"; do
            cid=$(dc ps -q "${svc}" 2>/dev/null || true)
            if [[ -z "${cid}" ]]; then all=0; bad+=" ${svc}=missing"; continue; fi
            st=$(docker inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "${cid}")
            case "${st}" in
                running/healthy) ;;
                exited/* | dead/*) dump_state; die "${svc} is ${st}" ;;
                *) all=0; bad+=" ${svc}=${st}" ;;
            esac
        done
        ((all)) && { ok "all services healthy: ${SERVICES[*]}"; return; }
        sleep 1
    done
    dump_state
    die "not healthy in time:${bad}"
}

write_task() { # write_task ID BODY [DEPS_YAML] [BUSY_MS]   (AQ_PROJ: the project, default proj)
    local inbox="${PROJECTS}/${AQ_PROJ:-proj}/.agent-queue/inbox" tmp
    if [[ ! -d "${inbox}" ]]; then
        mkdir -p "${inbox}" "${PROJECTS}/${AQ_PROJ}/.agent-queue/done"
        chown -R "${AGENT_UID}:${AGENT_UID}" "${PROJECTS}/${AQ_PROJ}"
    fi
    tmp="${inbox}/.$1.tmp"
    {
        echo "---"
        echo "title: compose test $1"
        if [[ -n "${3:-}" ]]; then echo "depends_on: $3"; fi
        echo "---"
        echo "$2"
        echo "@fake: sleep ${4:-300}"
        echo "@fake: done"
    } >"${tmp}"
    chown "${AGENT_UID}:${AGENT_UID}" "${tmp}"
    mv "${tmp}" "${inbox}/$1.md"   # atomic: the watcher sees a complete file
}

wait_done() { # wait_done TIMEOUT ID...
    local deadline=$((SECONDS + $1)) id missing
    shift
    while ((SECONDS < deadline)); do
        missing=""
        for id in "$@"; do
            [[ -f "${PROJECTS}/proj/.agent-queue/done/${id}.md" ]] || missing+=" ${id}"
        done
        [[ -z "${missing}" ]] && return 0
        sleep 0.5
    done
    dump_state
    die "not done in time:${missing}"
}

check_order() {
    python3 - "${LOGS}/fake-agent.log" "$@" <<'PY'
import json, re, sys
path, ids = sys.argv[1], sys.argv[2:]
msgs = []
for line in open(path, encoding="utf-8"):
    e = json.loads(line)
    if e.get("event") == "message":
        m = re.match(r"\[([A-Za-z0-9._-]+)\.md\]", e.get("text", ""))
        if m:
            msgs.append((e["time"], m.group(1), e.get("cwd"), e.get("session_id")))
seen = [t for _, t, _, _ in msgs]
for t in ids:
    n = seen.count(t)
    if n != 1:
        sys.exit(f"{t} delivered {n} times (log: {seen})")
first = {t: ts for ts, t, _, _ in msgs}
if "TASK-1" in first and "TASK-2" in first and not first["TASK-1"] < first["TASK-2"]:
    sys.exit(f"TASK-2 delivered before TASK-1: {seen}")
for _, t, cwd, _ in msgs:
    if not cwd or not cwd.endswith("/proj"):
        sys.exit(f"{t} ran in {cwd!r}, not in the project dir")
print("delivered once each, in order:", " ".join(seen))
PY
}

# ----------------------------------------------------------------------------- steps
s_tasks() {
    # TASK-1 keeps its agent busy 4 s before moving itself to done/. A dispatcher that ignored
    # the dependency would hand TASK-2 to the free session right after TASK-1's launch (~2 s);
    # one that honours it can deliver TASK-2 only after TASK-1 is done (>= 4 s later).
    write_task TASK-1 "First task." "" 4000
    write_task TASK-2 "Second task: needs TASK-1." '["proj:TASK-1"]'
    write_task TASK-3 "Third task, independent."
    wait_done 120 TASK-1 TASK-2 TASK-3
    ok "TASK-1..3 moved to done/ by the fake agent"
    # The watcher path, not only beat's periodic scan: inbox_event tasks reached the worker.
    local events
    events=$(dc logs --no-color worker | grep -c 'Task inbox_event\[.*\] received' || true)
    ((events >= 1)) || { dump_state; die "no inbox_event reached the worker (watcher -> Redis -> worker broken)"; }
    ok "watcher enqueued inbox_event (${events} received by the worker)"
    check_order TASK-1 TASK-2 TASK-3 || { dump_state; die "delivery order/count"; }
    ok "fake agent received each task once, in the project dir"
    python3 - "${LOGS}/fake-agent.log" <<'PY' || { dump_state; die "TASK-2 started before TASK-1 was done, or TASK-3 waited for it"; }
import json, re, sys
ev = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
def t(task):
    for e in ev:
        if e.get("event") == "message" and re.match(r"\[%s\.md\]" % re.escape(task), e.get("text", "")):
            return e["time"]
t1, t2, t3 = t("TASK-1"), t("TASK-2"), t("TASK-3")
if t2 - t1 < 4.0:
    sys.exit(f"TASK-2 arrived {t2 - t1:.2f}s after TASK-1, before TASK-1 (busy 4 s) could be done")
if not t3 < t2:
    sys.exit("TASK-3 (independent) was delivered after the blocked TASK-2")
print(f"TASK-2 arrived {t2 - t1:.2f}s after TASK-1 (>= 4 s busy); TASK-3 {t3 - t1:.2f}s after TASK-1")
PY
    ok "dependency honoured: TASK-2 only after TASK-1 was done; TASK-3 not held up by it"
}

s_status() {
    local out
    out=$(dc exec -T worker dispatcher status 2>&1) || { echo "${out}"; die "dispatcher status failed"; }
    echo "${out}" | sed 's/^/    | /'
    grep -q "ccl-auto-0" <<<"${out}" || die "status does not show the pool session ccl-auto-0"
    grep -q "proj" <<<"${out}" || die "status does not show project proj"
    ok "dispatcher status (via docker-compose exec) shows the pool and the project"
}

http_code() { # http_code URL [user:pass]
    python3 - "$@" <<'PY'
import base64, sys, urllib.error, urllib.request
req = urllib.request.Request(sys.argv[1])
if len(sys.argv) > 2:
    req.add_header("Authorization", "Basic " + base64.b64encode(sys.argv[2].encode()).decode())
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
except OSError as e:
    print(f"error: {e}")
PY
}

s_flower() {
    local url="http://127.0.0.1:${FLOWER_PORT}/" code
    code=$(http_code "${url}" "${FLOWER_AUTH}")
    [[ "${code}" == 200 ]] || die "Flower with credentials: ${code} (want 200)"
    code=$(http_code "${url}")
    [[ "${code}" == 401 ]] || die "Flower without credentials: ${code} (want 401)"
    code=$(http_code "${url}" "aqtest:wrong")
    [[ "${code}" == 401 ]] || die "Flower with a wrong password: ${code} (want 401)"
    local listen
    listen=$(ss -Htln "sport = :${FLOWER_PORT}" | awk '{print $4}' | sort -u | tr '\n' ' ')
    [[ "${listen}" =~ ^(127\.0\.0\.1:${FLOWER_PORT}[[:space:]])+$ ]] || die "Flower listens on: ${listen} (want 127.0.0.1 only)"
    listen=$(ss -Htln "sport = :${REDIS_PORT}" | awk '{print $4}' | sort -u | tr '\n' ' ')
    [[ "${listen}" =~ ^(127\.0\.0\.1:${REDIS_PORT}[[:space:]])+$ ]] || die "Redis listens on: ${listen} (want 127.0.0.1 only)"
    ok "Flower on 127.0.0.1:${FLOWER_PORT}: 200 with credentials, 401 without/wrong; Flower and Redis on loopback only"
}

s_beat_single() {
    local n
    n=$(dc ps -q beat | wc -l)
    [[ "${n}" == 1 ]] || die "${n} beat containers"
    ok "exactly one beat"
}

s_down() {
    dc down --timeout 30 >"${WORK}/down.log" 2>&1 || { cat "${WORK}/down.log"; die "docker-compose down failed"; }
    # A task created while everything is down: only a full scan after `up` can find it.
    write_task TASK-4 "Written while the stack was down."
    ok "down (volumes kept); TASK-4 written while down"
}

s_up_again() {
    dc up -d >"${WORK}/up2.log" 2>&1 || { cat "${WORK}/up2.log"; die "second up failed"; }
}

s_after_restart() {
    write_task TASK-5 "Written after the restart."
    wait_done 120 TASK-4 TASK-5
    check_order TASK-1 TASK-2 TASK-3 TASK-4 TASK-5 || { dump_state; die "after restart: delivery count/order"; }
    local left
    left=$(find "${PROJECTS}/proj/.agent-queue/inbox" -type f ! -name '.*' | sort | tr '\n' ' ')
    [[ -z "${left}" ]] || die "files left in inbox/ after all tasks are done: ${left}"
    ok "after down/up: TASK-1..3 still done, TASK-4 (written while down) and TASK-5 dispatched, none twice, inbox empty"
}

s_fleet() {
    # A second host (worker-2: its own host name, tmux pool and state volume) joins; tasks spread over both;
    # `docker-compose stop worker-2` while it works: its tasks finish on the first host (docs/multi-host.md).
    dc --profile fleet up -d worker-2 >"${WORK}/fleet.log" 2>&1 || { cat "${WORK}/fleet.log"; die "worker-2 did not start"; }
    local saved=("${SERVICES[@]}")
    SERVICES=(worker-2)
    wait_healthy 180
    SERVICES=("${saved[@]}")
    local i deadline
    for i in 1 2 3 4; do AQ_PROJ="f${i}" write_task "FLEET-${i}" "Fleet task ${i}." "" 8000; done
    deadline=$((SECONDS + 90))
    until grep -q '"event": "message".*"aq_session": "worker-2/' "${LOGS}/fake-agent.log"; do
        ((SECONDS < deadline)) || { dump_state; die "worker-2 never received a task"; }
        sleep 0.5
    done
    ok "the second host took a share: $(grep -c '"event": "message".*"aq_session": "worker-2/' "${LOGS}/fake-agent.log") task(s) on worker-2"
    dc stop -t 10 worker-2 >>"${WORK}/fleet.log" 2>&1 || die "docker-compose stop worker-2 failed"
    deadline=$((SECONDS + 150))
    local missing
    while true; do
        missing=""
        for i in 1 2 3 4; do [[ -f "${PROJECTS}/f${i}/.agent-queue/done/FLEET-${i}.md" ]] || missing+=" FLEET-${i}"; done
        [[ -z "${missing}" ]] && break
        ((SECONDS < deadline)) || { dump_state; die "not done after worker-2 stopped:${missing}"; }
        sleep 0.5
    done
    python3 - "${LOGS}/fake-agent.log" <<'PY' || { dump_state; die "fleet: a task ran twice on a live host, or finished on the stopped one"; }
import json, re, sys
runs = {}
for line in open(sys.argv[1], encoding="utf-8"):
    e = json.loads(line)
    m = re.match(r"\[(FLEET-\d)\.md\]", e.get("text", "")) if e.get("event") == "message" else None
    if m:
        runs.setdefault(m.group(1), []).append(e.get("aq_session", ""))
for task, where in sorted(runs.items()):
    # Once; or twice when its first host was stopped under it: then the second run is on the live host.
    if len(where) > 2 or (len(where) == 2 and not (where[0].startswith("worker-2/") and where[1].startswith("worker/"))):
        sys.exit(f"{task}: {where}")
print("fleet runs:", runs)
PY
    ok "worker-2 stopped while working: its tasks finished on worker, nothing else ran twice"
}

cleanup() {
    local rc=$?
    set +e
    if [[ -f "${WORK}/test.env" ]] && engine_up; then
        if [[ "${AQ_COMPOSE_KEEP:-0}" == 1 ]]; then
            log "AQ_COMPOSE_KEEP=1: leaving the stack up (docker-compose -p ${PROJECT_NAME} ... down -v)"
        else
            log "down -v (project ${PROJECT_NAME})"
            dc down -v --timeout 10 --remove-orphans >"${WORK}/down-final.log" 2>&1 || cat "${WORK}/down-final.log"
            if ((IMAGE_BUILT)); then docker image rm "${IMAGE}" >/dev/null 2>&1 || true; fi
        fi
    fi
    [[ "${AQ_COMPOSE_KEEP:-0}" == 1 ]] || stop_engine
    rm -rf "${WHEELS}"
    if ((rc == 0)) && [[ "${AQ_COMPOSE_KEEP:-0}" != 1 ]]; then rm -rf "${WORK}"; fi
    summary
    ((rc != 0 && FAILED == 0)) && FAILED=1
    echo
    echo "compose: ${PASSED} passed, ${FAILED} failed"
    exit "${rc}"
}

# ----------------------------------------------------------------------------- main
need_root
mkdir -p "${WORK}"
rm -f "${WORK}/test.env"
trap cleanup EXIT
trap 'exit 130' INT TERM

step "install prerequisites" install_prereqs
step "engine" start_engine
step "base image (debootstrap, cached)" build_base
step "wheelhouse (host pip)" build_wheelhouse
step "compose config" prepare_env
step "image build (offline)" build_image
step "up -d" dc up -d
step "wait for health" wait_healthy 180
step "three tasks, dependency order" s_tasks
step "dispatcher status via exec" s_status
step "flower auth + loopback" s_flower
step "one beat" s_beat_single
step "down, task written while down" s_down
step "up -d again" s_up_again
step "wait for health again" wait_healthy 180
step "nothing lost after restart" s_after_restart
step "second host joins, then stops" s_fleet
