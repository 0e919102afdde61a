"""Reading the hook reports of pool sessions back from Redis (the stream dispatcher/hook.sh or hook.py writes).

The launcher waits on it to confirm a prompt was delivered; the session monitor reads it for Stop and limits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import redis as redis_lib

from dispatcher.core import keys
from dispatcher.core.hook_payload import parse_payload
from dispatcher.core.hook_report import HookReport

_Entries = list[tuple[Any, Mapping[Any, Any]]]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _report(entry_id: Any, fields: Mapping[Any, Any]) -> HookReport:
    f = {_text(k): _text(v) for k, v in fields.items()}
    # Hostile: the bash hook client stores the agent's stdin as it came (dispatcher/hook.sh).
    payload = parse_payload(f.get("payload", ""))
    try:
        at = float(f.get("time", "0"))
    except ValueError:
        at = 0.0
    return HookReport(id=_text(entry_id), event=f.get("event", ""), session=f.get("session", ""),
                      task=f.get("task", ""), time=at, payload=payload)


class HookLog:
    """Reads the hook reports of pool sessions from Redis."""

    def __init__(self, redis: redis_lib.Redis) -> None:
        self.redis = redis

    def last_id(self, session: str) -> str:
        """Stream id of the newest report ('0-0' when none): pass it as ``after_id`` to see only newer ones."""
        return self.last_id_of(self.redis.xrevrange(keys.session_hooks(session), count=1))

    @staticmethod
    def queue_last_id(pipe: redis_lib.client.Pipeline, session: str) -> None:
        """:meth:`last_id` queued in a pipeline; :meth:`last_id_of` reads its reply."""
        pipe.xrevrange(keys.session_hooks(session), count=1)

    @staticmethod
    def last_id_of(reply: object) -> str:
        newest = cast(_Entries, reply or [])
        return _text(newest[0][0]) if newest else "0-0"

    def read(self, session: str, after_id: str = "0-0", count: int = 100) -> list[HookReport]:
        """Reports newer than ``after_id``, oldest first."""
        rows = cast(_Entries, self.redis.xrange(keys.session_hooks(session), min=f"({after_id}", count=count) or [])
        return [_report(i, f) for i, f in rows]

    def forget(self, session: str) -> None:
        """Drop every report of ``session`` (a probe's, say ``dispatcher doctor``'s)."""
        self.redis.delete(keys.session_hooks(session))

    def latest(self, session: str, event: str | None = None, scan: int = 50) -> HookReport | None:
        """The newest report (of ``event`` if given) among the last ``scan`` reports."""
        rows = cast(_Entries, self.redis.xrevrange(keys.session_hooks(session), count=scan) or [])
        for entry_id, fields in rows:
            report = _report(entry_id, fields)
            if event is None or report.event == event:
                return report
        return None

    def wait_for(self, session: str, event: str, predicate: Callable[[HookReport], bool] | None = None, *,
                 deadline: float, after_id: str = "0-0", clock: Callable[[], float] = time.monotonic,
                 block_ms: int | None = None) -> tuple[HookReport | None, str]:
        """Block until a matching report arrives or ``deadline`` (a ``clock`` time) passes.

        Returns ``(report or None, last id seen)`` so a caller can resume waiting later.
        """
        stream = keys.session_hooks(session)
        last = after_id
        while True:
            left_ms = int((deadline - clock()) * 1000)
            if left_ms <= 0:
                return None, last
            block = max(1, min(left_ms, block_ms if block_ms is not None else left_ms))
            rows = cast(list[tuple[Any, _Entries]], self.redis.xread({stream: last}, count=100, block=block) or [])
            for _stream, entries in rows:
                for entry_id, fields in entries:
                    last = _text(entry_id)
                    report = _report(entry_id, fields)
                    if report.event == event and (predicate is None or predicate(report)):
                        return report, last
            if block_ms is not None:
                return None, last
