"""Settling: a task file is judged and dispatched only once its writer is done with it.

Done means: the watcher saw it closed after writing or moved in (with the identity it still
has), or it has not changed for ``settle_time``. An empty file is never a task.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dispatcher.core import defaults as d
from dispatcher.core.report import render_plan
from dispatcher.flows import claim as cl
from dispatcher.inbox import files as aq
from dispatcher.inbox.scanner import run_scan
from dispatcher.inbox.watcher import InboxHandler, start_observer
from dispatcher.store import settle


def mtime_of(path: Path) -> float:
    return path.stat().st_mtime_ns / 1e9


def test_a_fresh_file_waits_until_unchanged_for_settle_time(make_project, scan, keys):
    proj = make_project("web", tasks={"T1": "work"})
    written = mtime_of(proj.task_path("T1"))

    early = scan(now=written + 0.5, settle_time=2.0)

    assert early.eligible == [] and [p.name for p in early.incomplete] == ["T1.md"]
    assert "still being written" in early.incomplete[0].reason
    assert early.settles_at == pytest.approx(written + 2.0)
    assert early.counts()["web"]["pending"] == 1 and early.counts()["web"]["invalid"] == 0
    assert keys(scan(now=written + 2.01, settle_time=2.0).eligible) == ["web:T1"]


def test_a_file_whose_writer_was_seen_done_is_dispatched_at_once(make_project, settings, keys):
    proj = make_project("web", tasks={"T1": "work"})
    path = proj.task_path("T1")
    ident = settle.identity_of(str(path))
    assert ident is not None
    s = settings.with_overrides(settle_time=2.0)

    asked: list[list[tuple[str, str]]] = []

    def lookup(files: list[tuple[str, str]]) -> dict[tuple[str, str], settle.Identity]:
        asked.append(files)
        return {("web", "T1.md"): ident} if ("web", "T1.md") in files else {}  # type: ignore[dict-item]

    plan = run_scan(s, now=mtime_of(path), write=False, closed=lookup)

    assert keys(plan.eligible) == ["web:T1"] and plan.settles_at is None
    # Written to again after that close: this version waits for its own.
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("more\n")
    later = run_scan(s, now=mtime_of(path), write=False, closed=lookup)
    assert later.eligible == [] and [p.name for p in later.incomplete] == ["T1.md"]
    # Only files still fresh are looked up (none once they are settled by age).
    run_scan(s, now=mtime_of(path) + 60, write=False, closed=lookup)
    assert asked == [[("web", "T1.md")], [("web", "T1.md")]]


def test_a_half_written_file_is_neither_judged_nor_marked(make_project, scan):
    """``priority: h`` (of ``high``) is no priority yet: no .invalid marker while it may still grow."""
    proj = make_project("web", tasks={"T1": "---\npriority: h"})
    written = mtime_of(proj.task_path("T1"))

    plan = scan(now=written + 0.1, settle_time=2.0)

    assert plan.invalid == [] and [p.name for p in plan.incomplete] == ["T1.md"]
    assert not proj.task_path("T1", d.INVALID).exists()


@pytest.mark.parametrize("settle_time", [0.0, 2.0])
def test_an_empty_file_is_never_a_task(make_project, scan, settle_time):
    proj = make_project("web", tasks={"E": ""})
    path = proj.task_path("E")
    written = mtime_of(path)

    early = scan(now=written + 5, settle_time=settle_time)

    assert early.eligible == [] and early.invalid == []
    assert [(p.name, p.reason) for p in early.incomplete] == [("E.md", "file is empty (still being written?)")]
    late = scan(now=written + d.INCOMPLETE_GRACE_S + 1, settle_time=settle_time)
    assert [(p.name, p.reason) for p in late.invalid] == [("E.md", "file is empty: write the task into it")]
    assert path.with_name("E.md.invalid").read_text().strip() == "file is empty: write the task into it"


def test_an_empty_file_seen_closed_is_still_not_a_task(make_project, settings):
    proj = make_project("web", tasks={"E": ""})
    path = proj.task_path("E")
    ident = settle.identity_of(str(path))

    plan = run_scan(settings.with_overrides(settle_time=2.0), now=mtime_of(path), write=False,
                    closed=lambda files: {("web", "E.md"): ident})  # type: ignore[dict-item]

    assert plan.eligible == [] and [p.name for p in plan.incomplete] == ["E.md"]


def test_dry_run_shows_files_still_being_written(make_project, scan):
    proj = make_project("web", tasks={"T1": "work", "OLD": "done writing"}, mtimes={"OLD": 1_000})

    text = render_plan(scan(now=mtime_of(proj.task_path("T1")) + 0.2, settle_time=2.0, write=False))

    assert "web:OLD" in text.split("Incomplete")[0]
    assert "Incomplete (retried) (1):" in text and "web/T1.md  — still being written" in text


def test_identities_from_messages_are_validated():
    assert settle.parse_identity([1, 2, 3]) == (1, 2, 3)
    for bad in (None, "1:2:3", [1, 2], [1, 2, "3"], [1, -2, 3], [True, 2, 3], [1.0, 2, 3], {"a": 1}):
        assert settle.parse_identity(bad) is None


# --- the watcher (real inotify) ---------------------------------------------------------------------


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def watched(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real observer over tmp_path/projects; yields (inbox, calls) with calls = [(name, closed), …]."""
    projects = tmp_path / "projects"
    proj = aq.project(projects, "web")
    aq.ensure_dirs(proj)
    calls: list[tuple[str, list[int] | None]] = []
    handler = InboxHandler(lambda path, closed: calls.append((os.path.basename(path), closed)))
    observer = start_observer(projects, handler)
    try:
        yield proj.inbox, calls
    finally:
        observer.stop()
        observer.join(timeout=5)


def _sync(inbox: Path, calls: list[tuple[str, list[int] | None]], tag: str) -> None:
    """Write and close a sentinel file, wait for its event: every earlier event has been handled by then."""
    (inbox / f"{tag}.md").write_text("sentinel\n")
    wait_until(lambda: any(name == f"{tag}.md" for name, _ in calls), what=f"sentinel {tag}")


def test_watcher_enqueues_a_plain_write_once_closed_with_its_identity(watched):
    inbox, calls = watched
    fd = os.open(inbox / "A.md", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)  # cat > A.md …
    try:
        os.write(fd, b"---\ntitle: half\n---\nfirst line\n")
        _sync(inbox, calls, "S1")
        assert [c for c in calls if c[0] == "A.md"] == []  # created and written, not closed: nothing yet
        os.write(fd, b"last line\n")
    finally:
        os.close(fd)

    wait_until(lambda: [c for c in calls if c[0] == "A.md"], what="A.md enqueued")
    ident = settle.identity_of(str(inbox / "A.md"))
    assert [c for c in calls if c[0] == "A.md"] == [("A.md", list(ident or ()))]


def test_watcher_enqueues_an_atomic_rename_with_its_identity_and_our_own_moves_as_hints(watched, tmp_path):
    inbox, calls = watched
    proj_inbox = inbox
    (proj_inbox / ".B.123.tmp").write_text("work\n")
    os.rename(proj_inbox / ".B.123.tmp", proj_inbox / "B.md")  # dispatcher submit
    outside = tmp_path / "elsewhere.md"
    outside.write_text("work\n")
    os.rename(outside, proj_inbox / "C.md")  # mv from outside the watched tree
    wait_until(lambda: {"B.md", "C.md"} <= {n for n, _ in calls}, what="B.md and C.md enqueued")
    for name in ("B.md", "C.md"):
        ident = settle.identity_of(str(proj_inbox / name))
        assert [c for c in calls if c[0] == name] == [(name, list(ident or ()))]

    released = cl.release(cl.claim(proj_inbox / "B.md"))  # a release is not a writer finishing

    wait_until(lambda: len([c for c in calls if c[0] == "B.md"]) == 2, what="B.md released")
    assert [c for c in calls if c[0] == "B.md"][1] == ("B.md", None) and released.name == "B.md"


def test_watcher_reports_the_tasks_of_a_project_moved_in_whole(watched, tmp_path):
    """`mv ~/work/newproj ~/projects/` (or a clone finished elsewhere): its inbox already holds tasks.

    inotify reports only the directory; watchdog then simulates "created" events for what it finds
    inside, which look like a writer opening a file and are ignored. The new inbox is listed instead
    and each task goes out as a hint (it settles by age: nobody saw its writer close it)."""
    inbox, calls = watched
    outside = aq.project(tmp_path / "elsewhere", "newproj")
    aq.ensure_dirs(outside)
    (outside.inbox / "D.md").write_text("---\ntitle: moved in\n---\nwork\n")
    (outside.inbox / ".E.md.tmp").write_text("half")  # not a task name
    os.rename(tmp_path / "elsewhere" / "newproj", inbox.parent.parent.parent / "newproj")

    wait_until(lambda: [c for c in calls if c[0] == "D.md"], what="D.md reported")
    _sync(inbox, calls, "S2")
    assert [c for c in calls if c[0] == "D.md"] == [("D.md", None)]
    assert not [c for c in calls if "E.md" in c[0]]


def test_watcher_reports_tasks_reaching_done_once_per_burst_and_never_as_inbox_events(tmp_path):
    """An agent moving its file to done/ queues a monitor pass at once (its session is freed without waiting
    for the next periodic pass); a burst of agents finishing together is one report, a later one another."""
    projects = tmp_path / "projects"
    proj = aq.project(projects, "web")
    aq.ensure_dirs(proj)
    calls: list[tuple[str, list[int] | None]] = []
    done: list[list[str]] = []
    handler = InboxHandler(lambda path, closed: calls.append((os.path.basename(path), closed)),
                           on_done=lambda paths: done.append([os.path.basename(p) for p in paths]))
    observer = start_observer(projects, handler)
    try:
        for i in range(5):
            (proj.inbox / f"D{i}.md.dispatched").write_text("x\n")
        for i in range(5):  # agents finishing together: inbox/<id>.md.dispatched → done/<id>.md
            os.rename(proj.inbox / f"D{i}.md.dispatched", proj.done / f"D{i}.md")
        wait_until(lambda: len(done) >= 1, what="done reported")
        time.sleep(0.2)  # a second report of the same burst would come within the coalescing delay
        assert done == [[f"D{i}.md" for i in range(5)]]  # one report naming every file of the burst
        (proj.done / "late.md").write_text("by hand\n")  # a file put there later (closed after writing)
        wait_until(lambda: len(done) == 2, what="the later one reported")
        assert done[1] == ["late.md"]
        _sync(proj.inbox, calls, "S9")
        assert [name for name, _ in calls] == ["S9.md"]  # done/ files are never inbox events
    finally:
        observer.stop()
        observer.join(timeout=5)
