"""Small filesystem helpers shared by the inbox modules: state-suffixed names and durable directory changes."""

from __future__ import annotations

import fcntl
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


def flock_held(path: Path, *, exclusive: bool, when_unknown: bool | None = None) -> bool:
    """True while another open file holds a flock on ``path`` that conflicts with the one probed.

    ``exclusive``: probe with an exclusive lock (any holder counts) or a shared one (only an
    exclusive holder counts). A file that is missing or cannot be opened has no holder (False).
    When flock itself fails (e.g. ENOLCK on a network filesystem) the answer is ``when_unknown``,
    or the error is raised when that is None: the caller says what "cannot tell" means for it.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        if when_unknown is None:
            raise
        return when_unknown
    finally:
        os.close(fd)
    return False
