"""One classification of API limits for screen texts and hook payloads (limits.classify / from_hook)."""

from __future__ import annotations

import pytest

from dispatcher.core import limits, screen
from dispatcher.core.limits import OVERLOADED, RATE_LIMIT, USAGE_LIMIT

RULE = "─" * 60
BOX = f"{RULE}\n❯\u00a0\n{RULE}\n  ⏵⏵ bypass permissions on (shift+tab to cycle)\n"

# (text as the CLI prints it, kind, the API's message)
TEXTS = [
    ("API Error: Request rejected (429) · Fake rate limit reached for e2e", RATE_LIMIT,
     "Fake rate limit reached for e2e"),  # 2.1.197, x-should-retry: false
    ("API Error: Server is temporarily limiting requests (not your usage limit) · Rate limited", RATE_LIMIT,
     "Server is temporarily limiting requests (not your usage limit) · Rate limited"),
    ('API Error: 429 {"type":"error","error":{"type":"rate_limit_error","message":"Number of requests exceeded"}}',
     RATE_LIMIT, "Number of requests exceeded"),  # older CLIs: the raw error body
    ("API Error: 529 Overloaded. This is a server-side issue, usually temporary — try again in a moment.",
     OVERLOADED, "Overloaded. This is a server-side issue, usually temporary — try again in a moment"),  # 2.1.332
    ("API Error: Repeated 529 Overloaded errors. The API is at capacity", OVERLOADED,
     "Overloaded errors. The API is at capacity"),
    ('API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}', OVERLOADED,
     "Overloaded"),
]


@pytest.mark.parametrize("text,kind,message", TEXTS)
def test_api_errors_are_classified_with_their_message(text: str, kind: str, message: str) -> None:
    found = limits.classify(text)
    assert found is not None and (found.kind, found.message) == (kind, message)
    assert found.resets is None


@pytest.mark.parametrize("text,kind,message", TEXTS)
def test_screen_and_hook_classify_the_same_text_the_same_way(text: str, kind: str, message: str) -> None:
    on_screen = screen.detect_limit(f"❯ do the task\n● {text}\n\n" + BOX)
    by_hook = limits.from_hook({"error": "rate_limit" if kind == RATE_LIMIT else "server_error",
                                "last_assistant_message": text})
    assert on_screen == by_hook and on_screen is not None and on_screen.kind == kind


def test_newest_cli_529_screen_without_a_done_line_is_a_finished_turn_and_overloaded() -> None:
    """2.1.332 ends the turn with the error and a hint, without ``✻ … for Ns``: still a finished, limited turn."""
    text = ("❯ [T1.md] do it\n● API Error: 529 Overloaded. This is a server-side issue, usually temporary.\n\n"
            f"{RULE}\n❯\u00a0Resend your message to try again\n{RULE}\n  ⏵⏵ bypass permissions on\n")
    found = screen.detect_limit(text)
    assert found is not None and found.kind == OVERLOADED
    assert screen.input_text(text) == "" and screen.turn_finished(text)


def test_a_long_hook_text_is_read_line_by_line() -> None:
    text = "API Error: Request rejected (429) · Too many requests\n" + "x" * 100_000 + "\nOverloaded " * 100
    found = limits.from_hook({"error": "rate_limit", "last_assistant_message": text})
    assert found is not None and found.kind == RATE_LIMIT and found.message == "Too many requests"


@pytest.mark.parametrize("payload,kind,message", [
    ({"error": "rate_limit", "last_assistant_message": "API Error: Request rejected (429) · slow down"},
     RATE_LIMIT, "slow down"),  # what 2.1.197 and 2.1.332 send
    ({"error_type": "rate_limit"}, RATE_LIMIT, ""),  # older documented form, no text
    ({"error": "rate_limit", "last_assistant_message": "You've hit your limit · resets 2pm (America/Toronto)"},
     USAGE_LIMIT, ""),
    ({"error": "server_error", "last_assistant_message": "API Error: 529 Overloaded."}, OVERLOADED, "Overloaded"),
    ({"error": "overloaded"}, OVERLOADED, ""),
])
def test_hook_payloads(payload: dict[str, str], kind: str, message: str) -> None:
    found = limits.from_hook(payload)
    assert found is not None and found.kind == kind and found.message == message


@pytest.mark.parametrize("payload", [
    {"error": "server_error", "last_assistant_message": "API Error: 500 Internal server error"},
    {"error": "authentication_failed", "last_assistant_message": "Invalid API key · Please run /login"},
    {"error": ["rate_limit"]}, {}, {"last_assistant_message": 429},
])
def test_hook_payloads_that_are_not_limits(payload: dict[str, object]) -> None:
    assert limits.from_hook(payload) is None


@pytest.mark.parametrize("text", [
    "API Error: 500 Internal server error",
    "Request rejected (429) is what the API says when…",  # not the CLI's error line
    "I will handle API Error: Request rejected (429) in the retry code.",
    "",
])
def test_texts_that_are_not_limits(text: str) -> None:
    assert limits.classify(text) is None


def test_the_task_text_on_screen_is_not_a_limit() -> None:
    """A task that quotes the error texts is the user's message, not the CLI reporting one."""
    text = ("❯ [T1.md] When you see\n  API Error: Request rejected (429) · x\n"
            "  You've hit your limit · resets 2pm (America/Toronto)\n  stop.\n● On it.\n✻ Baked for 2s\n" + BOX)
    assert screen.detect_limit(text) is None


def test_retry_after_from_the_message() -> None:
    found = limits.classify("API Error: Request rejected (429) · Rate limited, retry after 30 seconds")
    assert found is not None and found.retry_after == 30.0
    found = limits.classify("API Error: 429 please try again in 2 minutes")
    assert found is not None and found.retry_after == 120.0


def test_describe_names_the_kind_and_the_message() -> None:
    assert limits.classify(TEXTS[0][0]).describe() == "API rate limit (429: Fake rate limit reached for e2e)"  # type: ignore[union-attr]
    assert limits.classify(TEXTS[3][0]).describe().startswith("API overloaded (529: Overloaded.")  # type: ignore[union-attr]
    usage = limits.classify("You've hit your limit · resets 2pm (America/Toronto)")
    assert usage is not None and usage.describe() == "usage limit (resets 2pm (America/Toronto))"
