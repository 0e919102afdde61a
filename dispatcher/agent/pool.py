"""The tmux side of the pool: create, list and kill ``prefix + i`` sessions, never any other."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from dispatcher.core.config import PoolSettings
from dispatcher.core.errors import SessionError
from dispatcher.agent.tmux import Tmux

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
