# shellcheck shell=bash
# Sourced by tests/compose/run.sh (and tested by tests/unit/test_compose_lib.py): what keeps two
# runs of the compose tier on one machine apart.
#
# - aq_run_ids: a compose project name, image tag, work dir and free loopback ports per run;
# - engine_*: a Docker engine started by a run is recorded, every run using it registers, and the
#   last run out stops it (never an engine no run started, never one another run still uses).
#   State (lock, users, engine) lives in AQ_ENGINE_STATE (default /run/agent-queue-compose).

# A TCP port on 127.0.0.1 that nobody listens on right now (chosen by the kernel).
aq_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# aq_run_ids ROOT: sets RUN_ID PROJECT_NAME WORK WHEELS IMAGE REDIS_PORT FLOWER_PORT (the AQ_* knobs win).
# WHEELS sits under tests/compose/.work/wheels/, the one .work path .dockerignore lets into the
# build context (a wildcard exception such as .work/*/wheels is not honoured by the classic builder).
aq_run_ids() {
    local root="$1"
    RUN_ID="$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
    PROJECT_NAME="${AQ_COMPOSE_PROJECT:-aqcompose-${RUN_ID}}"
    WORK="${root}/tests/compose/.work/${PROJECT_NAME}"
    WHEELS="${root}/tests/compose/.work/wheels/${PROJECT_NAME}"
    IMAGE="agent-queue-dispatcher:${PROJECT_NAME}"
    REDIS_PORT="${AQ_TEST_REDIS_PORT:-$(aq_free_port)}"
    FLOWER_PORT="${AQ_TEST_FLOWER_PORT:-$(aq_free_port)}"
    while [[ "${FLOWER_PORT}" == "${REDIS_PORT}" && -z "${AQ_TEST_FLOWER_PORT:-}" ]]; do
        FLOWER_PORT="$(aq_free_port)"
    done
}

_engine_state() { echo "${AQ_ENGINE_STATE:-/run/agent-queue-compose}"; }

# "pid:starttime" of a live process (the start time tells a reused pid from the original; a
# zombie counts as gone).
_proc_id() {
    local fields
    fields=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $1, $20}') || return 1
    [[ -n "${fields}" && "${fields%% *}" != Z ]] && echo "$1:${fields#* }"
}

_proc_alive() { # _proc_alive "pid:starttime"
    [[ -n "$1" && "$(_proc_id "${1%%:*}" || true)" == "$1" ]]
}

# engine_lock / engine_unlock: serialise engine decisions between runs (re-entrant in one shell).
engine_lock() {
    if [[ -n "${ENGINE_LOCK_FD:-}" ]]; then return 0; fi
    local state
    state=$(_engine_state)
    mkdir -p "${state}/users"
    exec {ENGINE_LOCK_FD}>"${state}/lock"
    flock "${ENGINE_LOCK_FD}"
}

engine_unlock() {
    if [[ -z "${ENGINE_LOCK_FD:-}" ]]; then return 0; fi
    flock -u "${ENGINE_LOCK_FD}"
    exec {ENGINE_LOCK_FD}>&-
    ENGINE_LOCK_FD=""
}

# engine_register: this run (AQ_RUN_PID, default $$) uses the engine, whoever started it.
engine_register() {
    local me="${AQ_RUN_PID:-$$}" id held="${ENGINE_LOCK_FD:-}"
    engine_lock
    id=$(_proc_id "${me}")
    echo "${id}" >"$(_engine_state)/users/${me}"
    [[ -n "${held}" ]] || engine_unlock
}

# engine_adopt PID: this run started the engine PID; the last run out stops it.
engine_adopt() {
    local held="${ENGINE_LOCK_FD:-}"
    engine_lock
    _proc_id "$1" >"$(_engine_state)/engine"
    [[ -n "${held}" ]] || engine_unlock
}

# engine_release [keep]: this run no longer uses the engine. When no live run does and a run
# started it, stop it (unless "keep"). Prints what it did.
engine_release() {
    local me="${AQ_RUN_PID:-$$}" state f id engine pid left=0 held="${ENGINE_LOCK_FD:-}"
    state=$(_engine_state)
    engine_lock
    rm -f "${state}/users/${me}"
    for f in "${state}"/users/*; do
        [[ -e "${f}" ]] || continue
        id=$(cat "${f}" 2>/dev/null || true)
        if _proc_alive "${id}"; then left=$((left + 1)); else rm -f "${f}"; fi  # a crashed run
    done
    engine=$(cat "${state}/engine" 2>/dev/null || true)
    if ! _proc_alive "${engine}"; then
        rm -f "${state}/engine"
        echo "engine: none started by a run is running"
    elif ((left > 0)); then
        echo "engine: left running for ${left} other run(s)"
    elif [[ "${1:-}" == keep ]]; then
        echo "engine: kept running (pid ${engine%%:*})"
    else
        pid="${engine%%:*}"
        echo "engine: stopping pid ${pid} (started by a run, no run uses it any more)"
        kill "${pid}" 2>/dev/null || true
        local deadline=$((SECONDS + 30))
        while _proc_alive "${engine}" && ((SECONDS < deadline)); do sleep 0.2; done
        rm -f "${state}/engine"
    fi
    [[ -n "${held}" ]] || engine_unlock
}
