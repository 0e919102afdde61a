"""The scan's memos: unchanged files are not re-read, an unchanged queue not re-planned; changes are seen at once."""

from __future__ import annotations

import os
import time
from pathlib import Path

from dispatcher.core.config import Settings
from dispatcher.core.listing import Entry, Project, ProjectListing
from dispatcher.core.plan import Plan
from dispatcher.core.taskfile import Task, render_task
from dispatcher.inbox import files as aq
from dispatcher.inbox import scanner
from dispatcher.inbox.scanner import ParseCache, ProjectRead, read_inboxes, run_scan


def _settings(tmp_path: Path) -> Settings:
    return Settings(projects_dir=tmp_path / "projects", state_dir=tmp_path / "state", settle_time=0.0,
                    max_parallel=0)


def _task(loaded, task_id):  # type: ignore[no-untyped-def]
    return next(x for x in loaded if isinstance(x, Task) and x.id == task_id)  # a parsed file comes as its Task


def _ids(tasks: list[Task]) -> list[str]:
    return [str(t.key) for t in tasks]


def _scan(s: Settings) -> Plan:
    return run_scan(s, now=time.time() + 3600, write=False)


def test_unchanged_file_comes_from_cache_and_edits_are_seen(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    proj = aq.project(s.projects_dir, "p")
    aq.ensure_dirs(proj)
    path = aq.write_task_atomically(proj, "A", render_task(title="one", body="first"))
    first = _task(read_inboxes(s)[1], "A")
    assert _task(read_inboxes(s)[1], "A") is first  # cached: same object
    path.write_text(render_task(title="two", priority="high", body="second"))
    edited = _task(read_inboxes(s)[1], "A")
    assert (edited.title, edited.priority.value) == ("two", "high")
    assert edited.body == ""  # scans keep no bodies: the claim re-reads the file it launches
    # Replaced by another file with identical size and mtime: a new inode, so re-read.
    tmp = proj.inbox / ".x.tmp"
    tmp.write_text(render_task(title="thr", priority="high", body="second"))
    st = path.stat()
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, path)
    assert _task(read_inboxes(s)[1], "A").title == "thr"


def test_an_edit_in_place_with_the_same_size_and_mtime_is_seen(tmp_path: Path) -> None:
    """Same name, same inode, same size, mtime put back: the ctime still tells the edit."""
    s = _settings(tmp_path)
    proj = aq.project(s.projects_dir, "p")
    aq.ensure_dirs(proj)
    path = aq.write_task_atomically(proj, "A", render_task(title="aaa", priority="low"))
    assert _ids(_scan(s).eligible) == ["p:A"]
    st = path.stat()
    time.sleep(0.01)  # a later ctime (nanosecond clock)
    with open(path, "r+b") as fh:  # same inode
        fh.write(path.read_bytes().replace(b"title: aaa", b"title: bbb"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_ino == st.st_ino
    assert _scan(s).eligible[0].title == "bbb"


def test_rename_delete_and_new_files_are_seen(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    proj = aq.project(s.projects_dir, "p")
    aq.ensure_dirs(proj)
    a = aq.write_task_atomically(proj, "A", render_task(title="a"))
    aq.write_task_atomically(proj, "B", render_task(title="b"))
    assert sorted(_ids(_scan(s).eligible)) == ["p:A", "p:B"]
    os.rename(a, proj.inbox / "C.md")
    assert sorted(_ids(_scan(s).eligible)) == ["p:B", "p:C"]
    (proj.inbox / "B.md").unlink()
    assert _ids(_scan(s).eligible) == ["p:C"]
    aq.write_task_atomically(proj, "D", render_task(title="d", priority="high"))
    assert _ids(_scan(s).eligible) == ["p:D", "p:C"]
    kept = scanner._cache.project((str(proj.inbox), s.max_task_bytes))
    assert kept is not None and sorted(kept.parsed) == ["C.md", "D.md"]  # the parsed tasks of files gone are gone


def test_a_move_to_done_in_another_project_unblocks(tmp_path: Path) -> None:
    """The plan is reused only when nothing changed anywhere: done/ of another project gates this one."""
    s = _settings(tmp_path)
    a, b = aq.project(s.projects_dir, "a"), aq.project(s.projects_dir, "b")
    aq.ensure_dirs(a)
    aq.ensure_dirs(b)
    aq.write_task_atomically(a, "X", render_task(title="x", depends_on=("b:Y",)))
    y = aq.write_task_atomically(b, "Y", render_task(title="y"))
    first = _scan(s)
    assert _ids(first.eligible) == ["b:Y"] and _ids([t for t, _ in first.blocked]) == ["a:X"]
    again = _scan(s)
    assert _ids(again.eligible) == ["b:Y"] and again is not first
    again.eligible.clear()  # a caller's copy: changing it changes no later scan
    assert _ids(_scan(s).eligible) == ["b:Y"]
    os.rename(y, b.done / "Y.md")
    after = _scan(s)
    assert _ids(after.eligible) == ["a:X"] and after.blocked == []


def test_an_in_flight_file_and_a_marker_are_seen(tmp_path: Path) -> None:
    s = _settings(tmp_path).with_overrides(max_parallel=1)
    proj = aq.project(s.projects_dir, "p")
    aq.ensure_dirs(proj)
    a = aq.write_task_atomically(proj, "A", render_task(title="a", priority="high"))
    aq.write_task_atomically(proj, "B", render_task(title="b"))
    assert _ids(_scan(s).eligible) == ["p:A"]
    os.rename(a, proj.inbox / "A.md.dispatched")
    result = _scan(s)
    assert result.eligible == [] and result.in_flight["dispatched"] == [("p", "A")]
    assert _ids([t for t, _ in result.waiting]) == ["p:B"]


def test_a_file_still_being_written_is_planned_again_as_time_goes_on(tmp_path: Path) -> None:
    s = _settings(tmp_path).with_overrides(settle_time=30.0)
    proj = aq.project(s.projects_dir, "p")
    aq.ensure_dirs(proj)
    path = aq.write_task_atomically(proj, "A", render_task(title="a"))
    mtime = path.stat().st_mtime
    assert [p.name for p in run_scan(s, now=mtime, write=False).incomplete] == ["A.md"]
    assert _ids(run_scan(s, now=mtime + 60, write=False).eligible) == ["p:A"]
    assert _ids(run_scan(s, now=mtime + 61, write=False).eligible) == ["p:A"]  # reused
    assert [p.name for p in run_scan(s, now=mtime, write=False).incomplete] == ["A.md"]  # time went back


def test_other_settings_plan_anew(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    proj = aq.project(s.projects_dir, "p")
    aq.ensure_dirs(proj)
    for i in range(3):
        aq.write_task_atomically(proj, f"T{i}", render_task(title="t"))
    assert len(_scan(s).eligible) == 3
    assert len(_scan(s.with_overrides(max_parallel=1)).eligible) == 1


def _read(name: str, n: int) -> ProjectRead:
    proj = Project(name, Path("/x") / name)
    inbox = {f"{i}.md": Entry(f"{i}.md", i, i, True, i, i, i) for i in range(n)}  # identity (i, i, i, i)
    parsed = {f"{i}.md": Task(id=str(i), project=name, path=proj.inbox / f"{i}.md") for i in range(n)}
    return ProjectRead(ProjectListing(proj, inbox, ()), (), parsed)


def test_the_cache_is_bounded_and_forgets_the_least_recently_scanned_projects() -> None:
    cache = ParseCache(limit=5)
    cache.put(("a", 0), _read("a", 2))
    cache.put(("b", 0), _read("b", 2))
    assert len(cache) == 4
    cache.put(("a", 0), _read("a", 2))  # a scanned again: b is now the least recent
    cache.put(("c", 0), _read("c", 2))
    assert len(cache) == 4 and cache.project(("b", 0)) is None
    assert cache.get(("a", 0), "1.md", (1, 1, 1, 1)) is not None
    assert cache.get(("a", 0), "1.md", (1, 1, 1, 2)) is None  # changed file: a miss, never a stale task
    cache.put(("d", 0), _read("d", 9))  # one project alone over the limit keeps only part of it
    assert len(cache) == 5 and [k for k in cache._projects] == [("d", 0)]
    kept = cache.project(("d", 0))
    assert kept is not None and not kept.whole  # never reused whole: the rest must be read again


def test_a_project_over_the_limit_still_scans_right(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    s = _settings(tmp_path)
    monkeypatch.setattr(scanner, "_cache", ParseCache(limit=2))
    scanner.clear_cache()
    proj = aq.project(s.projects_dir, "p")
    aq.ensure_dirs(proj)
    for i in range(4):
        aq.write_task_atomically(proj, f"T{i}", render_task(title=f"t{i}"))
    for _ in range(2):
        assert sorted(_ids(_scan(s).eligible)) == [f"p:T{i}" for i in range(4)]
        assert len(scanner._cache) == 2
    (proj.inbox / "T3.md").unlink()
    assert sorted(_ids(_scan(s).eligible)) == [f"p:T{i}" for i in range(3)]


def test_invalid_files_stay_invalid_when_reused_and_the_gc_is_back_on(tmp_path: Path) -> None:
    import gc

    s = _settings(tmp_path)
    proj = aq.project(s.projects_dir, "p")
    aq.ensure_dirs(proj)
    (proj.inbox / "Bad.md").write_text("---\npriority: urgent\n---\nbody\n")
    aq.write_task_atomically(proj, "A", render_task(title="a"))
    for _ in range(2):  # the second from the memos
        result = _scan(s)
        assert [p.name for p in result.invalid] == ["Bad.md"] and "unknown priority" in result.invalid[0].reason
        assert _ids(result.eligible) == ["p:A"]
        assert gc.isenabled()
