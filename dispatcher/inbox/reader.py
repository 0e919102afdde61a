"""Read a task file safely (regular files only, no symlinks, never block on a FIFO, size cap) and parse it."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from dispatcher.core import defaults as d
from dispatcher.core.errors import TaskFileError, TaskGone
from dispatcher.core.taskfile import Task, parse_task, task_id_from_name


def read_task_bytes(path: Path | str, max_bytes: int = d.MAX_TASK_BYTES) -> tuple[bytes, float]:
    """Read a task file safely: regular files only, no symlinks, never block on a FIFO.

    Returns the bytes and the mtime of the opened file (not of whatever the path
    points to later).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TaskFileError("is a symbolic link: task files must be regular files", path=str(path)) from None
        if exc.errno == errno.ENOENT:
            raise TaskGone(f"cannot open: {exc.strerror}", path=str(path)) from None
        raise TaskFileError(f"cannot open: {exc.strerror}", path=str(path)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise TaskFileError("is not a regular file (FIFO, device or directory)", path=str(path))
        if st.st_size > max_bytes:
            raise TaskFileError(f"is {st.st_size} bytes, larger than the limit of {max_bytes}", path=str(path))
        # One read asks for the listed size + 1: getting exactly the listed size is the whole file
        # (the common case: one read, not two). Anything else (it grew, shrank or read short) reads on.
        first = os.read(fd, st.st_size + 1)
        if len(first) == st.st_size:
            return first, st.st_mtime
        chunks: list[bytes] = [first]
        remaining = max_bytes + 1 - len(first)
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            raise TaskFileError(f"grew beyond the limit of {max_bytes} bytes while being read", path=str(path))
        return data, st.st_mtime
    finally:
        os.close(fd)


def load_task(path: Path, project: str, max_bytes: int = d.MAX_TASK_BYTES, *, body: bool = True,
              name: str | None = None, text_path: str | None = None) -> Task:
    """Read and parse one inbox file ``<id>.md`` of ``project`` (``body=False``: the Task's body is left empty).

    A scan passes the file's ``name`` and the path as text (``text_path``) it already has: opening by a
    Path makes it keep its own text copy (~110 bytes per cached task in every worker).
    """
    task_id = task_id_from_name(path.name if name is None else name)
    data, mtime = read_task_bytes(path if text_path is None else text_path, max_bytes)
    try:
        return parse_task(data, task_id=task_id, project=project, path=path, mtime=mtime, body=body)
    except TaskFileError as exc:
        if exc.path is None:
            raise type(exc)(exc.reason, path=str(path), line=exc.line) from None
        raise
