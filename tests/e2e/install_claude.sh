#!/usr/bin/env bash
# Install one exact version of @anthropic-ai/claude-code into its own cache dir
# and print the path of its `claude` executable. Idempotent: a complete install
# is reused. Each version has its own prefix, so the pinned version and the
# newest release (the e2e tier runs on both) never overwrite each other.
#
#   AQ_CLAUDE_VERSION  version to install (default: the pinned one below)
#   AQ_CLAUDE_CACHE    cache root (default: ~/.cache/agent-queue); the prefix is <root>/claude-code-<version>
set -euo pipefail

VERSION="${AQ_CLAUDE_VERSION:-2.1.197}"
[[ "${VERSION}" =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] || { echo "install_claude.sh: bad version '${VERSION}'" >&2; exit 2; }
PREFIX="${AQ_CLAUDE_CACHE:-${HOME}/.cache/agent-queue}/claude-code-${VERSION}"
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
