"""Session state that survives Redis: each pool session carries ``@aq_*`` tmux options.

Redis is the fast copy; the tmux session itself is the durable one (it lives
exactly as long as the agent in it). If Redis is emptied, :func:`read`
rebuilds the hash from the options, so a running agent is never mistaken for
a free session.
"""

from __future__ import annotations

import logging
import os
from typing import Sequence

import redis

from dispatcher.store import sessions as ss
from dispatcher.core.config import Settings
from dispatcher.core.errors import TmuxError
from dispatcher.core.session_ref import SessionRef
from dispatcher.store.sessions import SessionInfo, State
from dispatcher.agent.tmux import SEP, Tmux

logger = logging.getLogger(__name__)

_OPTS = ("state", "project", "task", "model", "agent_uuid", "since")


def _target(name: str) -> str:
    # set-option/show-options take a pane target in tmux 3.x: exact match needs the trailing colon.
    return f"={name}:"


def tag(tmux: Tmux, name: str, info: SessionInfo) -> None:
    """Record the session's state in its tmux options (one tmux call)."""
    values = {"state": info.state.value, "project": info.project, "task": info.task, "model": info.model,
              "agent_uuid": info.agent_uuid, "since": f"{info.since:.3f}"}
    args: list[object] = []
    for k in _OPTS:
        if args:
            args.append(SEP)
        args += ["set-option", "-q", "-t", _target(name), f"@aq_{k}", values[k]]
    try:
        tmux.run(*args)
    except TmuxError as exc:
        logger.warning("cannot tag session %s: %s", name, exc)


def transition(r: "redis.Redis", tmux: Tmux, info: SessionInfo, state: State, **changes: object) -> SessionInfo:
    """Move a session to ``state`` in Redis and in its tmux options (the durable copy) together."""
    new = ss.transition(r, info, state, **changes)  # type: ignore[arg-type]
    tag(tmux, new.name, new)
    return new


def set_idle(r: "redis.Redis", tmux: Tmux, info: SessionInfo, **kwargs: object) -> SessionInfo:
    """Free the session in Redis and in tmux (see :func:`sessions.set_idle`)."""
    new = ss.set_idle(r, info, **kwargs)  # type: ignore[arg-type]
    tag(tmux, new.name, new)
    return new


def read_tags(tmux: Tmux, name: str) -> dict[str, str]:
    """The ``@aq_*`` options of a session ({} if none or no session)."""
    try:
        out = tmux.run("show-options", "-q", "-t", _target(name))
    except TmuxError:
        return {}
    tags: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        if key.startswith("@aq_"):
            tags[key[4:]] = value.strip().strip("'\"")
    return tags


def rebuild(tmux: Tmux, host: str, name: str) -> SessionInfo:
    """State from tmux alone (Redis empty): missing, idle, or what the tags say."""
    if not tmux.has_session(name):
        return SessionInfo(name, State.MISSING, host=host)
    tags = read_tags(tmux, name)
    try:
        state = State(tags.get("state", "idle"))
    except ValueError:
        state = State.IDLE
    return SessionInfo(name, state, project=tags.get("project", ""), task=tags.get("task", ""),
                       model=tags.get("model", ""), agent_uuid=tags.get("agent_uuid", ""),
                       since=float(tags.get("since") or 0), detail="rebuilt from tmux", host=host)


def read(r: "redis.Redis", tmux: Tmux, host: str, name: str) -> SessionInfo:
    """Current state of one pool session of this host; rebuilt from tmux (and stored) when Redis has none."""
    return _resolve(r, tmux, host, name, ss.get(r, SessionRef(host, name)), tmux.has_session(name))


def read_all(r: "redis.Redis", tmux: Tmux, host: str, names: Sequence[str]) -> dict[str, SessionInfo]:
    """States of this host's sessions with one tmux call and one Redis round trip (fan-out, status)."""
    live = set(tmux.list_sessions())
    stored = ss.get_all(r, [SessionRef(host, n) for n in names])
    return {n: _resolve(r, tmux, host, n, stored[SessionRef(host, n)], n in live) for n in names}


def _resolve(r: "redis.Redis", tmux: Tmux, host: str, name: str, info: SessionInfo | None,
             exists: bool) -> SessionInfo:
    if not exists:
        if info is None:
            return SessionInfo(name, State.MISSING, host=host)
        return SessionInfo(name, State.MISSING, project=info.project, task=info.task, agent_uuid=info.agent_uuid,
                           host=host)
    if info is None:
        info = rebuild(tmux, host, name)
        if info.state is not State.MISSING:
            ss.put(r, info)
            logger.info("session %s state rebuilt from tmux: %s %s", name, info.state.value, info.task_key)
        return info
    return info


def idle_shell() -> list[str]:
    """argv of the shell a reset pane runs: the user's $SHELL (absolute, executable) else /bin/sh, login."""
    shell = os.environ.get("SHELL", "")
    if not (os.path.isabs(shell) and os.access(shell, os.X_OK)):
        shell = "/bin/sh"
    # Two words: tmux execs them directly (no 'sh -c'); -l like a fresh tmux session's shell.
    return [shell, "-l"]


def reset_pane(tmux: Tmux, name: str, settings: Settings) -> None:
    """Kill whatever runs in the pane and leave an idle shell (an operator attaching sees a prompt)."""
    try:
        # An explicit command: a bare 'respawn-pane -k' re-runs the pane's last one, i.e. the old agent.
        tmux.respawn(name, idle_shell(), cwd=settings.projects_dir)
    except TmuxError as exc:
        logger.warning("cannot reset pane of %s: %s", name, exc)
