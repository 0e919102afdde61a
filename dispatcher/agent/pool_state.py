"""The session store: the one writer of a pool session's state, in Redis and in its tmux copy.

A session's state has two copies. Redis (:mod:`dispatcher.store.sessions`) is
the fast one every host reads; the tmux session's own ``@aq_*`` user options
are the durable one (they live exactly as long as the agent in it). Every
change of state goes through this module, which writes both together, so
they never disagree; flows never write either copy themselves. If Redis is
emptied, :func:`read` rebuilds the record from the tmux copy, so a running
agent is never mistaken for a free session.

Time is the caller's: ``since`` and ``now`` come from the flow's injected clock.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import redis

from dispatcher.agent.tmux import Tmux
from dispatcher.core.errors import TmuxError
from dispatcher.core.session_ref import SessionRef
from dispatcher.store import sessions as ss
from dispatcher.store.sessions import SessionInfo, State

logger = logging.getLogger(__name__)

#: The fields the tmux copy keeps (as ``@aq_<field>``): enough to rebuild a busy session and resume its agent.
_COPIED = ("state", "project", "task", "model", "agent_uuid", "since")
_PREFIX = "@aq_"


# -- writes: both copies together ---------------------------------------------------

def transition(r: redis.Redis, tmux: Tmux, info: SessionInfo, state: State, *, since: float,
               **changes: object) -> SessionInfo:
    """Move a session to ``state`` (in it since ``since``: the caller's now, or the old ``since`` kept), both copies."""
    new = ss.transition(r, info, state, since=since, **changes)
    write_tmux_copy(tmux, new)
    return new


def set_idle(r: redis.Redis, tmux: Tmux, info: SessionInfo, *, now: float, failed: bool = False,
             detail: str = "", copied: bool = False) -> SessionInfo:
    """Free the session at ``now`` in both copies; ``failed`` starts its cooldown.

    ``copied``: the tmux copy was written already (:func:`idle_copy`, with the pane's reset): Redis only."""
    new = ss.set_idle(r, info, now=now, failed=failed, detail=detail)
    if not copied:
        write_tmux_copy(tmux, new)
    return new


def idle_copy(info: SessionInfo, now: float) -> dict[str, str]:
    """The tmux copy :func:`set_idle` writes for ``info`` freed at ``now`` (set with the pane's reset)."""
    return tmux_copy(ss.freed(info, now=now))


def start_idle_grace(r: redis.Redis, info: SessionInfo, now: float) -> SessionInfo:
    """The agent was first seen idle at ``now`` without its task done: the finish grace runs from here.

    Redis only: the grace timer is not part of the tmux copy (a rebuilt session starts it again).
    """
    return ss.update(r, info, idle_since=now)


def clear_idle_grace(r: redis.Redis, info: SessionInfo) -> SessionInfo:
    """The agent is busy again: stop the finish grace timer (Redis only, like :func:`start_idle_grace`)."""
    return ss.update(r, info, idle_since=0.0)


def tmux_copy(info: SessionInfo) -> dict[str, str]:
    """The user options holding the session's state in tmux (read back by :func:`rebuild` after a flush)."""
    values = {"state": info.state.value, "project": info.project, "task": info.task, "model": info.model,
              "agent_uuid": info.agent_uuid, "since": f"{info.since:.3f}"}
    return {_PREFIX + k: values[k] for k in _COPIED}


def write_tmux_copy(tmux: Tmux, info: SessionInfo) -> None:
    """Record the session's state in its tmux options (one tmux call); a failure is logged, Redis stays the copy."""
    try:
        tmux.set_user_options(info.name, tmux_copy(info))
    except TmuxError as exc:
        logger.warning("cannot tag session %s: %s", info.name, exc)


# -- reads ------------------------------------------------------------------------

def read_tmux_copy(tmux: Tmux, name: str) -> dict[str, str]:
    """The tmux copy of a session's state (field → value; {} if none or no session)."""
    try:
        options = tmux.user_options(name)
    except TmuxError:
        return {}
    return copy_in(options)


def copy_in(options: dict[str, str]) -> dict[str, str]:
    """The tmux copy of a session's state among its user options (field → value)."""
    return {k[len(_PREFIX):]: v for k, v in options.items() if k.startswith(_PREFIX)}


def rebuild(tmux: Tmux, host: str, name: str) -> SessionInfo:
    """State from tmux alone (Redis empty): missing, idle, or what the tmux copy says."""
    if not tmux.has_session(name):
        return SessionInfo(name, State.MISSING, host=host)
    tags = read_tmux_copy(tmux, name)
    try:
        state = State(tags.get("state", "idle"))
    except ValueError:
        state = State.IDLE
    return SessionInfo(name, state, project=tags.get("project", ""), task=tags.get("task", ""),
                       model=tags.get("model", ""), agent_uuid=tags.get("agent_uuid", ""),
                       since=float(tags.get("since") or 0), detail="rebuilt from tmux", host=host)


def read(r: redis.Redis, tmux: Tmux, host: str, name: str) -> SessionInfo:
    """Current state of one pool session of this host; rebuilt from tmux (and stored) when Redis has none."""
    return _resolve(r, tmux, host, name, ss.get(r, SessionRef(host, name)), tmux.has_session(name))


def read_stored(r: redis.Redis, tmux: Tmux, host: str, name: str) -> SessionInfo:
    """:func:`read` without asking tmux whether the session exists when Redis has its record: for a second read
    under the session lock, just after a full :func:`read` (or ``read_all``) saw it. A session that vanished in
    between fails its launch (SessionError), which gives the task back and frees the session record."""
    info = ss.get(r, SessionRef(host, name))
    return info if info is not None else read(r, tmux, host, name)


def read_all(r: redis.Redis, tmux: Tmux, host: str, names: Sequence[str]) -> dict[str, SessionInfo]:
    """States of this host's sessions with one tmux call and one Redis round trip (fan-out, status)."""
    live = set(tmux.list_sessions())
    stored = ss.get_all(r, [SessionRef(host, n) for n in names])
    return {n: _resolve(r, tmux, host, n, stored[SessionRef(host, n)], n in live) for n in names}


def _resolve(r: redis.Redis, tmux: Tmux, host: str, name: str, info: SessionInfo | None,
             exists: bool) -> SessionInfo:
    if not exists:
        if info is None:
            return SessionInfo(name, State.MISSING, host=host)
        return SessionInfo(name, State.MISSING, project=info.project, task=info.task, agent_uuid=info.agent_uuid,
                           host=host)
    if info is None:
        info = rebuild(tmux, host, name)
        if info.state is not State.MISSING:
            ss.put(r, info)  # the tmux copy back into Redis: both copies agree again
            logger.info("session %s state rebuilt from tmux: %s %s", name, info.state.value, info.task_key)
        return info
    return info
