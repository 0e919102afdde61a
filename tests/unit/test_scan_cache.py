"""The parse cache: unchanged files are not re-read; any change is seen at once."""

from __future__ import annotations

import os
from pathlib import Path

from dispatcher.core.config import Settings
from dispatcher.core.taskfile import Task, render_task
from dispatcher.inbox import files as aq
from dispatcher.inbox.scanner import ParseCache, read_inboxes


def _settings(tmp_path: Path) -> Settings:
    return Settings(projects_dir=tmp_path / "projects", state_dir=tmp_path / "state")


def _task(loaded, task_id):  # type: ignore[no-untyped-def]
    return next(x.task for x in loaded if x.task is not None and x.task.id == task_id)


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


def test_the_cache_is_bounded_and_forgets_the_least_recently_used() -> None:
    cache = ParseCache(limit=2)
    one, two, three = (Task(id=i, project="p", path=Path(f"/x/{i}.md")) for i in ("a", "b", "c"))
    cache.put("a", (1, 1, 1, 1), one)
    cache.put("b", (2, 2, 2, 2), two)
    assert cache.get("a", (1, 1, 1, 1)) is one  # a is now the most recently used
    cache.put("c", (3, 3, 3, 3), three)
    assert len(cache) == 2
    assert cache.get("b", (2, 2, 2, 2)) is None
    assert cache.get("a", (1, 1, 1, 1)) is one and cache.get("c", (3, 3, 3, 3)) is three
    assert cache.get("a", (9, 9, 9, 9)) is None  # changed file: a miss, never a stale task
