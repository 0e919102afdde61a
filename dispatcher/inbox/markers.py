"""Marker files beside a task: the only module that writes, reads or removes them.

``<id>.md.blocked``  empty; its mtime is the first time the task was seen blocked (never refreshed)
``<id>.md.stuck``    why a blocked task is stuck (blocked too long, or an upstream task failed)
``<id>.md.invalid``  why the task file cannot be read (kept while the file is unchanged)
``<id>.md.failure``  why a task failed (and its last screen), beside ``<id>.md.failed``
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from dispatcher.core import defaults as d
from dispatcher.core.listing import Project, ProjectListing
from dispatcher.core.plan import Plan
from dispatcher.core.taskfile import DepRef
from dispatcher.inbox.fsio import fsync_dir, with_suffix

logger = logging.getLogger(__name__)

#: Sidecar holding the reason (and last screen) of a failed task.
FAILURE_NOTE = ".failure"
#: What a ``.stuck`` marker starts with when an upstream task failed (``retry`` releases those).
UPSTREAM_FAILED = "upstream failed"


def mark_blocked(task_path: Path) -> bool:
    """Create ``<id>.md.blocked`` once; never refresh it (its mtime is the FIRST detection)."""
    marker = with_suffix(task_path, d.BLOCKED)
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        return False
    os.close(fd)
    fsync_dir(marker.parent)
    return True


def blocked_since(task_path: Path) -> float | None:
    """When the task was first seen blocked (the ``.blocked`` marker's mtime), or None without one."""
    try:
        return os.stat(with_suffix(task_path, d.BLOCKED)).st_mtime
    except FileNotFoundError:
        return None


def write_marker(task_path: Path, suffix: str, text: str) -> Path:
    """Write ``<id>.md<suffix>`` atomically (temp + rename) with a human-readable text."""
    marker = with_suffix(task_path, suffix)
    tmp = marker.with_name(f".{marker.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text.rstrip("\n") + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.replace(tmp, marker)
    except OSError:
        os.unlink(tmp)
        raise
    fsync_dir(marker.parent)
    return marker


def read_marker(task_path: Path, suffix: str, limit: int = 64 * 1024) -> str | None:
    """Text of a marker, or None if absent."""
    marker = with_suffix(task_path, suffix)
    try:
        fd = os.open(marker, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, limit).decode("utf-8", "replace").strip()
    except OSError:  # a directory (EISDIR) or worse squatting on the marker name
        return None
    finally:
        os.close(fd)


def remove_marker(task_path: Path, suffix: str) -> bool:
    """Remove ``<id>.md<suffix>`` if present."""
    try:
        os.unlink(with_suffix(task_path, suffix))
        return True
    except FileNotFoundError:
        return False


def write_stuck(task_path: Path, text: str) -> Path:
    """Say why a blocked task is stuck (``<id>.md.stuck``)."""
    return write_marker(task_path, d.STUCK, text)


def upstream_failed(failed: Iterable[DepRef]) -> str:
    """The ``.stuck`` text of a task whose dependencies failed."""
    return f"{UPSTREAM_FAILED}: " + ", ".join(map(str, failed))


def release_stuck_on(projects: Iterable[Project], dep: DepRef) -> int:
    """Remove the ``.stuck`` markers that blame ``dep``'s failure (it is being retried); returns how many."""
    removed = 0
    for proj in projects:
        for marker in proj.inbox.glob(f"*{d.TASK_SUFFIX}{d.STUCK}"):
            text = read_marker(marker.with_name(marker.name[: -len(d.STUCK)]), d.STUCK) or ""
            if text.startswith(UPSTREAM_FAILED) and str(dep) in text:
                marker.unlink(missing_ok=True)
                removed += 1
    return removed


def write_failure(task_path: Path, note: str) -> Path:
    """Say why the task failed (``<id>.md.failure`` beside ``<id>.md.failed``)."""
    return write_marker(task_path, FAILURE_NOTE, note)


def read_failure(task_path: Path, limit: int = 64 * 1024) -> str:
    """The failure note of a task ("" without one)."""
    return read_marker(task_path, FAILURE_NOTE, limit) or ""


def read_invalid(task_path: Path) -> str | None:
    """The reason kept in ``<id>.md.invalid``, or None without one."""
    return read_marker(task_path, d.INVALID)


def _marker_op(fn: Callable[..., Any], path: Path, *args: Any) -> Any:
    """One marker write/removal; an OSError (say, a directory squatting the name) is logged, not fatal to the pass."""
    try:
        return fn(path, *args)
    except OSError as exc:
        logger.warning("%s failed for %s: %s", fn.__name__, path, exc)
        return None


def apply_plan(result: Plan, listings: list[ProjectListing]) -> None:
    """Write what the plan implies: .blocked (first detection only), .invalid, and drop stale markers.

    What changed goes to ``result.changes`` (for the event log).
    """
    present = {(s.project.name, n) for s in listings for n in s.inbox}
    for task, reason in result.blocked:
        if _marker_op(mark_blocked, task.path):
            logger.info("task %s blocked: %s", task.key, reason)
            result.changes.append(("blocked", str(task.key), reason))
    for prob in result.invalid:
        if (prob.project, prob.name + d.INVALID) in present and read_marker(prob.path, d.INVALID) == prob.reason:
            continue
        _marker_op(write_marker, prob.path, d.INVALID, prob.reason)
        logger.warning("task %s:%s invalid: %s", prob.project, prob.name, prob.reason)
        result.changes.append(("invalid", f"{prob.project}:{prob.name}", prob.reason))
    for task in result.eligible:
        # Deps arrived: the blocked/stuck markers no longer tell the truth.
        for suffix in (d.BLOCKED, d.STUCK):
            if (task.project, task.file_name + suffix) in present:
                _marker_op(remove_marker, task.path, suffix)
        if (task.project, task.file_name + d.BLOCKED) in present:
            result.changes.append(("unblocked", str(task.key), "dependencies done"))
    # An .invalid marker whose task was fixed (parsed fine this pass) goes too.
    ok_names = {(t.project, t.file_name) for t in result.eligible} | {
        (t.project, t.file_name) for t, _ in result.blocked + result.stuck + result.waiting}
    for proj, name in ok_names:
        if (proj, name + d.INVALID) in present:
            inbox = next(s.project.inbox for s in listings if s.project.name == proj)
            _marker_op(remove_marker, inbox / name, d.INVALID)
