"""Validate a path reported by the watcher: ``<projects_dir>/<project>/.agent-queue/inbox/<id>.md``."""

from __future__ import annotations

import os
from pathlib import Path

from dispatcher.core import defaults as d
from dispatcher.core.errors import DispatcherError
from dispatcher.core.taskfile import is_safe_segment


class InboxPathError(DispatcherError):
    """The path is not a task file in a project inbox."""


def parse_inbox_path(projects_dir: Path, path: str) -> tuple[str, str]:
    """(project, task_id) of an inbox task path; purely lexical, nothing read from disk."""
    if not isinstance(path, str) or "\x00" in path:
        raise InboxPathError("path must be text")
    root = os.path.normpath(os.path.abspath(projects_dir))
    full = os.path.normpath(os.path.abspath(path))
    rel = os.path.relpath(full, root)
    parts = rel.split(os.sep)
    if len(parts) != 4 or parts[1] != d.QUEUE_DIR or parts[2] != d.INBOX:
        raise InboxPathError(f"{path!r} is not <project>/{d.QUEUE_DIR}/{d.INBOX}/<id>.md under {root}")
    project, name = parts[0], parts[3]
    if not name.endswith(d.TASK_SUFFIX) or name.startswith("."):
        raise InboxPathError(f"{name!r} is not a task file")
    task_id = name[: -len(d.TASK_SUFFIX)]
    if not (is_safe_segment(project) and is_safe_segment(task_id)):
        raise InboxPathError(f"unsafe project or task id in {path!r}")
    return project, task_id
