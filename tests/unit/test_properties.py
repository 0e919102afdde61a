"""Property tests (hypothesis): the parser never raises a foreign error, round-trips hold, the done-index is exact."""

from __future__ import annotations

import tempfile
from pathlib import Path

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher.cli.main import cli
from dispatcher.core import defaults as d
from dispatcher.core.errors import TaskFileError
from dispatcher.core.gate import DoneIndex
from dispatcher.core.taskfile import DepRef, Priority, is_safe_segment, parse_task, render_task
from dispatcher.inbox.reader import load_task

SAFE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
segments = st.text(SAFE_CHARS, min_size=1, max_size=12).filter(is_safe_segment)
# Text as a person would type it: no NUL (binary), no surrogates (not UTF-8), no lone CR
# (CR alone is read as a line break, like CRLF, so it cannot survive a round trip).
texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"), max_size=40)
YAML_ALPHABET = "abc:-[]{}&*!|>'\"#%@`,?\n\t 0123456789.~"


def parse(data: bytes):
    return parse_task(data, task_id="T1", project="web", path=Path("T1.md"))


def _only_our_error(data: bytes) -> None:
    try:
        parse(data)
    except TaskFileError:
        pass


@given(st.binary(max_size=2048))
def test_parse_task_raises_only_task_file_errors_on_arbitrary_bytes(data):
    _only_our_error(data)


@given(st.text(YAML_ALPHABET, max_size=300), st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_parse_task_raises_only_task_file_errors_on_yaml_like_frontmatter(front, newline, bom):
    data = ("---" + newline + front.replace("\n", newline) + newline + "---" + newline + "body").encode()
    _only_our_error((b"\xef\xbb\xbf" if bom else b"") + data)


@given(st.lists(st.sampled_from(["title", "priority", "tags", "depends_on", "needs_claude_code", "x"]), max_size=5),
       st.lists(st.sampled_from(["1:30", "~", "[a, 1]", "{a: b}", "yes", "2026-13-45", "!!int 0x", "'..'", "a:b",
                                 "[../x:y]", "- a", "&a b", "*a", "critical", "\"\\t\"", "0o17", ".inf"]), max_size=5))
def test_parse_task_raises_only_task_file_errors_on_odd_field_values(keys, values):
    front = "\n".join(f"{k}: {v}" for k, v in zip(keys, values))
    _only_our_error(f"---\n{front}\n---\nbody\n".encode())


def _dep_strings():
    bare = segments
    qualified = st.tuples(segments, segments).map(lambda pt: f"{pt[0]}:{pt[1]}")
    return st.lists(st.one_of(bare, qualified), max_size=4)


def _expected_deps(deps: list[str], project: str) -> tuple[DepRef, ...]:
    refs = [DepRef(*x.split(":")) if ":" in x else DepRef(project, x) for x in deps]
    return tuple(dict.fromkeys(refs))


fields = st.fixed_dictionaries({
    "title": texts,
    "priority": st.sampled_from(d.PRIORITIES),
    "tags": st.lists(texts, max_size=3).map(tuple),
    "depends_on": _dep_strings().map(tuple),
    "body": texts,
})


def _assert_same(task, f) -> None:
    assert task.title == f["title"].strip()
    assert task.priority is Priority(f["priority"])
    assert task.tags == f["tags"]
    assert task.depends_on == _expected_deps(list(f["depends_on"]), task.project)
    assert task.body == f["body"].strip()


@given(fields)
def test_render_then_parse_round_trips(f):
    _assert_same(parse(render_task(**f).encode("utf-8")), f)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields)
def test_submit_then_load_round_trips(f):
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "dispatcher.yaml"
        config.write_text(f"projects_dir: {Path(tmp) / 'projects'}\n")
        args = ["--config", str(config), "submit", "web", "--id", "T1", "--priority", f["priority"],
                "--title", f["title"]]
        for dep in f["depends_on"]:
            args += ["--depends-on", dep]
        for tag in f["tags"]:
            args += ["--tag", tag]

        result = CliRunner().invoke(cli, args, input=f["body"], catch_exceptions=False)

        assert result.exit_code == 0, result.output
        path = Path(tmp) / "projects" / "web" / d.QUEUE_DIR / d.INBOX / "T1.md"
        _assert_same(load_task(path, "web"), f)


def _brute_force_done(task_id: str, names: list[str]) -> bool:
    """design §2: done/<id>.md, or done/<id><sep>….md with <sep> in -_.@ — never T10.md for T1."""
    for name in names:
        if not name.endswith(".md"):
            continue
        if name == task_id + ".md":
            return True
        if name.startswith(task_id) and len(name) > len(task_id) and name[len(task_id)] in d.DONE_SEPARATORS:
            return True
    return False


id_chars = st.text("T1-_.@x0", min_size=1, max_size=6).filter(is_safe_segment)


@given(st.lists(st.one_of(id_chars.map(lambda s: s + ".md"), st.text("T1-_.@x0md", max_size=8)), max_size=8),
       id_chars)
def test_done_index_agrees_with_brute_force(names, task_id):
    index = DoneIndex({"p": names})

    assert index.is_done(DepRef("p", task_id)) == _brute_force_done(task_id, names)
    assert not index.is_done(DepRef("other", task_id))
