"""Event log: every state change appended to a capped Redis stream (``dispatcher events``)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from dispatcher.core import defaults as d
from dispatcher.core import keys

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class Event:
    """One entry of the event stream."""

    id: str
    time: float
    kind: str
    task: str
    session: str
    detail: str

    def line(self) -> str:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.time))
        parts = [stamp, f"{self.kind:<18}", self.task or "-", self.session or "-"]
        return "  ".join(parts) + (f"  {self.detail}" if self.detail else "")


def emit(r: redis.Redis, kind: str, *, task: str = "", session: str = "", detail: str = "",
         now: float | None = None, **extra: Any) -> None:
    """Append an event; never raises (events are for people, losing one must not stop dispatch)."""
    fields: dict[Any, Any] = {"time": f"{time.time() if now is None else now:.3f}", "kind": kind, "task": task,
              "session": session, "detail": detail}
    if extra:
        fields["extra"] = json.dumps(extra, sort_keys=True, default=str)
    logger.info("event %s task=%s session=%s %s", kind, task, session, detail)
    try:
        r.xadd(keys.EVENTS, fields, maxlen=keys.EVENTS_MAXLEN, approximate=True)
    except redis.RedisError:
        logger.exception("could not record event %s", kind)


#: SET NX and XADD in one step: of two racing announcers the loser can never log its next event in between.
_EMIT_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
  return 1
end
return 0
"""
SEEN_TTL_S = d.EVENT_SEEN_TTL_S


def announce(r: redis.Redis, project: str, task_id: str, path: str) -> None:
    """Log "submitted" once per version (inode) of a task file, atomically before anything else is logged.

    Every path that logs a task's first state (the watcher's inbox_event, a claim, a blocked,
    invalid or stuck marker) calls this first, so "submitted" comes first however they race.
    """
    queued = announce_args(project, task_id, path)
    if queued is None:
        return
    try:
        if r.eval(*queued):  # type: ignore[no-untyped-call]
            logger.info("event submitted task=%s:%s", project, task_id)
    except redis.RedisError:
        logger.exception("could not record event submitted for %s:%s", project, task_id)


def announce_args(project: str, task_id: str, path: str) -> tuple[Any, ...] | None:
    """The arguments of :func:`announce`'s EVAL (None when the file is gone everywhere): a caller that sends it
    in a pipeline with its next event (the claim) saves a round trip; the pipeline keeps their order."""
    # It may already be claimed, or even done when the event comes late: a move keeps the inode.
    done = os.path.join(os.path.dirname(os.path.dirname(path)), d.DONE, task_id + d.TASK_SUFFIX)
    for candidate in (path, path + d.LAUNCHING, path + d.DISPATCHED, done):
        try:
            version = os.stat(candidate, follow_symlinks=False).st_ino
            break
        except OSError:
            continue
    else:
        return None
    task = f"{project}:{task_id}"
    now = time.time()
    fields = ["time", f"{now:.3f}", "kind", "submitted", "task", task, "session", "", "detail", ""]
    return (_EMIT_ONCE, 2, keys.seen(project, task_id, version), keys.EVENTS, SEEN_TTL_S, keys.EVENTS_MAXLEN,
            *fields)


def _event(entry_id: Any, fields: Any) -> Event:
    return Event(entry_id, float(fields.get("time", 0)), fields.get("kind", ""), fields.get("task", ""),
                 fields.get("session", ""), fields.get("detail", ""))


def recent(r: redis.Redis, count: int = 50) -> list[Event]:
    """The last ``count`` events, oldest first."""
    rows: list[Any] = r.xrevrange(keys.EVENTS, count=count) or []  # type: ignore[assignment]
    return [_event(i, f) for i, f in reversed(rows)]


def follow(r: redis.Redis, after: str = "$", block_ms: int = 1000) -> Iterator[Event]:
    """Yield new events as they arrive (blocking read)."""
    last = after
    while True:
        rows: list[Any] = r.xread({keys.EVENTS: last}, block=block_ms) or []  # type: ignore[assignment]
        for _stream, entries in rows:
            for entry_id, fields in entries:
                last = entry_id
                yield _event(entry_id, fields)


def since(r: redis.Redis, after: str, count: int = 100) -> list[Event]:
    """Up to ``count`` events newer than stream id ``after``, oldest first (non-blocking)."""
    rows: list[Any] = r.xrange(keys.EVENTS, min=f"({after}", count=count) or []  # type: ignore[assignment]
    return [_event(i, f) for i, f in rows]
