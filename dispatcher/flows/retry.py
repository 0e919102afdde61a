"""``dispatcher retry``: a failed task goes back to pending; dependents stuck on it are released."""

from __future__ import annotations

from pathlib import Path

import redis

from dispatcher.core import defaults as d
from dispatcher.core.config import Settings
from dispatcher.core.errors import ClaimError
from dispatcher.core.taskfile import DepRef
from dispatcher.flows import claim as cl
from dispatcher.inbox import files as aq
from dispatcher.inbox import markers
from dispatcher.store import attempts, events


def retry_task(settings: Settings, r: redis.Redis | None, ref: str) -> Path:
    """Move ``<id>.md.failed`` back to ``<id>.md``; returns the new path."""
    if ":" not in ref:
        raise ClaimError(f"{ref!r}: give the task as project:task_id")
    dep = DepRef.parse(ref, "")
    proj = aq.project(settings.projects_dir, dep.project)
    failed = proj.task_path(dep.task_id, d.FAILED)
    if not failed.exists():
        raise ClaimError(f"{ref}: no failed task {failed.name} in {proj.inbox}")
    path = cl.retry(failed)
    markers.release_stuck_on(aq.discover_projects(settings.projects_dir, settings.projects), dep)
    if r is not None:
        attempts.forget(r, dep.project, dep.task_id)
        events.emit(r, "retried", task=str(dep))
    return path
