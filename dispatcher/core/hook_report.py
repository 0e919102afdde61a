"""One Claude Code hook report (Stop, StopFailure, Notification, UserPromptSubmit…) as a plain value.

Read from Redis by ``store.hook_log.HookLog``; judged by ``core.lifecycle`` without any I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dispatcher.core.defaults import HOOK_MAX_PAYLOAD_BYTES as MAX_PAYLOAD_BYTES

#: How much of an unparseable payload is kept (as ``{"raw": …}``).
RAW_KEPT_CHARS = 4096


def parse_payload(raw: str) -> dict[str, Any]:
    """A hook's stdin (Claude Code's JSON, or anything: it is outside input) as the payload dict to keep.

    Both hook clients' entries go through here when read back: the Python hook stores what this returns,
    the bash one (dispatcher/hook.sh) the raw stdin, so the same rules apply to both. Anything but a JSON
    object becomes ``{"raw": <its first 4096 characters>}``; a long prompt is cut to half the payload
    cap (its start holds the delivery tag) and flagged ``prompt_truncated``; a payload still over the
    cap becomes ``{"raw": <first 4096 characters of its JSON>, "truncated": True}``.
    """
    raw = raw[: 4 * MAX_PAYLOAD_BYTES]  # what the Python hook reads of stdin; the bash one sends no more
    try:
        data = json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError):  # RecursionError: a hostile '[[[[…' nests deeper than json can
        return {"raw": raw[:RAW_KEPT_CHARS]}
    if not isinstance(data, dict):
        return {"raw": raw[:RAW_KEPT_CHARS]}
    prompt = data.get("prompt")
    if isinstance(prompt, str) and len(prompt) > MAX_PAYLOAD_BYTES // 2:
        data["prompt"] = prompt[: MAX_PAYLOAD_BYTES // 2]
        data["prompt_truncated"] = True
    # Re-encoding grows a payload by at most 1.5× (the ", " and ": " separators), so only a long one can
    # exceed the cap: short ones (every payload in practice) are not encoded again on each read.
    if len(raw) > MAX_PAYLOAD_BYTES // 2:
        body = json.dumps(data, ensure_ascii=False)
        if len(body) > MAX_PAYLOAD_BYTES:
            return {"raw": body[:RAW_KEPT_CHARS], "truncated": True}
    return data


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
