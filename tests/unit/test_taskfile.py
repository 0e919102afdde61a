"""Task file parser and safe reader; hostile inputs end to end through a real scan."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dispatcher.core import defaults as d
from dispatcher.core.errors import TaskFileError, TaskIncomplete, UnsafeIdError
from dispatcher.core.taskfile import DepRef, Priority, parse_task, render_task
from dispatcher.inbox.reader import load_task, read_task_bytes


def parse(text: str | bytes, task_id: str = "T1", project: str = "web"):
    data = text.encode("utf-8") if isinstance(text, str) else text
    return parse_task(data, task_id=task_id, project=project, path=Path(f"{task_id}.md"))


def reason_of(text: str | bytes) -> TaskFileError:
    with pytest.raises(TaskFileError) as info:
        parse(text)
    return info.value


# --- parsing ------------------------------------------------------------------------------------------


def test_full_frontmatter_is_parsed_into_an_immutable_task():
    task = parse("---\ntitle: Fix login\npriority: HIGH\ntags: [auth, bug]\nneeds_claude_code: true\n"
                 "depends_on: [api:A1, T0]\n---\n\nDo it.\n")

    assert (task.id, task.project, task.title) == ("T1", "web", "Fix login")
    assert task.priority is Priority.HIGH
    assert task.tags == ("auth", "bug")
    assert task.needs_claude_code is True
    assert task.depends_on == (DepRef("api", "A1"), DepRef("web", "T0"))
    assert task.body == "Do it."
    with pytest.raises(AttributeError):
        task.title = "changed"  # type: ignore[misc]


def test_no_frontmatter_means_defaults_and_whole_text_is_body():
    task = parse("Just do the thing.\n")

    assert task.priority is Priority.DEFAULT and task.depends_on == () and task.tags == ()
    assert task.body == "Just do the thing."


def test_empty_frontmatter_is_fine():
    assert parse("---\n---\nbody\n").body == "body"


@pytest.mark.parametrize("text,expected", [("critical", Priority.CRITICAL), ("Low", Priority.LOW),
                                           (" high ", Priority.HIGH), ("~", Priority.DEFAULT)])
def test_priority_is_case_insensitive_and_defaults(text, expected):
    assert parse(f"---\npriority: {text}\n---\n").priority is expected


def test_single_tag_string_is_a_list():
    assert parse("---\ntags: urgent\n---\n").tags == ("urgent",)


def test_duplicate_dependencies_collapse_in_order():
    task = parse("---\ndepends_on: [B, web:A, web:B, A]\n---\n")

    assert task.depends_on == (DepRef("web", "B"), DepRef("web", "A"))


@pytest.mark.parametrize("line,needle", [("priority: 0", "put it in quotes"), ("priority: no", "put it in quotes"),
                                         ("title: 0", "put it in quotes"), ("tags: false", "'tags' must be a list")])
def test_falsy_non_text_values_are_errors_not_silent_defaults(line, needle):
    assert needle in reason_of(f"---\n{line}\n---\n").reason


@pytest.mark.parametrize("line", ["priority:", "priority: ''", "title: ~", "tags: []", "depends_on: []"])
def test_empty_values_mean_the_default(line):
    task = parse(f"---\n{line}\n---\n")

    assert (task.priority, task.title, task.tags, task.depends_on) == (Priority.DEFAULT, "", (), ())


@pytest.mark.parametrize("text,needle", [
    ("---\ntags: {a: 1}\n---\n", "'tags' must be a list"),
    ("---\ntags: [1, 2]\n---\n", "'tags' must be a list"),
    ("---\nneeds_claude_code: yes please\n---\n", "'needs_claude_code' must be true or false"),
    ("---\ntitle: 12\n---\n", "'title' must be text"),
    ("---\ndepends_on: {a: b}\n---\n", "'depends_on' must be a list"),
    ("---\ndepends_on: ['']\n---\n", "empty entry"),
    ("---\ndepends_on: ['a:b:c']\n---\n", "not allowed"),
    ("---\ndepends_on: ['web/x:T1']\n---\n", "not allowed"),
    ("---\ndepends_on: ['web:..']\n---\n", "not allowed"),
])
def test_wrong_field_types_are_explained(text, needle):
    assert needle in reason_of(text).reason


@pytest.mark.parametrize("bad_id", ["", ".", "..", "a b", "a/b", "ü", "x\n"])
def test_unsafe_task_ids_are_refused(bad_id):
    with pytest.raises(UnsafeIdError):
        parse("body", task_id=bad_id)


def test_fence_may_carry_trailing_spaces():
    assert parse("---  \ntitle: x\n--- \t\nbody").title == "x"


def test_body_may_contain_a_fence_line():
    assert parse("---\ntitle: x\n---\nabove\n---\nbelow\n").body == "above\n---\nbelow"


def test_render_task_round_trips():
    text = render_task(title="yes", priority="low", tags=("no", "1:30", "on"), depends_on=("api:A-1", "T0"),
                       needs_claude_code=False, body="  line 1\n\nline 2  \n")
    task = parse(text)

    assert (task.title, task.priority, task.tags) == ("yes", Priority.LOW, ("no", "1:30", "on"))
    assert task.depends_on == (DepRef("api", "A-1"), DepRef("web", "T0"))
    assert task.needs_claude_code is False
    assert task.body == "line 1\n\nline 2"


# --- hostile content (pure parser) --------------------------------------------------------------------

BILLION_LAUGHS = """---
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
---
"""


def test_yaml_alias_bomb_is_refused():
    err = reason_of(BILLION_LAUGHS)

    assert "anchors/aliases" in err.reason
    assert err.line == 2


def test_plain_anchor_without_alias_is_refused_too():
    assert "anchors/aliases" in reason_of("---\ntitle: &t x\n---\n").reason


def test_tabs_in_yaml_give_a_line_number_and_a_hint():
    err = reason_of("---\ntitle: ok\n\tpriority: high\n---\n")

    assert err.line == 3
    assert "tabs" in err.reason and "spaces" in err.reason


def test_yaml_syntax_error_has_a_line_number():
    err = reason_of("---\ntitle: ok\npriority: [high\n---\n")

    assert err.line is not None and err.line >= 3
    assert err.reason.startswith("invalid YAML frontmatter")


def test_unquoted_time_like_dependency_says_quote_it():
    err = reason_of("---\ndepends_on: [1:30]\n---\n")

    assert "read by YAML as int 90" in err.reason  # YAML 1.1 sexagesimal: 1*60 + 30
    assert "quote it" in err.reason


def test_duplicate_key_cannot_silently_drop_dependencies():
    err = reason_of("---\ndepends_on: [T0]\ntitle: x\ndepends_on: []\n---\n")

    assert err.reason == "key 'depends_on' appears twice in the frontmatter: keep one"
    assert err.line == 4


def test_unknown_priority_lists_the_allowed_ones():
    err = reason_of("---\npriority: urgent\n---\n")

    assert err.reason == "unknown priority 'urgent': use one of critical, high, default, low"


@pytest.mark.parametrize("front", ["- a\n- b", "just a string", "42"])
def test_non_mapping_frontmatter_is_refused(front):
    assert "frontmatter must be a mapping" in reason_of(f"---\n{front}\n---\n").reason


def test_unknown_keys_are_only_warnings():
    task = parse("---\ntitle: x\nowner: bob\nestimate: 3\n---\n")

    assert task.title == "x"
    assert task.warnings == ("unknown key 'owner' ignored", "unknown key 'estimate' ignored")


def test_crlf_and_bom_file_is_valid():
    task = parse(b"\xef\xbb\xbf---\r\ntitle: Windows\r\npriority: critical\r\ndepends_on:\r\n  - api:A1\r\n---\r\n"
                 b"line 1\r\nline 2\r\n")

    assert task.title == "Windows" and task.priority is Priority.CRITICAL
    assert task.depends_on == (DepRef("api", "A1"),)
    assert task.body == "line 1\nline 2"


@pytest.mark.parametrize("data,needle", [
    (b"\x00\x01\x02garbage\xff\xfe", "binary"),
    (b"\x89PNG\r\n\x1a\n\xff\xd8\xff\xe0 not utf8", "not UTF-8"),
])
def test_binary_garbage_is_refused(data, needle):
    assert needle in reason_of(data).reason


def test_unterminated_frontmatter_is_incomplete():
    with pytest.raises(TaskIncomplete) as info:
        parse("---\ntitle: half written\ndepends_on: [T0]\n")
    assert "no closing '---'" in info.value.reason


def test_empty_file_is_incomplete():
    with pytest.raises(TaskIncomplete):
        parse(b"  \n")


def test_oversized_frontmatter_is_refused():
    big = "---\n" + "".join(f"k{i}: {'x' * 60}\n" for i in range(400)) + "---\n"

    assert f"larger than {d.MAX_FRONTMATTER_BYTES}" in reason_of(big).reason


@pytest.mark.parametrize("front", [
    "a: 2026-13-45",                      # timestamp constructor: ValueError
    "a: !!int 0x",                        # int constructor: ValueError
    "a: !!float abc",
    "a: !!timestamp nope",                # AttributeError inside PyYAML
    "a: " + "1" * 5000,                   # int digit limit
    "a: " + "[" * 5000,                   # composer recursion
    "a: !!python/object/apply:os.system [echo pwned]",
], ids=["bad-date", "bad-hex", "bad-float", "bad-timestamp", "huge-int", "deep-nesting", "python-tag"])
def test_hostile_scalars_raise_only_task_file_errors(front):
    assert reason_of(f"---\n{front}\n---\n").reason.startswith("invalid YAML frontmatter")


@pytest.mark.parametrize("front,line", [
    ("a: " + "[" * 5000 + "]" * 5000, 2),                   # balanced flow sequences
    ("title: x\na: " + "{a: " * 3000 + "}" * 3000, 3),      # flow mappings, on the second line
    ("a: " + "[" * 8000, 2),                                 # never closed
    ("a:\n" + "- " * 5000 + "x", 3),                        # block sequences on one line
    ("a: " + "[" * 21 + "]" * 21, 2),                        # just over the limit
    ("a:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 30)) + " " * 30 + "x", None),  # block mappings
])
def test_nesting_deeper_than_the_limit_is_refused_before_yaml_does_the_work(front, line):
    """A 10 KiB file nested 5,000 deep used to cost ~0.5 s of CPU: refused at the limit, naming the line."""
    err = reason_of(f"---\n{front}\n---\nbody\n")

    assert f"nested more than {d.MAX_FRONTMATTER_DEPTH} levels deep" in err.reason
    if line is not None:
        assert err.line == line


def test_nesting_up_to_the_limit_is_fine():
    inner = "[" * (d.MAX_FRONTMATTER_DEPTH - 1) + "x" + "]" * (d.MAX_FRONTMATTER_DEPTH - 1)

    task = parse(f"---\nnotes: {inner}\ntitle: 'a [[[[[[[[[[[[[[[[[[[[[[[[ b'\n---\nbody\n")

    assert task.title.startswith("a [[") and task.warnings == ("unknown key 'notes' ignored",)


# --- the safe reader ----------------------------------------------------------------------------------


def test_read_refuses_symlinks(tmp_path):
    target = tmp_path / "secret.md"
    target.write_text("---\ntitle: secret\n---\n")
    link = tmp_path / "link.md"
    link.symlink_to(target)

    with pytest.raises(TaskFileError, match="symbolic link"):
        read_task_bytes(link)


@pytest.mark.timeout(10)
def test_read_never_blocks_on_a_fifo(tmp_path):
    fifo = tmp_path / "x.md"
    os.mkfifo(fifo)

    with pytest.raises(TaskFileError, match="not a regular file"):
        read_task_bytes(fifo)


def test_read_refuses_directories(tmp_path):
    (tmp_path / "dir.md").mkdir()

    with pytest.raises(TaskFileError, match="not a regular file"):
        read_task_bytes(tmp_path / "dir.md")


def test_read_refuses_files_over_the_limit(tmp_path):
    path = tmp_path / "big.md"
    path.write_bytes(b"x" * 101)

    with pytest.raises(TaskFileError, match="101 bytes, larger than the limit of 100"):
        read_task_bytes(path, max_bytes=100)
    assert read_task_bytes(path, max_bytes=101)[0] == b"x" * 101


def test_load_task_names_the_file_and_returns_its_mtime(tmp_path):
    path = tmp_path / "T7.md"
    path.write_text("---\npriority: nope\n---\n")
    os.utime(path, (1_700_000_000, 1_700_000_000))

    with pytest.raises(TaskFileError) as info:
        load_task(path, "web")
    assert info.value.path == str(path) and str(path) in str(info.value)

    path.write_text("---\npriority: low\n---\n")
    os.utime(path, (1_700_000_000, 1_700_000_000))
    assert load_task(path, "web").mtime == 1_700_000_000


def test_load_task_refuses_non_md_names(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("x")

    with pytest.raises(TaskFileError, match="must end in .md"):
        load_task(path, "web")


# --- hostile inputs end to end: a clear reason, nothing eligible -------------------------------------


def _only_invalid(plan, name: str) -> str:
    assert plan.eligible == [] and plan.blocked == []
    assert [p.name for p in plan.invalid] == [name]
    return plan.invalid[0].reason


@pytest.mark.parametrize("content,needle", [
    (BILLION_LAUGHS, "anchors/aliases"),
    (b"\x00\x01\x02\x03garbage", "binary"),
    ("---\ndepends_on: ../../etc:passwd\n---\n", "'../../etc' is not allowed"),
    ("---\ndepends_on: [1:30]\n---\n", "quote it"),
    ("---\ntitle: x\n\tpriority: high\n---\n", "line 3"),
    ("---\npriority: someday\n---\n", "unknown priority 'someday'"),
    ("---\n- a list\n---\n", "must be a mapping"),
    ("---\ntitle: x\na: " + "[" * 5000 + "]" * 5000 + "\n---\n",
     "line 3: invalid YAML frontmatter: nested more than 20"),
])
def test_hostile_file_gets_an_invalid_marker_with_the_reason(make_project, scan, content, needle):
    proj = make_project("web", tasks={"x": content})

    reason = _only_invalid(scan(), "x.md")

    assert needle in reason
    assert (proj.inbox / "x.md.invalid").read_text(encoding="utf-8").strip() == reason


def test_ten_mebibyte_file_is_invalid(make_project, scan):
    proj = make_project("web")
    big = proj.inbox / "big.md"
    with open(big, "wb") as fh:
        fh.truncate(10 * 1024 * 1024)  # sparse: nothing is actually written

    reason = _only_invalid(scan(), "big.md")

    assert "10485760 bytes, larger than the limit of 1048576" in reason


def test_symlink_to_a_file_outside_the_project_is_invalid(make_project, scan, tmp_path):
    outside = tmp_path / "outside" / "secret.md"
    outside.parent.mkdir()
    outside.write_text("---\ntitle: secret\n---\nrm -rf /\n")
    before = outside.stat()
    proj = make_project("web")
    (proj.inbox / "link.md").symlink_to(outside)

    reason = _only_invalid(scan(), "link.md")

    assert "symbolic link" in reason
    assert outside.read_text() == "---\ntitle: secret\n---\nrm -rf /\n"
    assert outside.stat().st_mtime == before.st_mtime
    assert (proj.inbox / "link.md").is_symlink()


@pytest.mark.timeout(10)
def test_fifo_named_like_a_task_does_not_block_the_scan(make_project, scan):
    proj = make_project("web", tasks={"ok": "fine"})
    os.mkfifo(proj.inbox / "x.md")

    plan = scan()

    assert [t.id for t in plan.eligible] == ["ok"]
    assert [(p.name, "not a regular file" in p.reason) for p in plan.invalid] == [("x.md", True)]


def test_unsafe_file_name_in_inbox_is_invalid(make_project, scan):
    proj = make_project("web")
    (proj.inbox / "a b.md").write_text("body")

    assert "not allowed" in _only_invalid(scan(), "a b.md")


def test_crlf_bom_file_is_eligible_end_to_end(make_project, scan):
    make_project("web", tasks={"win": b"\xef\xbb\xbf---\r\ntitle: w\r\n---\r\nbody\r\n"})

    plan = scan()

    assert [t.title for t in plan.eligible] == ["w"] and plan.invalid == []


def test_unknown_keys_do_not_stop_dispatch(make_project, scan):
    make_project("web", tasks={"T1": "---\nowner: bob\n---\nbody\n"})

    plan = scan()

    assert [t.id for t in plan.eligible] == ["T1"]
    assert plan.eligible[0].warnings == ("unknown key 'owner' ignored",)


def test_unterminated_frontmatter_is_incomplete_within_grace_then_invalid(make_project, scan):
    proj = make_project("web", tasks={"half": "---\ntitle: half\ndepends_on: [T0]\n"})
    mtime = (proj.inbox / "half.md").stat().st_mtime

    early = scan(now=mtime + d.INCOMPLETE_GRACE_S - 1)

    assert [p.name for p in early.incomplete] == ["half.md"]
    assert early.invalid == [] and early.eligible == []
    assert not (proj.inbox / "half.md.invalid").exists()

    late = scan(now=mtime + d.INCOMPLETE_GRACE_S + 1)

    reason = _only_invalid(late, "half.md")
    assert "no closing '---'" in reason
    assert (proj.inbox / "half.md.invalid").exists()


def test_invalid_task_is_skipped_until_the_file_is_newer_than_the_marker(make_project, scan, keys):
    proj = make_project("web", tasks={"T1": "---\npriority: urgent\n---\n"})
    path, marker = proj.inbox / "T1.md", proj.inbox / "T1.md.invalid"
    os.utime(path, (1_000, 1_000))
    scan()
    assert "unknown priority" in marker.read_text()
    os.utime(marker, (2_000, 2_000))

    # Fixed, but the file is not newer than the marker: not re-read, still invalid.
    path.write_text("---\npriority: high\n---\n")
    os.utime(path, (2_000, 2_000))
    plan = scan()
    assert keys(plan.eligible) == [] and "unknown priority" in plan.invalid[0].reason
    assert marker.stat().st_mtime == 2_000  # unchanged reason: marker not rewritten

    # Newer than the marker: re-validated, eligible, marker gone.
    os.utime(path, (3_000, 3_000))
    plan = scan()
    assert keys(plan.eligible) == ["web:T1"]
    assert not marker.exists()


def test_invalid_task_edited_into_another_error_gets_the_new_reason(make_project, scan):
    proj = make_project("web", tasks={"T1": "---\npriority: urgent\n---\n"})
    path, marker = proj.inbox / "T1.md", proj.inbox / "T1.md.invalid"
    os.utime(path, (1_000, 1_000))
    scan()
    os.utime(marker, (2_000, 2_000))

    path.write_text("---\ntags: {a: 1}\n---\n")
    os.utime(path, (3_000, 3_000))
    plan = scan()

    assert "'tags' must be a list" in plan.invalid[0].reason
    assert "'tags' must be a list" in marker.read_text()


def test_dry_run_writes_no_marker(make_project, scan):
    proj = make_project("web", tasks={"bad": "---\npriority: urgent\n---\n", "wait": {"depends_on": ("T0",)}})

    plan = scan(write=False)

    assert len(plan.invalid) == 1 and len(plan.blocked) == 1
    assert sorted(p.name for p in proj.inbox.iterdir()) == ["bad.md", "wait.md"]

