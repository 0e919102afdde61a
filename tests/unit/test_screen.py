"""Screen readers over real Claude Code screens (tests/fixtures/claude_screens) and synthetic ones."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from dispatcher.core import screen

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "claude_screens"
RULE = "─" * 60


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def box(text: str = "", footer: str = "  ⏵⏵ bypass permissions on (shift+tab to cycle)") -> str:
    return f"{RULE}\n❯\u00a0{text}\n{RULE}\n{footer}\n"


# name: (ready, dialog, busy, input, finished)
EXPECTED = {
    "ready.txt": (True, None, False, "", False),
    "busy.txt": (False, None, True, "", False),
    "queued.txt": (False, None, True, "", False),
    "finished.txt": (True, None, False, "", True),
    "pasted.txt": (True, None, False, "[Pasted text #1 +29 lines]", False),
    "api_retrying.txt": (False, None, True, "", False),
    "api_error_429.txt": (True, None, False, "", True),
    "exit_resume.txt": (False, None, False, "/exit", False),
    "dialog_trust.txt": (False, "trust folder", False, None, False),
    "dialog_apikey.txt": (False, "custom API key", False, None, False),
    "dialog_bypass.txt": (False, "bypass permissions", False, None, False),
    # A final 529 (CLAUDE_CODE_MAX_RETRIES=1): 2.1.197 still prints "✻ <Verb> for 0s".
    "api_error_529_v2.1.197.txt": (True, None, False, "", True),
    # The newest CLI (tests/e2e runs on both): input box pinned to the bottom with blank lines and a
    # right-aligned "◐ medium · /effort" line above it; "✻ <Verb> for Ns · done 9:52 AM"; lower-case
    # "retrying"; no "✻ … for Ns" after an API error; after a 529 the box hints "Resend your message…".
    "ready_v2.1.332.txt": (True, None, False, "", False),
    "busy_v2.1.332.txt": (False, None, True, "", False),
    "queued_v2.1.332.txt": (False, None, True, "", False),
    "finished_v2.1.332.txt": (True, None, False, "", True),
    "pasted_v2.1.332.txt": (True, None, False, "[Pasted text #1 +29 lines]", False),
    "api_retrying_v2.1.332.txt": (False, None, True, "", False),
    "api_error_429_v2.1.332.txt": (True, None, False, "", True),
    "api_error_529_v2.1.332.txt": (True, None, False, "", True),
    "exit_resume_v2.1.332.txt": (False, None, False, None, False),
    "dialog_trust_v2.1.332.txt": (False, "trust folder", False, None, False),
    "dialog_apikey_v2.1.332.txt": (False, "custom API key", False, None, False),
    "dialog_bypass_v2.1.332.txt": (False, "bypass permissions", False, None, False),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_screens(name: str) -> None:
    text = fixture(name)
    ready, dialog, busy, inp, finished = EXPECTED[name]
    assert screen.prompt_ready(text) is ready
    assert screen.detect_dialog(text) == dialog
    assert screen.is_busy(text) is busy
    assert screen.input_text(text) == inp
    assert screen.turn_finished(text) is finished


def test_all_fixtures_are_covered() -> None:
    assert sorted(p.name for p in FIXTURES.glob("*.txt")) == sorted(EXPECTED)


def test_paste_placeholder_means_not_submitted() -> None:
    assert screen.has_paste_placeholder(fixture("pasted.txt"))
    assert not screen.has_paste_placeholder(fixture("ready.txt"))
    assert not screen.shows_submitted(fixture("pasted.txt"), "[T1.md]")


def test_submitted_evidence() -> None:
    assert screen.shows_submitted(fixture("busy.txt"), "[T1.md]")  # busy with empty input
    assert screen.shows_submitted(fixture("finished.txt"), "Say hello")  # tag in history, input empty
    assert not screen.shows_submitted(fixture("ready.txt"), "[T1.md]")
    assert not screen.shows_submitted("❯ [T1.md] typed\n" + box("[T1.md] still here"), "[T1.md]")


def test_resume_id_and_exit() -> None:
    assert screen.parse_resume_id(fixture("exit_resume.txt")) == "d2d07d8c-dcf1-4b42-bc21-d3c6826d3909"
    assert screen.has_exited(fixture("exit_resume.txt"))
    assert screen.parse_resume_id(fixture("finished.txt")) is None
    # A resume command quoted in a task (no "Resume this session with:" marker) is not an exit.
    assert screen.parse_resume_id("❯ run claude --resume d2d07d8c-dcf1-4b42-bc21-d3c6826d3909\n" + box()) is None


def test_resume_id_of_the_newest_cli_exit_line() -> None:
    """2.1.332 prints ``claude --model … --resume <uuid>``; 2.1.197 printed ``claude --resume <uuid>``."""
    uid = "0b7a9a64-5e0c-4c1e-9a57-2f4d3f0f6a11"
    for line in (f"claude --model claude-sonnet-5-5 --resume {uid}", f"claude --model opus --resume {uid}",
                 f"claude --resume {uid}"):
        assert screen.parse_resume_id(f"● Bye\n{box('/exit')}\nResume this session with:\n{line}\n") == uid
    # Not a resume line: another word than claude, or an id that is not a whole UUID.
    assert screen.parse_resume_id(f"Resume this session with:\nxclaude --resume {uid}\n") is None
    assert screen.parse_resume_id(f"Resume this session with:\nclaude --resume {uid}0\n") is None


def test_busy_spinner_far_above_a_bottom_pinned_box() -> None:
    # 2.1.332 keeps the box at the bottom: the spinner can be many blank lines above it, and after a
    # long paste 2.1.197 shows "paste again to expand" instead of "esc to interrupt".
    filler = "\n" * 30 + " " * 150 + "◐ medium · /effort\n"
    assert screen.is_busy("❯ hi\n✽ Incubating…\n  ⎿  Tip: plan first\n" + filler
                          + box(footer="  paste again to expand"))
    assert screen.is_busy("❯ hi\n✻ API error · retrying in 2s · attempt 1/10\n" + filler
                          + box(footer="  paste again to expand"))
    assert screen.turn_finished("❯ hi\n● Answer\n✻ Churned for 1s · done 9:44 AM\n" + filler + box())


def test_resume_id_newest_cli() -> None:
    text = fixture("exit_resume_v2.1.332.txt")
    assert screen.has_exited(text)
    assert screen.parse_resume_id(text) == "22f93f83-0fa8-4a79-8e90-ce925d484497"


def test_limits_real_429() -> None:
    lim = screen.detect_limit(fixture("api_error_429.txt"))
    assert lim is not None and lim.kind == "rate_limit" and lim.resets is None
    assert screen.detect_limit(fixture("finished.txt")) is None


@pytest.mark.parametrize("line,resets", [
    ("You've hit your limit · resets 2pm (America/Toronto)", "2pm (America/Toronto)"),
    ("  ⎿  You've hit your session limit · resets 8pm (America/New_York)", "8pm (America/New_York)"),
    ("Claude usage limit reached. Your limit will reset at 12am.", "12am"),
])
def test_usage_limit_texts(line: str, resets: str) -> None:
    lim = screen.detect_limit(f"● Working\n{line}\n" + box())
    assert lim is not None and lim.kind == "usage_limit" and lim.resets == resets


def test_parse_reset() -> None:
    now = datetime(2026, 1, 10, 15, 30, tzinfo=ZoneInfo("America/Toronto"))
    assert screen.parse_reset("2pm (America/Toronto)", now) == datetime(2026, 1, 11, 14, 0,
                                                                        tzinfo=ZoneInfo("America/Toronto"))
    at = screen.parse_reset("8pm (America/New_York)", now)
    assert at is not None and at.hour == 20 and at.day == 10
    assert screen.parse_reset("12am", now) == datetime(2026, 1, 11, 0, 0, tzinfo=ZoneInfo("America/Toronto"))
    assert screen.parse_reset("soon", now) is None


def test_dialog_text_in_history_is_not_a_dialog() -> None:
    text = "❯ please write 'Yes, I trust this folder' in the docs\n● Done.\n✻ Baked for 2s\n" + box()
    assert screen.detect_dialog(text) is None and screen.prompt_ready(text)


def test_spinner_variants_and_markdown_bullets() -> None:
    assert screen.is_busy("❯ hi\n✶ Sautéing…\n" + box())
    assert screen.is_busy("❯ hi\n* Jitterbugging… (3s · ↑ 1k tokens)\n" + box())
    assert not screen.is_busy("❯ hi\n● Answer:\n  * a bullet…\n✻ Worked for 1m 5s\n" + box())
    assert screen.turn_finished("❯ hi\n● Answer\n✻ Worked for 1m 5s\n" + box())
    assert not screen.prompt_ready("Fake Claude Code starting")
    assert screen.input_text("no box here") is None
