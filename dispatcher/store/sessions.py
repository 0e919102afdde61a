"""The Redis record of each pool session's state (design §5): one hash per session, ``aq:session:HOST/NAME``.

This module only encodes, reads and writes that hash. Session state has a
second, durable copy in the tmux session's own ``@aq_*`` options, and
:mod:`dispatcher.agent.pool_state` is the one writer of both: flows change a
session's state through it, never through the writes here. Reads (``get``,
``get_all``) are for anyone; a host reads other hosts' sessions this way.

Rebuildable: if Redis is emptied, ``pool_state.read`` restores a session's
record from its tmux options. Time is always the caller's (``since``,
``now``): this module never reads a clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from enum import Enum
from typing import Any

import redis

from dispatcher.core import keys
from dispatcher.core.session_ref import SessionRef


class State(str, Enum):
    """Lifecycle of a pool session: idle → launching → working (⇄ waiting, → limited → working) → idle.

    A session whose task ends, fails or is given back goes straight to idle (FINISHED and
    FAILED are never written); missing means no tmux session has that name.
    """

    IDLE = "idle"
    LAUNCHING = "launching"
    WORKING = "working"
    WAITING = "waiting"  # agent asks a question / permission: an operator should attach
    FINISHED = "finished"
    FAILED = "failed"
    LIMITED = "limited"
    MISSING = "missing"  # no such tmux session


@dataclass(frozen=True)
class SessionInfo:
    """What the dispatcher knows about one pool session."""

    name: str  # the tmux session name (unique on its host only)
    state: State = State.IDLE
    project: str = ""
    task: str = ""  # task ID (file name without .md)
    model: str = ""
    since: float = 0.0
    last_failure: float = 0.0
    agent_uuid: str = ""
    detail: str = ""
    idle_since: float = 0.0  # first time the agent was seen idle without the task done (grace timer)
    hooks_after: str = "0-0"  # hook stream id before this agent started: older reports are not about it
    host: str = ""  # the host whose tmux server holds it

    @property
    def ref(self) -> str:
        """``HOST/NAME``: how Redis, hooks, events and messages name this session."""
        return f"{self.host}/{self.name}"

    @property
    def task_key(self) -> str:
        """``PROJECT:TASK`` of the task it holds, '' when none."""
        return f"{self.project}:{self.task}" if self.task else ""

    def in_cooldown(self, now: float, cooldown: float) -> bool:
        """True within ``cooldown`` seconds of its last failure (no new task yet)."""
        return bool(self.last_failure) and now - self.last_failure < cooldown


_FIELDS = {f.name for f in fields(SessionInfo)}
_KEYED = ("name", "host")  # in the key, not in the hash


def _decode(ref: SessionRef, raw: Any) -> SessionInfo:
    data: dict[str, object] = {"name": ref.name, "host": ref.host}
    for k, v in raw.items():
        if k not in _FIELDS or k in _KEYED:
            continue
        if k == "state":
            try:
                data[k] = State(v)
            except ValueError:
                data[k] = State.IDLE
        elif k in ("since", "last_failure", "idle_since"):
            data[k] = float(v or 0)
        else:
            data[k] = v
    return SessionInfo(**data)  # type: ignore[arg-type]


_STORED = tuple(f.name for f in fields(SessionInfo) if f.name not in _KEYED)


def _encode(info: SessionInfo) -> dict[Any, Any]:
    # Field by field, not dataclasses.asdict (which deep-copies): this runs twice per dispatch.
    out: dict[Any, Any] = {}
    for k in _STORED:
        v = getattr(info, k)
        out[k] = v.value if isinstance(v, Enum) else str(v)
    return out


def get(r: redis.Redis, ref: SessionRef) -> SessionInfo | None:
    """State of one session, or None if Redis has none (fresh or flushed)."""
    raw = r.hgetall(keys.session_state(str(ref)))
    return _decode(ref, raw) if raw else None


def get_all(r: redis.Redis, refs: Iterable[SessionRef]) -> dict[SessionRef, SessionInfo | None]:
    """States of many sessions in one round trip."""
    refs = list(refs)
    pipe = r.pipeline(transaction=False)
    for ref in refs:
        pipe.hgetall(keys.session_state(str(ref)))
    return {ref: (_decode(ref, raw) if raw else None) for ref, raw in zip(refs, pipe.execute())}


def put(r: redis.Redis, info: SessionInfo) -> SessionInfo:
    """Store the whole record of a session (replacing stale fields); for ``pool_state`` only."""
    key = keys.session_state(info.ref)
    pipe = r.pipeline(transaction=True)
    pipe.delete(key)
    pipe.hset(key, mapping=_encode(info))
    pipe.execute()
    return info


def transition(r: redis.Redis, info: SessionInfo, state: State, *, since: float,
               **changes: object) -> SessionInfo:
    """Move a session to ``state``, in it since ``since`` (the caller's now, or the old ``since`` kept); store it."""
    new = replace(info, state=state, since=since, **changes)  # type: ignore[arg-type]
    return put(r, new)


def update(r: redis.Redis, info: SessionInfo, **changes: object) -> SessionInfo:
    """Change fields of a session other than its state and ``since`` (say, the idle grace timer), and store it."""
    if "state" in changes or "since" in changes:
        raise ValueError("a state change is a transition")
    return put(r, replace(info, **changes))  # type: ignore[arg-type]


def set_idle(r: redis.Redis, info: SessionInfo, *, now: float, failed: bool = False,
             detail: str = "") -> SessionInfo:
    """Free the session (idle since ``now``, task fields cleared); ``failed`` starts its cooldown at ``now``."""
    return put(r, freed(info, now=now, failed=failed, detail=detail))


def freed(info: SessionInfo, *, now: float, failed: bool = False, detail: str = "") -> SessionInfo:
    """What :func:`set_idle` stores (nothing stored here)."""
    return replace(info, state=State.IDLE, since=now, project="", task="", model="", agent_uuid="", detail=detail,
                   idle_since=0.0, hooks_after="0-0", last_failure=now if failed else info.last_failure)
