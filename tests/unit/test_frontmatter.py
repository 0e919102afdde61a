"""The fast frontmatter readers give the reference loader's answer, or hand the block to it."""

from __future__ import annotations

import re

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dispatcher.core.errors import TaskIncomplete
from dispatcher.core.frontmatter import _NO_FAST, _fast_load, _NoAliasLoader, _simple_load, load_frontmatter
from dispatcher.core.taskfile import render_task, split_frontmatter

needs_libyaml = pytest.mark.skipif(not yaml.__with_libyaml__, reason="no libyaml: the reference loader reads all")


def reference(block: str) -> object:
    return yaml.load(block, Loader=_NoAliasLoader)  # noqa: S506 - the safe reference loader


AGREE = [
    "title: Task 9\npriority: default\ntags: [bench, scan]\ndepends_on: [t00008]",
    "priority: yes\ntitle: 1:30\nwhen: 2026-01-01\nnone: ~\nn: 0x1F\nf: .inf\ns: 'on'",
    "title: \"é ü — 🙂\"\ntags:\n  - a\n  - \"b c\"\n  - 'd'\n# a comment\ndepends_on: other:T1  # trailing",
    "title: plain\n  folded\n  text\nbody: \"x\\ty\\u00e9\"\n",
    "a: {b: [1, 2, {c: d}]}\n<<: {e: 1}\nk:\n- - x\n  - y",
    "",
    "just a string",
    "x: " + "[" * 19 + "]" * 19,  # 20 deep with the mapping: the limit, allowed
]


@needs_libyaml
@pytest.mark.parametrize("block", AGREE)
def test_the_libyaml_path_agrees_with_the_reference_loader(block: str) -> None:
    fast = _fast_load(block)
    assert fast is not _NO_FAST
    assert fast == reference(block)


@pytest.mark.parametrize("block", [
    "a: &x 1\nb: *x",  # anchors and aliases
    "a:\tb",  # tabs
    "a: [" + "[" * 20 + "]" * 21,  # more flow brackets than the depth limit
    "a:\n" + "".join(" " * (2 * i) + "- \n" for i in range(1, 23)) + "  " * 23 + "- x",  # block nesting too deep
    "a: 1\na: 2",  # a duplicate key: the reference loader says so
    "a: [unclosed",  # a syntax error: the reference loader words it
    "a: !!python/object:os.system x",  # an unsafe tag
    # Found by fuzzing libyaml against the reference: libyaml reads these, PyYAML refuses or reads otherwise.
    "0: [0?]", "k: !", "|#: x", "k: [a, ?b]", "title: >\n  folded\n",
])
def test_what_libyaml_cannot_vouch_for_goes_to_the_reference_loader(block: str) -> None:
    assert _fast_load(block) is _NO_FAST
    assert _simple_load(block) is _NO_FAST


def test_what_render_task_writes_is_read_by_the_simple_reader() -> None:
    text = render_task(title="Fix the login page", priority="high", tags=("web", "auth"),
                       depends_on=("api:T1", "T2"), needs_claude_code=None, body="x")
    front, _ = split_frontmatter(text)
    assert front is not None
    assert _simple_load(front) == reference(front) == {
        "title": "Fix the login page", "priority": "high", "tags": ["web", "auth"], "depends_on": ["api:T1", "T2"]}


@pytest.mark.parametrize("block", [
    "title: yes", "On: x", "tags: [a, null]", "title: 12", "title: a  b", "title: a #c", "title: a:",
    "t: [a b]", "t: [a, ]", "t: [[a]]", "t: 'it''s'", "t: 'a' b", " title: x", "title: x\n  y", "# c\ntitle: x",
    "t: a: b", "t: [a:]",
])
def test_the_simple_reader_leaves_every_other_form_to_yaml(block: str) -> None:
    assert _simple_load(block) is _NO_FAST


WORD = st.text("aZyYnNoOtTfFeEsSlLuU019:_-.'\"/ ,?[]{}#!%@é&*|>`$()+", min_size=0, max_size=12)
LINE = st.one_of(
    st.tuples(WORD, WORD).map(lambda kv: f"{kv[0]}: {kv[1]}"),
    st.tuples(WORD, st.lists(WORD, max_size=4)).map(lambda kv: f"{kv[0]}: [{', '.join(kv[1])}]"),
    st.tuples(WORD, st.lists(WORD, max_size=3)).map(lambda kv: f"{kv[0]}: [{','.join(kv[1])}]  "),
    WORD.map(lambda k: f"{k}:"),
    WORD,
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(LINE, max_size=5))
def test_the_simple_reader_equals_the_reference_whenever_it_answers(lines: list[str]) -> None:
    block = "\n".join(lines)
    simple = _simple_load(block)
    if simple is _NO_FAST:
        return
    assert simple == reference(block)


@settings(max_examples=300, deadline=None)
@given(st.lists(LINE, max_size=5))
def test_load_frontmatter_answers_as_the_reference_whatever_path_it_takes(lines: list[str]) -> None:
    block = "\n".join(lines)
    try:
        want: object = reference(block)
    except Exception as exc:  # noqa: BLE001
        want = type(exc)
    try:
        got: object = load_frontmatter(block)
    except Exception as exc:  # noqa: BLE001
        got = type(exc)
    if want is None:
        want = {}
    if not isinstance(want, (dict, type)):
        assert got is not None and isinstance(got, type)  # not a mapping: refused
        return
    if isinstance(want, type):
        assert isinstance(got, type)  # refused by both (load_frontmatter words it as a TaskFileError)
        return
    assert got == want


def _split_by_lines(text: str) -> tuple[str | None, str] | str:
    """The reference split: every line tested for the fence (split_frontmatter only looks at lines starting ---)."""
    fence = re.compile(r"^---[ \t]*$")
    lines = text.split("\n")
    if not fence.match(lines[0]):
        return None, text.strip()
    for i in range(1, len(lines)):
        if fence.match(lines[i]):
            return "\n".join(lines[1:i]), "\n".join(lines[i + 1:]).strip()
    return "incomplete"


@given(st.lists(st.sampled_from(["-", "\n", " ", "\t", "a", "---", "---\n", "\n---", "--- ", "x: y", "\n\n"]),
                max_size=14).map("".join))
@example("---\n---a\n---\nbody")  # a line starting with --- that is not a fence comes first
@example("---\ntitle: x\n---  \t")
@settings(max_examples=400)
def test_split_frontmatter_equals_the_line_by_line_split(text: str) -> None:
    try:
        got: tuple[str | None, str] | str = split_frontmatter(text)
    except TaskIncomplete:
        got = "incomplete"
    assert got == _split_by_lines(text)
