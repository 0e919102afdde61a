"""What one pass sees of a project's queue: the project, its inbox entries, its done/ names (pure values).

The filesystem adapter (:mod:`dispatcher.inbox.files`) builds these from one
directory listing per project; the plan (:mod:`dispatcher.core.plan`) decides
over them without touching the disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from dispatcher.core import defaults as d
from dispatcher.core.taskfile import check_segment

#: (inode, mtime_ns, size) of a task file: what the watcher saw when its writer was done.
Identity = tuple[int, int, int]


@dataclass(frozen=True)
class Project:
    """One project directory holding ``.agent-queue/{inbox,done}`` (paths only: nothing is touched)."""

    name: str
    root: Path

    @property
    def inbox(self) -> Path:
        return self.root / d.QUEUE_DIR / d.INBOX

    @property
    def done(self) -> Path:
        return self.root / d.QUEUE_DIR / d.DONE

    def task_path(self, task_id: str, suffix: str = "") -> Path:
        """Path of ``inbox/<id>.md<suffix>``; the ID is validated first."""
        return self.inbox / (check_segment(task_id, "task id") + d.TASK_SUFFIX + suffix)


class Entry(NamedTuple):
    """One file of inbox/ as listed (lstat: a symlink is seen as a symlink).

    A named tuple, not a dataclass: a scan makes one per inbox file and a frozen dataclass
    costs several times more to build.
    """

    name: str
    mtime: float
    size: int
    regular: bool
    inode: int
    mtime_ns: int = 0
    ctime_ns: int = 0

    @property
    def version(self) -> Identity:
        """(inode, mtime_ns, size): what the watcher records when a writer is done."""
        return (self.inode, self.mtime_ns, self.size)

    @property
    def identity(self) -> tuple[int, int, int, int]:
        """Changes whenever the file is replaced, edited or re-linked (parse-cache key)."""
        return (self.inode, self.mtime_ns, self.ctime_ns, self.size)


@dataclass(frozen=True)
class ProjectListing:
    """One listing of a project's inbox/ (name → entry) and done/ (finished task file names)."""

    project: Project
    inbox: dict[str, Entry]
    done: tuple[str, ...]


def is_settled(ident: Identity, *, now: float, settle_time: float, closed: Identity | None) -> bool:
    """Non-empty, and closed by its writer as it is now, or unchanged for ``settle_time``."""
    _inode, mtime_ns, size = ident
    return size > 0 and (closed == ident or now - mtime_ns / 1e9 >= settle_time)
