"""One Claude Code hook report (Stop, StopFailure, Notification, UserPromptSubmit…) as a plain value.

Read from Redis by ``store.hook_log.HookLog``; judged by ``core.lifecycle`` without any I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def stream_order(entry_id: str) -> tuple[int, int]:
    """Sort key of a Redis stream id ``<ms>-<seq>`` (a malformed id sorts first, as ``0-0``)."""
    ms, _, seq = str(entry_id).partition("-")
    try:
        return int(ms or 0), int(seq or 0)
    except ValueError:
        return 0, 0


@dataclass(frozen=True)
class HookReport:
    """One hook event as stored in Redis."""

    id: str  # the stream entry id: the order reports happened in (their ``time`` is the hook's clock)
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

    @property
    def order(self) -> tuple[int, int]:
        """Sort key of :attr:`id` in its stream."""
        return stream_order(self.id)
