"""Pure readers of a captured Claude Code screen (``tmux capture-pane -p`` text).

Facts come from the real CLI (tests/fixtures/claude_screens, v2.1.197): the
input line is ``❯``+U+00A0 between two ``────`` rules and stays on screen while
the agent is busy; history prompts and dialog cursors use ``❯`` + a normal space.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dispatcher.core.limits import Limit, classify

PROMPT = "❯\u00a0"
RULE = "───"
SPINNER_SYMBOLS = "·✢*✶✻✽✳"

#: The dialog asking whether to trust the project folder (the project's problem, not the session's).
TRUST_DIALOG = "trust folder"
#: Dialog name → texts that identify it (any one is enough).
DIALOGS: dict[str, tuple[str, ...]] = {
    TRUST_DIALOG: ("Yes, I trust this folder", "Do you trust the files in this folder", "Accessing workspace:"),
    "custom API key": ("Detected a custom API key",),
    "bypass permissions": ("running in Bypass Permissions mode",),
}

# Hints the CLI draws inside an empty input box (the second: 2.1.332, after a final API error).
_INPUT_HINTS = ("Press up to edit queued messages", "Resend your message to try again")

_SPIN = f"[{re.escape(SPINNER_SYMBOLS)}]"
_SPINNER = re.compile(rf"^{_SPIN} (?:\S+…|API error · [Rr]etrying)")  # "retrying" in 2.1.332
_DONE = re.compile(rf"^{_SPIN} \S+ for (?:\d+h ?)?(?:\d+m ?)?\d+s\b")
_PLACEHOLDER = re.compile(r"\[Pasted text #\d+(?: \+\d+ lines)?\]")
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# 2.1.197: ``claude --resume <uuid>``; 2.1.332: ``claude --model <model> --resume <uuid>``.
_RESUME = re.compile(rf"(?:^|\s)claude\s[^\n]*?--resume\s+({_UUID})(?![0-9a-fA-F-])", re.M)
_CLOCK = re.compile(r"(?P<h>\d{1,2})(?::(?P<m>\d{2}))?\s*(?P<ampm>am|pm)\b(?:\s*\((?P<tz>[^)]+)\))?", re.I)


#: A limit seen on screen (kept under its old name; see limits.Limit).
UsageLimit = Limit


def _lines(screen: str) -> list[str]:
    return screen.replace("\r", "").split("\n")


def _input_index(lines: list[str]) -> int | None:
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith(PROMPT):
            return i
    return None


def has_prompt(screen: str) -> bool:
    """True when the input line (``❯``+NBSP) is on screen (busy or not)."""
    return _input_index(_lines(screen)) is not None


def detect_dialog(screen: str) -> str | None:
    """Name of a startup dialog on screen ('trust folder', 'custom API key', 'bypass permissions') or None."""
    lines = _lines(screen)
    prompt_at = _input_index(lines)
    for name, needles in DIALOGS.items():
        for i, line in enumerate(lines):
            # Dialog text above a live input box is history (e.g. quoted in a task), not a dialog.
            if any(n in line for n in needles) and (prompt_at is None or prompt_at < i):
                return name
    return None


def _status_region(lines: list[str], prompt_at: int | None) -> tuple[list[str], str | None]:
    """Non-blank lines between the last history prompt or answer and the input box (where the
    spinner lives), and that prompt/answer line (None if not within reach)."""
    end = len(lines) if prompt_at is None else prompt_at
    if prompt_at is not None:
        for i in range(prompt_at - 1, max(prompt_at - 3, -1), -1):
            if lines[i].startswith(RULE):
                end = i
                break
    region: list[str] = []
    # Blank lines are skipped, not counted: 2.1.332 pins the box to the bottom of the window,
    # so the spinner or "✻ … for Ns" line may sit dozens of blank lines above it.
    for i in range(end - 1, -1, -1):
        line = lines[i]
        if line.startswith("❯ ") or line.startswith("●"):
            return region, line
        if line.strip():
            region.append(line)
            if len(region) >= 12:
                break
    return region, None


def _footer(lines: list[str], prompt_at: int | None) -> str:
    if prompt_at is None:
        return ""
    return "\n".join(lines[prompt_at + 1: prompt_at + 6])


def is_busy(screen: str) -> bool:
    """True while the agent works on a turn (spinner ``<sym> <Verb>…``, API retry, ``esc to interrupt``)."""
    lines = _lines(screen)
    prompt_at = _input_index(lines)
    if "esc to interrupt" in _footer(lines, prompt_at):
        return True
    return any(_SPINNER.match(line) for line in _status_region(lines, prompt_at)[0])


def input_text(screen: str) -> str | None:
    """Text in the input box (placeholders like ``[Pasted text #1 +9 lines]`` kept); None without a box."""
    lines = _lines(screen)
    prompt_at = _input_index(lines)
    if prompt_at is None:
        return None
    parts = [lines[prompt_at][len(PROMPT):].strip()]
    for line in lines[prompt_at + 1:]:
        if line.startswith(RULE):
            break
        parts.append(line.strip())
    text = "\n".join(parts).strip()
    return "" if text in _INPUT_HINTS else text


def has_paste_placeholder(screen: str) -> bool:
    """True when the input box still holds a ``[Pasted text #N …]`` placeholder (not submitted)."""
    text = input_text(screen)
    return bool(text and _PLACEHOLDER.search(text))


def has_exited(screen: str) -> bool:
    """True when the agent printed its exit text (``Resume this session with:``) below the input box."""
    lines = _lines(screen)
    prompt_at = _input_index(lines)
    start = 0 if prompt_at is None else prompt_at
    return any("Resume this session with" in line for line in lines[start:])


def prompt_ready(screen: str) -> bool:
    """The agent accepts input: input line present, no dialog, not busy, not exited."""
    return (has_prompt(screen) and detect_dialog(screen) is None
            and not is_busy(screen) and not has_exited(screen))


def shows_submitted(screen: str, tag: str) -> bool:
    """Screen evidence a message was submitted: input empty and (busy, or the tag in history)."""
    lines = _lines(screen)
    prompt_at = _input_index(lines)
    if prompt_at is None or input_text(screen) != "":
        return False
    history = lines[:prompt_at]
    return is_busy(screen) or any(line.startswith("❯ ") and tag in line for line in history)


def _agent_lines(lines: list[str], prompt_at: int | None) -> list[str]:
    """What the agent printed above the input box: the user's messages (``❯ `` + indented lines) left out."""
    out: list[str] = []
    in_message = False
    for line in lines[:prompt_at]:
        if line.startswith("❯ "):
            in_message = True
        elif line.startswith(("●", "✻")) or (line.strip() and not line.startswith(" ")):
            in_message = False
        if not in_message:
            out.append(line)
    return out


def turn_finished(screen: str) -> bool:
    """A turn ended: a ``✻ <Verb> for <N>s`` line (or, 2.1.332, an ``● API Error: …`` answer, after
    which it prints none), then an empty, idle prompt."""
    lines = _lines(screen)
    prompt_at = _input_index(lines)
    if prompt_at is None or not prompt_ready(screen) or input_text(screen) != "":
        return False
    region, above = _status_region(lines, prompt_at)
    return any(_DONE.match(line) for line in region) or (above or "").startswith("● API Error")


def current_turn(screen: str) -> str:
    """The screen from the last submitted message (``❯ `` history line) on: a resumed agent redraws
    its old turns, and the limits they hit, above it."""
    lines = screen.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("❯ ")]
    return "\n".join(lines[starts[-1]:]) if starts else screen


def detect_limit(screen: str) -> Limit | None:
    """The last usage-limit / 429 / 529 message the agent printed (not text quoted in a task), classified."""
    lines = _lines(screen)
    found: Limit | None = None
    for raw in _agent_lines(lines, _input_index(lines)):
        limit = classify(raw.strip().lstrip("●⎿ ").strip())
        if limit is not None:
            found = limit
    return found


def parse_reset(resets: str, now: datetime) -> datetime | None:
    """Next moment after ``now`` matching a reset text like ``2pm (America/Toronto)`` or ``12am``."""
    m = _CLOCK.search(resets)
    if not m:
        return None
    tz = now.tzinfo
    if m.group("tz"):
        try:
            tz = ZoneInfo(m.group("tz").strip())
        except (ZoneInfoNotFoundError, ValueError):
            tz = now.tzinfo
    hour = int(m.group("h")) % 12 + (12 if m.group("ampm").lower() == "pm" else 0)
    minute = int(m.group("m") or 0)
    if hour > 23 or minute > 59:
        return None
    local_now = now.astimezone(tz) if tz is not None and now.tzinfo is not None else now
    at = local_now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if at <= local_now:
        at += timedelta(days=1)
    return at


def parse_resume_id(screen: str) -> str | None:
    """Session UUID from ``Resume this session with:`` / ``claude [--model M] --resume <uuid>``."""
    marker = screen.rfind("Resume this session with")
    if marker < 0:
        return None
    ids = _RESUME.findall(screen[marker:])
    return ids[0] if ids else None
