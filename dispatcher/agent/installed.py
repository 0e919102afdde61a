"""Is the agent installed on this host? One check for the dispatcher (pause), ``up`` (warn) and ``doctor`` (fail)."""

from __future__ import annotations

import functools
import shlex
import shutil

#: What to tell a person whose host has no agent.
INSTALL_HINT = "npm install -g @anthropic-ai/claude-code"


@functools.lru_cache(maxsize=8)
def _words(command: str) -> tuple[str, ...]:
    """The command's words (parsed once per command string: the dispatcher asks before every launch)."""
    return tuple(shlex.split(command))


def agent_missing(command: str, *, path: str | None = None) -> str | None:
    """Why ``agent.command`` cannot start an agent here (its executable is not on ``path``, default $PATH), or None.

    Raises ValueError when the command cannot be parsed or is empty: a configuration error, not a missing install.
    """
    words = _words(command)
    if not words:
        raise ValueError("agent.command is empty")
    if shutil.which(words[0], path=path) is None:
        return f"agent command {words[0]!r} not found on PATH"
    return None
