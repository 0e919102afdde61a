#!/usr/bin/env bash
# Install a pinned @anthropic-ai/claude-code into a cache dir and print the
# path of its `claude` executable. Idempotent: a complete install is reused.
#
#   AQ_CLAUDE_VERSION  version to install (default: the pinned one below)
#   AQ_CLAUDE_CACHE    install prefix (default: ~/.cache/agent-queue/claude-code-<version>)
set -euo pipefail

VERSION="${AQ_CLAUDE_VERSION:-2.1.197}"
PREFIX="${AQ_CLAUDE_CACHE:-${HOME}/.cache/agent-queue/claude-code-${VERSION}}"
BIN="${PREFIX}/node_modules/.bin/claude"
STAMP="${PREFIX}/.installed-${VERSION}"

if [[ -f "${STAMP}" && -x "${BIN}" ]]; then
    printf '%s\n' "${BIN}"
    exit 0
fi

command -v npm >/dev/null 2>&1 || { echo "install_claude.sh: npm not found" >&2; exit 3; }

mkdir -p "${PREFIX}"
# Serialize concurrent installs into the same prefix.
exec 9>"${PREFIX}/.install.lock"
flock 9
if [[ ! -f "${STAMP}" || ! -x "${BIN}" ]]; then
    npm install --prefix "${PREFIX}" --no-audit --no-fund --loglevel=error \
        "@anthropic-ai/claude-code@${VERSION}" >&2
    got="$("${BIN}" --version 2>/dev/null | awk '{print $1}')"
    if [[ "${got}" != "${VERSION}" ]]; then
        echo "install_claude.sh: expected claude ${VERSION}, got '${got}'" >&2
        exit 4
    fi
    touch "${STAMP}"
fi
printf '%s\n' "${BIN}"
