"""The plan over hand-built values: no disk, no clock, no Redis."""

from __future__ import annotations

import ast
from pathlib import Path

import dispatcher.core
from dispatcher.core import defaults as d
from dispatcher.core.errors import TaskFileError, TaskIncomplete
from dispatcher.core.listing import Entry, Project, ProjectListing
from dispatcher.core.plan import Loaded, cap, fresh_files, in_flight, pending_names, plan
from dispatcher.core.taskfile import DepRef, Priority, Task

NOW = 1_000_000.0
ROOT = Path("/nowhere/projects")


def _entry(name: str, *, age: float = 100.0, size: int = 10, regular: bool = True, inode: int = 1) -> Entry:
    mtime = NOW - age
    return Entry(name, mtime, size, regular, inode, int(mtime * 1e9), int(mtime * 1e9))


def _listing(name: str, files: dict[str, Entry] | list[str], done: tuple[str, ...] = ()) -> ProjectListing:
    inbox = files if isinstance(files, dict) else {n: _entry(n) for n in files}
    return ProjectListing(Project(name, ROOT / name), inbox, done)


def _task(project: str, task_id: str, *, age: float = 100.0, deps: tuple[str, ...] = (),
          priority: Priority = Priority.DEFAULT) -> Task:
    return Task(id=task_id, project=project, path=ROOT / project / "inbox" / f"{task_id}.md", priority=priority,
                depends_on=tuple(DepRef.parse(x, project) for x in deps), mtime=NOW - age)


def _loaded(task: Task) -> Loaded:
    return Loaded(task.project, task.path, task=task, mtime=task.mtime)


def _keys(tasks: list[Task]) -> list[str]:
    return [str(t.key) for t in tasks]


def test_met_deps_dispatch_in_priority_then_age_order_and_unmet_ones_are_blocked() -> None:
    a = _task("web", "A", age=50)
    b = _task("web", "B", age=90, deps=("api:X",))
    c = _task("web", "C", age=10, priority=Priority.CRITICAL)
    e = _task("web", "E", age=95, deps=("api:Y",))
    listings = [_listing("web", ["A.md", "B.md", "C.md", "E.md"]), _listing("api", [], done=("X.md",))]

    result = plan(listings, [_loaded(t) for t in (a, b, c, e)], now=NOW, incomplete_grace=30)

    assert _keys(result.eligible) == ["web:C", "web:B", "web:A"]
    assert [(str(t.key), why) for t, why in result.blocked] == [("web:E", "waiting on api:Y")]
    assert result.unmet[e.key].missing == (DepRef("api", "Y"),)
    assert result.done_counts == {"web": 0, "api": 1}


def test_a_stuck_marker_in_the_listing_makes_a_blocked_task_stuck() -> None:
    t = _task("web", "T", deps=("T0",))
    result = plan([_listing("web", ["T.md", "T.md" + d.STUCK])], [_loaded(t)], now=NOW, incomplete_grace=30)
    assert result.blocked == [] and [x.id for x, _ in result.stuck] == ["T"]


def test_cycles_are_named_and_nothing_on_them_dispatches() -> None:
    a, b = _task("web", "A", deps=("B",)), _task("web", "B", deps=("A",))
    result = plan([_listing("web", ["A.md", "B.md"])], [_loaded(a), _loaded(b)], now=NOW, incomplete_grace=30)
    assert result.eligible == []
    assert all(why.startswith("dependency cycle: ") for _, why in result.blocked)


def test_errors_are_invalid_and_an_unclosed_fence_is_incomplete_only_within_its_grace() -> None:
    path = ROOT / "web" / "inbox"
    loaded = [Loaded("web", path / "Bad.md", error=TaskFileError("boom", line=3), mtime=NOW - 100),
              Loaded("web", path / "New.md", error=TaskIncomplete("no closing ---"), mtime=NOW - 5),
              Loaded("web", path / "Old.md", error=TaskIncomplete("no closing ---"), mtime=NOW - 100),
              Loaded("web", path / "Kept.md", invalid_marker="kept reason", mtime=NOW - 100)]
    listing = _listing("web", ["Bad.md", "New.md", "Old.md", "Kept.md"])

    result = plan([listing], loaded, now=NOW, incomplete_grace=30)

    assert {(p.name, p.reason) for p in result.invalid} == {
        ("Bad.md", "line 3: boom"), ("Old.md", "no closing ---"), ("Kept.md", "kept reason")}
    assert [p.name for p in result.incomplete] == ["New.md"]
    assert result.counts()["web"] == {"pending": 1, "blocked": 0, "stuck": 0, "invalid": 3,
                                      "launching": 0, "dispatched": 0, "failed": 0, "done": 0}


def test_a_file_still_being_written_waits_unless_its_writer_closed_it() -> None:
    t = _task("web", "T", age=0.5)
    entry = _entry("T.md", age=0.5)
    listing = _listing("web", {"T.md": entry})

    fresh = plan([listing], [_loaded(t)], now=NOW, incomplete_grace=30, settle_time=2.0)
    closed = plan([listing], [_loaded(t)], now=NOW, incomplete_grace=30, settle_time=2.0,
                  closed={("web", "T.md"): entry.version})

    assert fresh.eligible == [] and "still being written" in fresh.incomplete[0].reason
    assert fresh.settles_at == entry.mtime_ns / 1e9 + 2.0
    assert _keys(closed.eligible) == ["web:T"]
    assert fresh_files([listing], now=NOW, settle_time=2.0) == [("web", "T.md")]


def test_in_flight_files_are_listed_by_state_and_hold_back_a_pending_twin_and_the_cap() -> None:
    listing = _listing("web", ["A.md", "B.md", "A.md" + d.DISPATCHED, "Z.md" + d.FAILED, ".Q.md" + d.LAUNCHING])
    a, b = _task("web", "A"), _task("web", "B")

    assert in_flight([listing]) == {"launching": [], "dispatched": [("web", "A")], "failed": [("web", "Z")]}
    assert pending_names(listing) == ["A.md", "B.md"]
    result = plan([listing], [_loaded(a), _loaded(b)], now=NOW, incomplete_grace=30, limit_of=lambda p: 1)
    assert [(str(t.key), why) for t, why in result.waiting] == [
        ("web:A", "a task with the same ID is still launching or dispatched"),
        ("web:B", "project at its limit (1/1)")]


def test_cap_keeps_the_order_of_the_projects_with_room() -> None:
    ordered = [_task("web", "W1"), _task("api", "A1"), _task("web", "W2"), _task("api", "A2")]
    kept, waiting = cap(ordered, {"dispatched": [("api", "A0")]}, lambda p: 2 if p == "web" else 1)
    assert _keys(kept) == ["web:W1", "web:W2"]
    assert [why for _, why in waiting] == ["project at its limit (1/1)"] * 2


def test_the_core_imports_no_adapter_and_no_process_or_network_library() -> None:
    # The layer rule, until import-linter enforces it: the core is pure values and rules.
    forbidden = ("dispatcher.inbox", "dispatcher.store", "dispatcher.agent", "dispatcher.flows", "dispatcher.cli",
                 "dispatcher.web", "redis", "celery", "subprocess", "watchdog", "libtmux")
    file_io = {"os", "shutil", "socket", "stat", "errno"}
    allowed_file_io = {"config.py"}  # reads the config file and environment (to be split out of core)
    for path in Path(dispatcher.core.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(forbidden), f"{path.name} imports {name}"
                if path.name not in allowed_file_io:
                    assert name.split(".")[0] not in file_io, f"{path.name} imports {name}"
