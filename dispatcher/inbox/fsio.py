"""Small filesystem helpers shared by the inbox modules: state-suffixed names and durable directory changes."""

from __future__ import annotations

import os
from pathlib import Path

from dispatcher.core import defaults as d

#: States of a task file in inbox/, by suffix after ``<id>.md``.
STATE_SUFFIXES = (d.LAUNCHING, d.DISPATCHED, d.FAILED)


def with_suffix(task_path: Path, suffix: str) -> Path:
    """``inbox/<id>.md`` + suffix (``.blocked``, ``.launching``…); a state suffix already there is replaced."""
    base = task_path.name
    for s in STATE_SUFFIXES:
        if base.endswith(s):
            base = base[: -len(s)]
    return task_path.with_name(base + suffix)


def fsync_dir(path: Path) -> None:
    """Make a rename/create in ``path`` durable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories; nothing more to do
        pass
    finally:
        os.close(fd)
