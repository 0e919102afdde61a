"""The parse cache: unchanged files are not re-read; any change is seen at once."""

from __future__ import annotations

import os
from pathlib import Path

from dispatcher.inbox import files as aq
from dispatcher.core.config import Settings
from dispatcher.inbox.scanner import collect
from dispatcher.core.taskfile import render_task


def _settings(tmp_path: Path) -> Settings:
    return Settings(projects_dir=tmp_path / "projects", state_dir=tmp_path / "state")


def _task(loaded, task_id):  # type: ignore[no-untyped-def]
    return next(x.task for x in loaded if x.task is not None and x.task.id == task_id)


def test_unchanged_file_comes_from_cache_and_edits_are_seen(tmp_path: Path) -> None:
    s = _settings(tmp_path)
    proj = aq.project(s.projects_dir, "p")
    aq.ensure_dirs(proj)
    path = aq.write_task_atomically(proj, "A", render_task(title="one", body="first"))
    first = _task(collect(s)[1], "A")
    assert _task(collect(s)[1], "A") is first  # cached: same object
    path.write_text(render_task(title="two", priority="high", body="second"))
    edited = _task(collect(s)[1], "A")
    assert (edited.title, edited.priority.value, edited.body) == ("two", "high", "second")
    # Replaced by another file with identical size and mtime: a new inode, so re-read.
    tmp = proj.inbox / ".x.tmp"
    tmp.write_text(render_task(title="thr", priority="high", body="second"))
    st = path.stat()
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, path)
    assert _task(collect(s)[1], "A").title == "thr"
