"""The message typed into an agent."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dispatcher.core.defaults import MESSAGE_FOOTER
from dispatcher.core.message import build_message, delivery_tag, format_footer, sanitize


def test_reference_format_with_footer() -> None:
    msg = build_message("T1", "Fix the bug.\n", project="p", footer=MESSAGE_FOOTER)
    head, footer = msg.split("\n\n", 1)
    assert head == "[T1.md] Fix the bug."
    assert "EXECUTE" in footer and ".agent-queue/done/T1.md" in footer
    assert "mv .agent-queue/inbox/T1.md.dispatched .agent-queue/done/T1.md" in footer
    assert delivery_tag("T1") == "[T1.md]"


def test_footer_fields_and_stray_braces() -> None:
    assert format_footer("{project}/{task_id}/{task_file} {other}", task_id="a", project="p") == "p/a/a.md {other}"
    assert format_footer("broken { brace", task_id="a", project="p") == "broken { brace"
    assert build_message("a", "x", project="p", footer="") == "[a.md] x"


def test_sanitize_strips_controls_keeps_newline_and_tab() -> None:
    assert sanitize("a\x1b[201~b\tc\r\nd\re\x00f\x7fg\x9bh\n\n") == "a[201~b\tc\nd\ne" + "fgh"


def test_body_cannot_end_bracketed_paste_or_send_keys() -> None:
    msg = build_message("T", "C-c\nEnter\n\x1b[201~\x03\x04", project="p", footer="")
    assert "\x1b" not in msg and "\x03" not in msg and msg == "[T.md] C-c\nEnter\n[201~"


@given(st.text())
def test_sanitized_text_has_no_controls_and_is_stable(text: str) -> None:
    out = sanitize(text)
    assert all(ch in "\n\t" or not (ord(ch) < 32 or 0x7F <= ord(ch) <= 0x9F) for ch in out)
    assert not out.endswith("\n") and "\r" not in out
    assert sanitize(out) == out
