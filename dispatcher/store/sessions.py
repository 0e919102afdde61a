"""Session state in Redis (design §5): one hash per pool session.

Rebuildable: if Redis is emptied, :func:`rebuild_from_tmux` restores each
session's state from the tmux session's own options (``@aq_*``), which the
dispatcher sets at launch and which live as long as the tmux session.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields, replace
from enum import Enum
from typing import Any, Iterable

import redis

from dispatcher.core import keys
from dispatcher.core.session_ref import SessionRef


class State(str, Enum):
    """Lifecycle of a pool session: idle → launching → working → (finished|failed|limited) → idle."""

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
        return f"{self.project}:{self.task}" if self.task else ""

    def in_cooldown(self, now: float, cooldown: float) -> bool:
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


def _encode(info: SessionInfo) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for k, v in asdict(info).items():
        if k in _KEYED:
            continue
        out[k] = v.value if isinstance(v, Enum) else str(v)
    return out


def get(r: "redis.Redis", ref: SessionRef) -> SessionInfo | None:
    """State of one session, or None if Redis has none (fresh or flushed)."""
    raw = r.hgetall(keys.session_state(str(ref)))
    return _decode(ref, raw) if raw else None


def get_all(r: "redis.Redis", refs: Iterable[SessionRef]) -> dict[SessionRef, SessionInfo | None]:
    """States of many sessions in one round trip."""
    refs = list(refs)
    pipe = r.pipeline(transaction=False)
    for ref in refs:
        pipe.hgetall(keys.session_state(str(ref)))
    return {ref: (_decode(ref, raw) if raw else None) for ref, raw in zip(refs, pipe.execute())}


def put(r: "redis.Redis", info: SessionInfo) -> SessionInfo:
    """Store the whole state of a session (replacing stale fields)."""
    key = keys.session_state(info.ref)
    pipe = r.pipeline(transaction=True)
    pipe.delete(key)
    pipe.hset(key, mapping=_encode(info))
    pipe.execute()
    return info


def transition(r: "redis.Redis", info: SessionInfo, state: State, *, now: float | None = None,
               **changes: object) -> SessionInfo:
    """Move a session to ``state`` (``since`` = now) with other fields changed, and store it."""
    changes.setdefault("since", time.time() if now is None else now)
    new = replace(info, state=state, **changes)  # type: ignore[arg-type]
    return put(r, new)


def set_idle(r: "redis.Redis", info: SessionInfo, *, failed: bool = False, now: float | None = None,
             detail: str = "") -> SessionInfo:
    """Free the session; ``failed`` starts its cooldown."""
    now = time.time() if now is None else now
    return transition(r, info, State.IDLE, now=now, project="", task="", model="", agent_uuid="",
                      detail=detail, idle_since=0.0, hooks_after="0-0",
                      last_failure=now if failed else info.last_failure)
