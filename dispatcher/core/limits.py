"""What an agent's API error means: one pure classifier for screen lines and hook payloads alike.

Three kinds stop a turn and are not the task's fault: a subscription ``usage_limit``
(resets at a time it names), an API ``rate_limit`` (HTTP 429) and an ``overloaded``
API (HTTP 529). Texts seen: tests/fixtures/claude_screens, tests/e2e/FINDINGS.md and
/work/shared notes (2.1.197 and 2.1.332); StopFailure hooks carry ``error``
(``rate_limit``, ``server_error``…) and the same text in ``last_assistant_message``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

USAGE_LIMIT = "usage_limit"
RATE_LIMIT = "rate_limit"
OVERLOADED = "overloaded"
KINDS = (USAGE_LIMIT, RATE_LIMIT, OVERLOADED)

#: Longest message kept from an API error (it ends up in status lines and events).
MAX_MESSAGE = 300
_MAX_LINES, _MAX_LINE = 20, 2000

_USAGE = (
    re.compile(r"You[’']ve hit your (?:session |weekly |\w+ )?limit\s*[·∙•-]\s*resets\s+(?P<reset>[^\n]+?)\s*$"),
    re.compile(r"Claude usage limit reached\.?\s*Your limit will reset at\s+(?P<reset>[^\n]+?)\.?\s*$"),
    re.compile(r"limit reached\s*[·∙•]\s*resets\s+(?P<reset>[^\n]+?)\s*$"),
)
# Only the CLI's own "API Error:" lines: the same words inside a task or an answer are not an error.
_API: tuple[tuple[str, re.Pattern[str]], ...] = (
    (RATE_LIMIT, re.compile(r"^API Error: Request rejected \(429\)\s*[·∙•:.-]?\s*(?P<msg>.*)$")),
    (RATE_LIMIT, re.compile(r"^API Error: (?P<msg>Server is temporarily limiting requests.*)$")),
    (OVERLOADED, re.compile(r"^API Error: (?:Repeated )?529\b\s*(?P<msg>.*)$")),
    (RATE_LIMIT, re.compile(r"^API Error: 429\b\s*(?P<msg>.*)$")),
    (OVERLOADED, re.compile(r"^API Error: (?P<msg>.*\b(?:overloaded_error|Overloaded)\b.*)$")),
    (RATE_LIMIT, re.compile(r"^API Error: (?P<msg>.*\brate_limit_error\b.*)$")),
)
_JSON_MESSAGE = re.compile(r'"message"\s*:\s*"(?P<m>(?:[^"\\]|\\.)*)"')
_RETRY = re.compile(r"(?:retry|try again)\s+(?:after|in)\s+(?P<n>\d{1,6}(?:\.\d+)?)\s*"
                    r"(?P<unit>seconds?|secs?|s|minutes?|mins?|m|hours?|h)\b", re.I)
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0}
#: Hook ``error`` values that mean a limit even when the message says nothing more.
_HOOK_KINDS = {"rate_limit": RATE_LIMIT, "rate_limit_error": RATE_LIMIT,
               "overloaded": OVERLOADED, "overloaded_error": OVERLOADED}


@dataclass(frozen=True)
class Limit:
    """A limit that ended an agent's turn, with what the CLI or the API said about it."""

    kind: str  # usage_limit | rate_limit | overloaded
    line: str  # the text it was read from
    message: str = ""  # the API's own message ("Fake rate limit reached for e2e")
    resets: str | None = None  # usage limit: reset text ("2pm (America/Toronto)")
    retry_after: float | None = None  # seconds, when the message says how long to wait

    def describe(self) -> str:
        """Short human text: ``API rate limit (429: <message>)`` / ``usage limit (resets 2pm)``."""
        if self.kind == USAGE_LIMIT:
            return f"usage limit (resets {self.resets})" if self.resets else f"usage limit ({self.line})"
        code, name = ("429", "API rate limit") if self.kind == RATE_LIMIT else ("529", "API overloaded")
        return f"{name} ({code}: {self.message})" if self.message else f"{name} ({code})"


def _message(raw: str) -> str:
    m = _JSON_MESSAGE.search(raw)  # older CLIs print the raw error body
    text = m.group("m") if m else raw
    return text.strip(" ·∙•:.-\t")[:MAX_MESSAGE]


def _retry_after(text: str) -> float | None:
    m = _RETRY.search(text)
    if not m:
        return None
    return float(m.group("n")) * _UNIT_S[m.group("unit")[0].lower()]


def _classify_line(line: str) -> Limit | None:
    for pattern in _USAGE:
        m = pattern.search(line)
        if m:
            return Limit(USAGE_LIMIT, line[:MAX_MESSAGE], resets=m.group("reset")[:100])
    for kind, pattern in _API:
        m = pattern.match(line)
        if m:
            msg = _message(m.group("msg"))
            return Limit(kind, line[:MAX_MESSAGE], message=msg, retry_after=_retry_after(msg))
    return None


def classify(text: str) -> Limit | None:
    """The limit a message means (a screen line without its ``●``/``⎿`` marker, or a hook's text), or None."""
    # Line by line, each bounded: a hook's text may be long, and only the CLI's own lines count.
    for raw in text.strip().splitlines()[:_MAX_LINES]:
        found = _classify_line(raw.strip()[:_MAX_LINE])
        if found is not None:
            return found
    return None


def from_hook(payload: Mapping[str, Any]) -> Limit | None:
    """The limit a StopFailure hook report means: its text classified like a screen line, else its ``error``."""
    texts = [v for k in ("last_assistant_message", "error_details", "message")
             if isinstance(v := payload.get(k), str) and v.strip()]
    for text in texts:
        found = classify(text)
        if found is not None:
            return found
    for key in ("error", "error_type"):
        kind = _HOOK_KINDS.get(str(payload.get(key) or "").strip().lower())
        if kind is not None:
            said = texts[0].strip() if texts else ""
            return Limit(kind, (said or str(payload.get(key)))[:MAX_MESSAGE], message=_message(said))
    return None
