"""The tmux side of the pool: create, list, reset and kill ``prefix + i`` sessions, never any other.

Which names belong to the pool is :class:`PoolSettings`' rule (``names``,
``contains``); what a session is doing is :mod:`pool_state`'s record. This
module only acts on the sessions and their panes, through :class:`Tmux`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dispatcher.agent import warm
from dispatcher.agent.tmux import Tmux
from dispatcher.core.config import PoolSettings, Settings
from dispatcher.core.errors import SessionError, TmuxError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolSession:
    """One pool session as tmux sees it."""

    name: str
    exists: bool
    dead: bool = False
    command: str = ""
    pid: int | None = None


def attach_command(socket_name: str, pool: PoolSettings) -> str:
    """The exact command that shows the pool's first session (socket names are validated: no quoting needed)."""
    return f"tmux -L {socket_name} attach -t ={pool.names()[0]}"


def create(tmux: Tmux, pool: PoolSettings, *, cwd: str | Path | None = None) -> list[str]:
    """Create the missing pool sessions (fixed size, remain-on-exit, a shell); return the created names."""
    created: list[str] = []
    existing = set(tmux.list_sessions())
    for name in pool.names():
        if name in existing:
            continue
        tmux.new_session(name, width=pool.width, height=pool.height, cwd=cwd or Path.home(), remain_on_exit=True)
        created.append(name)
        logger.info("created pool session %s (%dx%d)", name, pool.width, pool.height)
    return created


def status(tmux: Tmux, pool: PoolSettings) -> list[PoolSession]:
    """Every pool session, in order, with what runs in it."""
    existing = set(tmux.list_sessions())
    out: list[PoolSession] = []
    for name in pool.names():
        if name not in existing:
            out.append(PoolSession(name=name, exists=False))
            continue
        info = tmux.pane_info(name)
        out.append(PoolSession(name=name, exists=True, dead=info.dead, command=info.current_command, pid=info.pid))
    return out


def kill(tmux: Tmux, pool: PoolSettings, names: list[str] | None = None) -> list[str]:
    """Kill pool sessions (all, or ``names``); refuse any name outside the pool."""
    wanted = list(pool.names()) if names is None else names
    outside = [n for n in wanted if not pool.contains(n)]
    if outside:
        raise SessionError(f"not pool sessions, left alone: {', '.join(outside)}")
    existing = set(tmux.list_sessions())
    killed = []
    for name in wanted:
        if name in existing:
            tmux.kill_session(name)
            killed.append(name)
    return killed


def idle_shell() -> list[str]:
    """argv of the shell a reset pane runs: the user's $SHELL (absolute, executable) else /bin/sh, login."""
    shell = os.environ.get("SHELL", "")
    if not (os.path.isabs(shell) and os.access(shell, os.X_OK)):
        shell = "/bin/sh"
    # Two words: tmux execs them directly (no 'sh -c'); -l like a fresh tmux session's shell.
    return [shell, "-l"]


def reset_pane(tmux: Tmux, name: str, settings: Settings, options: Mapping[str, str] | None = None) -> None:
    """Kill whatever runs in the pane and leave an idle shell (an operator attaching sees a prompt).

    ``options``: more user options to set in the same tmux call (the state copy of the freed session)."""
    # The warm tag is cleared first: a dispatch must never take the shell for the warm agent it replaces.
    first = {warm.OPTION: "", **(options or {})}
    try:
        # An explicit command: a bare 'respawn-pane -k' re-runs the pane's last one, i.e. the old agent.
        tmux.respawn(name, idle_shell(), cwd=settings.projects_dir, options=first)
    except TmuxError as exc:
        logger.warning("cannot reset pane of %s: %s", name, exc)
