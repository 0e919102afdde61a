# agent-queue dispatcher: one image for every service (worker, beat, watcher, flower).
#
#   docker build -t agent-queue-dispatcher .                                # from PyPI + Claude Code (npm)
#   docker build --build-arg WHEELS=wheels --build-arg CLAUDE_CODE_VERSION=none \
#                --build-arg BASE=local/bookworm-py -t agent-queue-dispatcher .  # offline (tests/compose/run.sh)
#
# BASE must be Debian-based with python3 >= 3.11 (python:3.11-slim by default). tmux, procps and
# tini are installed with apt-get when missing, so a base that already has them builds offline.

ARG BASE=python:3.11-slim

# ---------------------------------------------------------------- build: the virtualenv
FROM ${BASE} AS build
# A directory of wheels inside the build context (relative path). When set, pip installs
# offline from it (--no-index); when empty, from the sources in the context with the index.
ARG WHEELS=
ARG PIP_DISABLE_PIP_VERSION_CHECK=1
ENV PIP_NO_CACHE_DIR=1
COPY . /src
RUN set -eu; \
    if ls /src/docker/ca-certificates/*.crt >/dev/null 2>&1; then \
        cp /src/docker/ca-certificates/*.crt /usr/local/share/ca-certificates/ && update-ca-certificates; \
        export PIP_CERT=/etc/ssl/certs/ca-certificates.crt; \
    fi; \
    python3 -m venv /opt/venv; \
    if [ -n "${WHEELS}" ]; then \
        test -d "/src/${WHEELS}" || { echo "WHEELS=${WHEELS}: no such directory in the build context" >&2; exit 1; }; \
        /opt/venv/bin/pip install --no-index --find-links "/src/${WHEELS}" agent-queue-dispatcher; \
    else \
        /opt/venv/bin/pip install /src; \
    fi; \
    /opt/venv/bin/python -c 'import dispatcher, celery, redis, yaml, watchdog, flower'; \
    /opt/venv/bin/dispatcher --help >/dev/null

# ---------------------------------------------------------------- claude: the Claude Code binary
FROM ${BASE} AS claude
# Pinned Claude Code (npm). "none" skips it (tests use the fake agent). The npm package's
# postinstall puts a native binary in bin/claude.exe: only that binary goes to the runtime
# image, so neither Node nor npm is needed there.
ARG CLAUDE_CODE_VERSION=2.1.197
COPY docker/ca-certificates/ /usr/local/share/ca-certificates/agent-queue/
RUN set -eu; \
    mkdir -p /opt/claude-code/bin; \
    if [ "${CLAUDE_CODE_VERSION}" != "none" ]; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates nodejs npm; \
        update-ca-certificates; \
        export NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt; \
        npm install --prefix /tmp/cc --no-audit --no-fund --loglevel=error \
            "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}"; \
        cp "$(readlink -f /tmp/cc/node_modules/@anthropic-ai/claude-code/bin/claude.exe)" /opt/claude-code/bin/claude; \
        chmod 0755 /opt/claude-code/bin/claude; \
        got="$(/opt/claude-code/bin/claude --version | awk '{print $1}')"; \
        [ "$got" = "${CLAUDE_CODE_VERSION}" ] || { echo "claude --version: '$got', want ${CLAUDE_CODE_VERSION}" >&2; exit 1; }; \
    fi

# ---------------------------------------------------------------- runtime
FROM ${BASE}
ARG CLAUDE_CODE_VERSION=2.1.197
# The agent user's ids: match them to the owner of the projects directory on the host.
ARG AGENT_UID=1000
ARG AGENT_GID=1000

ENV LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    DISABLE_AUTOUPDATER=1 \
    DISPATCHER_CONFIG=/etc/agent-queue/dispatcher.yaml \
    AQ_STATE_DIR=/var/lib/agent-queue \
    CLAUDE_CONFIG_DIR=/home/agent/.claude \
    NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt

COPY docker/ca-certificates/ /usr/local/share/ca-certificates/agent-queue/

RUN set -eu; \
    need=""; \
    command -v tmux >/dev/null 2>&1 || need="$need tmux"; \
    command -v tini >/dev/null 2>&1 || need="$need tini"; \
    command -v ps   >/dev/null 2>&1 || need="$need procps"; \
    # agents work in git repositories
    if [ "${CLAUDE_CODE_VERSION}" != "none" ]; then \
        command -v git >/dev/null 2>&1 || need="$need git"; \
    fi; \
    if [ -n "$need" ]; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates $need; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    if ls /usr/local/share/ca-certificates/agent-queue/*.crt >/dev/null 2>&1; then update-ca-certificates; fi

RUN set -eu; \
    groupadd --gid "${AGENT_GID}" agent; \
    useradd --uid "${AGENT_UID}" --gid "${AGENT_GID}" --create-home --home-dir /home/agent --shell /bin/bash agent; \
    mkdir -p /var/lib/agent-queue /etc/agent-queue /home/agent/.claude; \
    chown -R agent:agent /var/lib/agent-queue /home/agent; \
    # tmux starts login shells, and /etc/profile resets PATH: keep the venv first there too.
    printf 'case ":$PATH:" in *:/opt/venv/bin:*) ;; *) PATH=/opt/venv/bin:$PATH; export PATH ;; esac\n' \
        > /etc/profile.d/agent-queue.sh

COPY --from=build /opt/venv /opt/venv
COPY --from=claude /opt/claude-code/bin/ /usr/local/bin/
COPY docker/entrypoint.sh /usr/local/bin/docker-entrypoint
COPY docker/healthcheck.sh /usr/local/bin/healthcheck
COPY docker/dispatcher.compose.yaml /etc/agent-queue/dispatcher.yaml
RUN chmod 0755 /usr/local/bin/docker-entrypoint /usr/local/bin/healthcheck

USER agent
WORKDIR /home/agent
ENTRYPOINT ["tini", "-g", "--", "docker-entrypoint"]
CMD ["celery", "-A", "dispatcher", "worker", "-P", "solo", "-l", "info"]
HEALTHCHECK --interval=30s --timeout=20s --start-period=30s --retries=3 CMD ["healthcheck", "auto"]
