#!/bin/sh
# Entrypoint of the agent-queue image (runs under tini as the `agent` user).
#
# - Checks that the state dir and the Claude config dir are writable (a bind mount owned by
#   another uid is the usual mistake) and says so clearly instead of failing later.
# - For a Celery *worker* (`celery ... worker ...`), creates the tmux pool first: the tmux
#   server must live in the worker's container, because the worker drives it.
#   AQ_POOL_CREATE=0 skips it; AQ_POOL_CREATE=1 forces it for any command.
# - Then execs the command.
set -eu

log() { printf 'docker-entrypoint: %s\n' "$*" >&2; }

for dir in "${AQ_STATE_DIR:-/var/lib/agent-queue}" "${CLAUDE_CONFIG_DIR:-$HOME/.claude}"; do
    mkdir -p "$dir" 2>/dev/null || true
    if [ ! -w "$dir" ]; then
        log "$dir is not writable by uid $(id -u): chown it to $(id -u):$(id -g) on the host, or rebuild with --build-arg AGENT_UID=<owner uid>"
        exit 1
    fi
done

projects="${AQ_PROJECTS_DIR:-}"
if [ -n "$projects" ] && [ ! -d "$projects" ]; then
    log "projects dir $projects is not mounted (set PROJECTS_DIR to an absolute host path)"
    exit 1
fi

is_worker=0
if [ "${1:-}" = "celery" ]; then
    for arg in "$@"; do
        [ "$arg" = "worker" ] && is_worker=1 && break
    done
fi
case "${AQ_POOL_CREATE:-}" in
    0) is_worker=0 ;;
    1) is_worker=1 ;;
esac

if [ "$is_worker" = 1 ]; then
    log "creating the tmux pool (dispatcher pool create)"
    dispatcher pool create
fi

exec "$@"
