"""Dependency gate: the reference's six tests end to end through a real scan, seed semantics, cycles."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from dispatcher.core import defaults as d
from dispatcher.core.config import Settings
from dispatcher.core.errors import UnsafeIdError
from dispatcher.core.gate import DoneIndex, GateStatus, check, find_cycles, format_path
from dispatcher.core.taskfile import DepRef, Task, parse_task
from dispatcher.inbox import files as aq
from dispatcher.inbox.scanner import run_scan


def blocked_marker(proj, task_id: str) -> Path:
    return proj.inbox / f"{task_id}.md{d.BLOCKED}"


# --- the reference's six gate tests (claude-failover PR), ported by name and meaning -----------------


def test_depends_on_unresolved(make_project, scan, keys):
    proj = make_project("web", tasks={"T2": {"title": "needs T1", "depends_on": ("web:T1",)}})

    plan = scan()

    assert keys(plan.eligible) == []
    assert keys(plan.blocked) == ["web:T2"]
    assert "web:T1" in plan.blocked[0][1]
    assert blocked_marker(proj, "T2").is_file()
    assert blocked_marker(proj, "T2").stat().st_size == 0


def test_depends_on_resolved(make_project, scan, keys):
    proj = make_project("web", tasks={"T2": {"depends_on": ("web:T1",)}}, done=["T1.md"])

    plan = scan()

    assert keys(plan.eligible) == ["web:T2"]
    assert plan.blocked == []
    assert not blocked_marker(proj, "T2").exists()


def test_partial_resolution(make_project, scan, keys):
    make_project("api", done=["A1.md"])
    proj = make_project("web", tasks={"T3": {"depends_on": ("api:A1", "api:A2", "T1")}}, done=["T1.md"])

    plan = scan()

    assert keys(plan.eligible) == []
    assert keys(plan.blocked) == ["web:T3"]
    assert plan.unmet[DepRef("web", "T3")].missing == (DepRef("api", "A2"),)
    assert "api:A2" in plan.blocked[0][1] and "api:A1" not in plan.blocked[0][1]
    assert blocked_marker(proj, "T3").exists()


def test_reject_path_traversal(tmp_path, keys):
    projects_dir = tmp_path / "srv" / "projects"
    proj = aq.project(projects_dir, "web")
    aq.ensure_dirs(proj)
    (proj.inbox / "EVIL.md").write_text("---\ndepends_on: ../../tmp:foo\n---\nsteal\n")
    # The would-be target of "../../tmp:foo" exists and says "done": had the gate joined the
    # raw segments into a path (projects_dir/../../tmp/.agent-queue/done/foo.md), EVIL would run.
    escaped = tmp_path / "tmp" / d.QUEUE_DIR / d.DONE
    escaped.mkdir(parents=True)
    (escaped / "foo.md").write_text("done\n")
    assert (projects_dir / "../../tmp" / d.QUEUE_DIR / d.DONE / "foo.md").exists()

    plan = run_scan(Settings(projects_dir=projects_dir, settle_time=0), now=time.time(), write=True)

    assert keys(plan.eligible) == [] and plan.blocked == []
    assert [p.name for p in plan.invalid] == ["EVIL.md"]
    reason = plan.invalid[0].reason
    assert "'../../tmp' is not allowed" in reason
    assert (proj.inbox / "EVIL.md.invalid").read_text().strip() == reason
    assert not blocked_marker(proj, "EVIL").exists()
    # Rejected by the pure parser, before any filesystem lookup: no path, no disk.
    with pytest.raises(UnsafeIdError):
        parse_task(b"---\ndepends_on: ../../tmp:foo\n---\n", task_id="EVIL", project="web", path=Path("unused"))


def test_blocked_marker_idempotent(make_project, scan):
    proj = make_project("web", tasks={"T2": {"depends_on": ("T1",)}})
    scan()
    marker = blocked_marker(proj, "T2")
    first_seen = 1_000_000_000.0  # 2001: clearly "the first detection", not any later pass
    os.utime(marker, (first_seen, first_seen))

    for _ in range(3):
        plan = scan()
        assert [t.id for t, _ in plan.blocked] == ["T2"]

    assert marker.stat().st_mtime == first_seen


def test_no_depends_on(make_project, scan, keys):
    proj = make_project("web", tasks={"T1": {"title": "plain"}, "T0": "no frontmatter at all\n"})

    plan = scan()

    assert sorted(keys(plan.eligible)) == ["web:T0", "web:T1"]
    assert plan.blocked == [] and plan.invalid == []
    assert sorted(p.name for p in proj.inbox.iterdir()) == ["T0.md", "T1.md"]


# --- follow-ups of the same flow -----------------------------------------------------------------------


def test_blocked_marker_removed_when_dependency_arrives(make_project, scan, keys):
    proj = make_project("web", tasks={"T2": {"depends_on": ("T1",)}})
    scan()
    assert blocked_marker(proj, "T2").exists()

    (proj.done / "T1.md").write_text("done\n")
    plan = scan()

    assert keys(plan.eligible) == ["web:T2"]
    assert not blocked_marker(proj, "T2").exists()


def test_dependency_on_unknown_project_is_named(make_project, scan):
    make_project("web", tasks={"T2": {"depends_on": ("ghost:T1",)}})

    plan = scan()

    assert "no such project: ghost" in plan.blocked[0][1]


# --- seed semantics of done/ ------------------------------------------------------------------------


@pytest.mark.parametrize("done_name", ["T1.md", "T1-20260101.md", "T1_x.md", "T1.x.md", "T1@host.md"])
def test_done_copies_satisfy_the_dependency(make_project, scan, keys, done_name):
    make_project("web", tasks={"T2": {"depends_on": ("web:T1",)}}, done=[done_name])

    assert keys(scan().eligible) == ["web:T2"]


@pytest.mark.parametrize("done_name", ["T10.md", "T1x.md", "XT1.md", "T1.md.bak", "t1.md", "T1"])
def test_lookalikes_do_not_satisfy_the_dependency(make_project, scan, keys, done_name):
    make_project("web", tasks={"T2": {"depends_on": ("web:T1",)}}, done=[done_name])

    plan = scan()

    assert keys(plan.eligible) == []
    assert keys(plan.blocked) == ["web:T2"]


@pytest.mark.parametrize("kind", ["symlink-to-file", "dangling-symlink", "directory", "fifo"])
def test_only_regular_files_in_done_count(make_project, scan, keys, tmp_path, kind):
    """Like inbox entries, a done/ entry is a finished task only when it is a regular file."""
    proj = make_project("web", tasks={"T2": {"depends_on": ("web:T1",), "body": "x"}})
    entry = proj.done / "T1.md"
    elsewhere = tmp_path / "elsewhere.md"
    elsewhere.write_text("not done\n")
    if kind == "symlink-to-file":
        entry.symlink_to(elsewhere)
    elif kind == "dangling-symlink":
        entry.symlink_to(tmp_path / "missing.md")
    elif kind == "directory":
        entry.mkdir()
    else:
        os.mkfifo(entry)

    plan = scan()

    assert keys(plan.blocked) == ["web:T2"] and plan.eligible == []
    assert plan.counts()["web"]["done"] == 0


def test_bare_dependency_means_same_project(make_project, scan, keys):
    make_project("api", done=["T1.md"])  # a T1 done elsewhere must not count
    make_project("web", tasks={"T2": "---\ndepends_on: T1\n---\nbody\n"})

    plan = scan()

    assert keys(plan.blocked) == ["web:T2"]
    assert plan.unmet[DepRef("web", "T2")].missing == (DepRef("web", "T1"),)


def test_single_string_dependency_is_a_one_element_list(make_project, scan, keys):
    make_project("web", tasks={"T2": "---\ndepends_on: api:T1\n---\n"})
    make_project("api", done=["T1.md"])

    plan = scan()

    assert keys(plan.eligible) == ["web:T2"]
    assert plan.eligible[0].depends_on == (DepRef("api", "T1"),)


def test_done_index_ignores_non_markdown_and_unknown_projects():
    index = DoneIndex({"web": ["T1.txt", "T2.md"]})

    assert not index.is_done(DepRef("web", "T1"))
    assert index.is_done(DepRef("web", "T2"))
    assert not index.is_done(DepRef("api", "T2"))
    assert index.projects() == frozenset({"web"})


def test_check_reports_missing_in_declaration_order():
    task = Task(id="X", project="web", path=Path("X.md"),
                depends_on=(DepRef("web", "B"), DepRef("web", "A"), DepRef("web", "C")))
    result = check(task, DoneIndex({"web": ["A.md"]}))

    assert result.status is GateStatus.UNMET
    assert result.missing == (DepRef("web", "B"), DepRef("web", "C"))
    assert result.explain() == "waiting on web:B, web:C"


# --- cycles -------------------------------------------------------------------------------------------


def _task(key: str, *deps: str) -> Task:
    project, task_id = key.split(":")
    return Task(id=task_id, project=project, path=Path(f"{task_id}.md"),
                depends_on=tuple(DepRef.parse(x, project) for x in deps))


def test_cycle_within_a_project_is_reported_with_its_path():
    cycles = find_cycles([_task("web:A", "B"), _task("web:B", "A")], DoneIndex({"web": []}))

    assert format_path(cycles[DepRef("web", "A")]) == "web:A → web:B → web:A"
    assert format_path(cycles[DepRef("web", "B")]) == "web:B → web:A → web:B"


def test_cycle_across_projects_is_reported_with_its_path():
    tasks = [_task("a:X", "b:Y"), _task("b:Y", "c:Z"), _task("c:Z", "a:X"), _task("a:FREE")]
    cycles = find_cycles(tasks, DoneIndex({"a": [], "b": [], "c": []}))

    assert set(cycles) == {DepRef("a", "X"), DepRef("b", "Y"), DepRef("c", "Z")}
    assert format_path(cycles[DepRef("a", "X")]) == "a:X → b:Y → c:Z → a:X"


def test_self_dependency_is_a_cycle():
    cycles = find_cycles([_task("web:A", "A")], DoneIndex({"web": []}))

    assert cycles == {DepRef("web", "A"): (DepRef("web", "A"), DepRef("web", "A"))}


def test_a_chain_is_not_a_cycle():
    tasks = [_task("web:A", "B"), _task("web:B", "C"), _task("web:C"), _task("web:D", "B", "C")]

    assert find_cycles(tasks, DoneIndex({"web": []})) == {}


def test_long_chain_does_not_hit_the_recursion_limit():
    tasks = [_task(f"web:T{i}", f"T{i + 1}") for i in range(5000)] + [_task("web:T5000")]

    assert find_cycles(tasks, DoneIndex({"web": []})) == {}


def test_large_ring_is_reported_for_every_member_quickly():
    n = 1000
    tasks = [_task(f"web:T{i}", f"T{(i + 1) % n}") for i in range(n)]

    cycles = find_cycles(tasks, DoneIndex({"web": []}))

    assert len(cycles) == n
    path = cycles[DepRef("web", "T7")]
    assert path[0] == path[-1] == DepRef("web", "T7") and path[1] == DepRef("web", "T8")
    assert len(path) == n + 1


def test_cycles_are_reported_by_scan(make_project, scan, keys):
    make_project("a", tasks={"X": {"depends_on": ("b:Y",)}, "SELF": {"depends_on": ("SELF",)}})
    make_project("b", tasks={"Y": {"depends_on": ("a:X",)}, "CHAIN": {"depends_on": ("a:X",)}})

    plan = scan()

    reasons = {f"{t.project}:{t.id}": why for t, why in plan.blocked}
    assert reasons["a:X"] == "dependency cycle: a:X → b:Y → a:X"
    assert reasons["b:Y"] == "dependency cycle: b:Y → a:X → b:Y"
    assert reasons["a:SELF"] == "dependency cycle: a:SELF → a:SELF"
    assert reasons["b:CHAIN"] == "waiting on a:X"  # waits on a cycle, is not on it
    assert keys(plan.eligible) == []
