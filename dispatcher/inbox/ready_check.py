"""One task file checked alone (I/O): may this indexed entry still dispatch, or this new file join the index?

The full scan judges every file together; these look at one file and the few paths its verdict
depends on (its state siblings, its dependencies' done/ files), so they cost the same whatever
the size of the queue. Anything they cannot decide alone is left to a full scan.
"""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dispatcher.core import defaults as d
from dispatcher.core.config import Settings
from dispatcher.core.errors import TaskFileError, TaskGone
from dispatcher.core.gate import DoneIndex
from dispatcher.core.listing import is_settled
from dispatcher.core.ready import ReadyEntry
from dispatcher.core.taskfile import DepRef, Priority, Task, task_id_from_name
from dispatcher.inbox import files as aq
from dispatcher.inbox.reader import load_task
from dispatcher.store import settle


class Verdict(str, enum.Enum):
    """What one check found."""

    READY = "ready"  # dispatch it
    BUSY = "busy"  # a task with the same ID is launching or running: keep the entry, skip it now
    STALE = "stale"  # gone, changed, invalid or blocked now: drop the entry (a scan or event re-adds it)
    UNSETTLED = "unsettled"  # (new files) still being written
    NEEDS_SCAN = "needs-scan"  # (new files) blocked, invalid or marked: a full scan judges and marks it


@dataclass(frozen=True)
class Checked:
    verdict: Verdict
    task: Task | None = None
    detail: str = ""


def settled_elsewhere(path: str) -> bool:
    """Neither pending nor launching any more (dispatched, failed, done or deleted): its entry can go."""
    return not _exists(path) and not _exists(path + d.LAUNCHING)


def _exists(path: str) -> bool:
    try:
        os.lstat(path)
    except OSError:
        return False
    return True


def _is_regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def deps_missing(settings: Settings, deps: Iterable[DepRef]) -> list[DepRef]:
    """The dependencies not in their project's done/: one stat each, and at most one listing of each project's
    done/ (for timestamped copies, ``T1-….md``) however many dependencies name that project."""
    listed: dict[str, DoneIndex | None] = {}
    missing = []
    for dep in deps:
        proj = aq.project(settings.projects_dir, dep.project)
        if _is_regular(str(proj.done / (dep.task_id + d.TASK_SUFFIX))):  # the gate's rule: no symlink or dir
            continue
        if dep.project not in listed:
            listed[dep.project] = (DoneIndex({dep.project: aq.done_names(proj)}) if proj.done.is_dir() else None)
        index = listed[dep.project]
        if index is None or not index.is_done(dep):
            missing.append(dep)
    return missing


def _busy(path: str) -> bool:
    return _exists(path + d.LAUNCHING) or _exists(path + d.DISPATCHED)


def _parse(settings: Settings, path: str, project: str, st: os.stat_result) -> Checked:
    if _busy(path):
        return Checked(Verdict.BUSY, detail="a task with the same ID is still launching or dispatched")
    try:
        task = load_task(Path(path), project, settings.max_task_bytes)
    except TaskGone:
        return Checked(Verdict.STALE, detail="gone")
    except TaskFileError as exc:
        return Checked(Verdict.STALE, detail=f"invalid: {exc.reason}")
    if (task.mtime, task.size) != (st.st_mtime, st.st_size):
        return Checked(Verdict.STALE, detail="changed while read")
    missing = deps_missing(settings, task.depends_on)
    if missing:
        return Checked(Verdict.STALE, task, detail="waiting on " + ", ".join(map(str, missing)))
    return Checked(Verdict.READY, task)


def recheck(settings: Settings, entry: ReadyEntry) -> Checked:
    """Is the indexed task still on disk as indexed, free of a same-ID run, with its dependencies done?

    While its claim is in flight (``.launching``) the entry is kept: a launch that fails, or a
    claimer that dies and is recovered, gives the file back unchanged, and the entry is right again.
    """
    path = str(aq.project(settings.projects_dir, entry.project).task_path(entry.id))
    try:
        st = os.lstat(path)
    except OSError:
        if _exists(path + d.LAUNCHING):  # claimed and launching: kept in case the launch gives it back
            return Checked(Verdict.BUSY, detail="being launched")
        return Checked(Verdict.STALE, detail="gone")
    if not stat.S_ISREG(st.st_mode) or (st.st_mtime, st.st_size) != (entry.mtime, entry.size):
        return Checked(Verdict.STALE, detail="changed since it was indexed")
    if entry.has_deps:
        return _parse(settings, path, entry.project, st)
    if _busy(path):
        return Checked(Verdict.BUSY, detail="a task with the same ID is still launching or dispatched")
    # Unchanged and without dependencies: nothing to parse. The claim reads and parses what it claimed
    # (and gives it back if it changed), so this stub only has to name the file and its version.
    return Checked(Verdict.READY, Task(id=entry.id, project=entry.project, path=Path(path),
                                       priority=Priority(entry.priority), mtime=entry.mtime, size=entry.size))


def check_new(settings: Settings, project: str, path: str, *, now: float, closed: settle.Identity | None) -> Checked:
    """A file the watcher reported: settled, unmarked, parsed and gated alone — or why a full scan must judge it."""
    try:
        task_id_from_name(os.path.basename(path))
        st = os.lstat(path)
    except (OSError, TaskFileError):
        return Checked(Verdict.STALE, detail="gone")
    if not stat.S_ISREG(st.st_mode):
        return Checked(Verdict.NEEDS_SCAN, detail="not a regular file")
    ident = (st.st_ino, st.st_mtime_ns, st.st_size)
    if not is_settled(ident, now=now, settle_time=settings.settle_time, closed=closed):
        return Checked(Verdict.UNSETTLED, detail="still being written")
    if any(_exists(path + s) for s in (d.INVALID, d.BLOCKED, d.STUCK)):
        return Checked(Verdict.NEEDS_SCAN, detail="has a marker")
    checked = _parse(settings, path, project, st)
    if checked.verdict is Verdict.STALE:
        return Checked(Verdict.NEEDS_SCAN, checked.task, checked.detail)
    return checked
