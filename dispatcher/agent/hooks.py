"""Claude Code hooks: the per-launch settings file, and the reader of hook reports in Redis.

The agent runs ``python -m dispatcher.hook <Event>`` (see hook.py), which
XADDs each payload to ``keys.session_hooks(session)``. The launcher waits on
that stream to confirm delivery; the session monitor reads it for Stop/limits.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, cast

import redis as redis_lib

from dispatcher.core import keys

logger = logging.getLogger(__name__)

EVENTS: tuple[str, ...] = ("SessionStart", "UserPromptSubmit", "Stop", "StopFailure", "Notification", "SessionEnd")
#: Seconds Claude Code lets one hook run before killing it.
HOOK_TIMEOUT_S = 10


def settings_path(state_dir: Path, session: str) -> Path:
    """Where the settings file for ``session``'s agent lives."""
    return Path(state_dir) / "agents" / session / "settings.json"


def hook_command(event: str, python: str = sys.executable) -> str:
    """The shell command Claude Code runs for ``event`` (it runs hook commands through a shell)."""
    return " ".join(shlex.quote(p) for p in (python, "-m", "dispatcher.hook", event))


def settings_document(python: str = sys.executable) -> dict[str, Any]:
    """The ``--settings`` JSON: every event of interest reports through ``dispatcher.hook``."""
    return {
        "hooks": {
            event: [{"hooks": [{"type": "command", "command": hook_command(event, python), "timeout": HOOK_TIMEOUT_S}]}]
            for event in EVENTS
        }
    }


def write_settings(state_dir: Path, session: str, *, python: str = sys.executable) -> Path:
    """Write (atomically) the per-launch settings file; the user's own settings are never touched."""
    path = settings_path(state_dir, session)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(settings_document(python), indent=2), encoding="utf-8")
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class HookReport:
    """One hook event as stored in Redis."""

    id: str
    event: str
    session: str
    task: str
    time: float
    payload: Mapping[str, Any]

    @property
    def prompt(self) -> str:
        """The submitted prompt (UserPromptSubmit), else ''."""
        value = self.payload.get("prompt")
        return value if isinstance(value, str) else ""


_Entries = list[tuple[Any, Mapping[Any, Any]]]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _report(entry_id: Any, fields: Mapping[Any, Any]) -> HookReport:
    f = {_text(k): _text(v) for k, v in fields.items()}
    try:
        payload = json.loads(f.get("payload", "{}"))
    except ValueError:
        payload = {"raw": f.get("payload", "")}
    try:
        at = float(f.get("time", "0"))
    except ValueError:
        at = 0.0
    return HookReport(id=_text(entry_id), event=f.get("event", ""), session=f.get("session", ""),
                      task=f.get("task", ""), time=at, payload=payload if isinstance(payload, dict) else {})


class HookLog:
    """Reads the hook reports of pool sessions from Redis."""

    def __init__(self, redis: redis_lib.Redis) -> None:
        self.redis = redis

    def last_id(self, session: str) -> str:
        """Stream id of the newest report ('0-0' when none): pass it as ``after_id`` to see only newer ones."""
        newest = cast(_Entries, self.redis.xrevrange(keys.session_hooks(session), count=1) or [])
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
