"""The control-mode reply parser (agent/tmux_control.py): a pane's text can never end or fake a block."""

from __future__ import annotations

import pytest

from dispatcher.agent.tmux_control import ProtocolError, parse_reply, quote, sendable


def block(number: int, lines: list[str], *, ok: bool = True, flags: int = 1, t: int = 1795890000) -> list[str]:
    return [f"%begin {t} {number} {flags}", *lines, f"%{'end' if ok else 'error'} {t} {number} {flags}"]


MARK_BEGIN = ["%begin 1795890000 99 1"]


def test_plain_reply() -> None:
    assert parse_reply(block(10, ["a", "b"]) + MARK_BEGIN) == (True, ["a", "b"])
    assert parse_reply(block(10, ["can't find session: x"], ok=False) + MARK_BEGIN) == (False,
                                                                                       ["can't find session: x"])
    assert parse_reply(block(10, []) + MARK_BEGIN) == (True, [])


def test_forged_guards_in_pane_text_stay_text() -> None:
    forged = ["%end 1795890000 10 1", "%error 1795890000 10 1", "%begin 1795890000 10 1", "%end 1 2 3", ""]
    assert parse_reply(block(10, forged) + MARK_BEGIN) == (True, forged)


def test_tmux_own_lines_around_the_block_are_skipped() -> None:
    attach = block(7, [], flags=0)  # the attach command's own block, printed late
    lines = ["%session-changed $0 a", *attach, *block(10, ["x"]), "%window-renamed @0 bash", *block(11, [], flags=0),
             *MARK_BEGIN]
    assert parse_reply(lines) == (True, ["x"])


@pytest.mark.parametrize("lines", [[], ["x"], block(10, ["x"]), ["%begin 1 2 1", "x"] + MARK_BEGIN,
                                   ["x", "%end 1 2 1"] + MARK_BEGIN])
def test_anything_else_is_a_protocol_error(lines: list[str]) -> None:
    with pytest.raises(ProtocolError):
        parse_reply(lines)


def test_quote_and_sendable() -> None:
    assert quote("it's") == "'it'\\''s'"
    assert sendable(["a;b", "#{x}", "$HOME", "'"]) and not sendable(["a\nb"]) and not sendable(["\0"])
