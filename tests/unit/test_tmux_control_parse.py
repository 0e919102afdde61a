"""The control-mode reply parser (agent/tmux_control.py): a pane's text can never end or fake a block."""

from __future__ import annotations

import pytest

from dispatcher.agent.tmux_control import ProtocolError, parse_chain, parse_reply, quote, sendable


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
    assert sendable(["a;b", "#{x}", "$HOME", "'", "é", "\t\x1b"])
    assert not sendable(["a\nb"]) and not sendable(["\0"]) and not sendable(["a\rb"]) and not sendable(["\udcff"])


M1, M2 = "aq-" + "1" * 32, "aq-" + "2" * 32


def mark(number: int, text: str) -> list[str]:
    """A marker's block: begin, the marker, end."""
    return [f"%begin 1795890000 {number} 1", text, f"%end 1795890000 {number} 1"]


def test_a_chain_is_cut_by_its_markers() -> None:
    forged = ["%end 1795890000 11 1", "aq-" + "3" * 32, "%begin 1795890000 12 1", "%error 1795890000 13 1"]
    lines = [*block(10, ["a"]), *mark(11, M1), *block(12, forged), *mark(13, M2), *block(14, ["c"]), *MARK_BEGIN]
    assert parse_chain(lines, [M1, M2]) == [(True, ["a"]), (True, forged), (True, ["c"])]


def test_a_chain_stops_at_its_first_error() -> None:
    lines = [*block(10, ["a"]), *mark(11, M1), *block(12, ["no such pane"], ok=False), *MARK_BEGIN]
    assert parse_chain(lines, [M1, M2]) == [(True, ["a"]), (False, ["no such pane"])]
    assert parse_chain([*block(10, ["bad"], ok=False), *MARK_BEGIN], [M1]) == [(False, ["bad"])]


@pytest.mark.parametrize("lines", [
    [*block(10, ["a"]), *mark(11, M1), *block(12, ["b"]), *MARK_BEGIN],  # stopped without an error
    [*block(10, ["a"], ok=False), *mark(11, M1), *block(12, ["b"]), *MARK_BEGIN],  # went on after one
    [*block(10, ["a"]), "%begin 1795890000 11 1", M1, *block(12, ["b"]), *MARK_BEGIN],  # marker without %end
    [*block(10, ["a"]), *mark(11, M1), *MARK_BEGIN],  # no block after a marker
])
def test_a_chain_out_of_step_is_a_protocol_error(lines: list[str]) -> None:
    with pytest.raises(ProtocolError):
        parse_chain(lines, [M1, M2])
