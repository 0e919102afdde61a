"""Is a task file completely written? ("settled": a non-atomic writer may still be at it).

A file is settled when it is non-empty and either the watcher saw its writer close it
(IN_CLOSE_WRITE) or it was moved into the inbox (an atomic write) with the identity it
still has, or it has not changed for ``settle_time`` seconds. The watcher's sightings
live in one Redis hash; the scan gets them as plain data (:func:`closed_files`).
"""

from __future__ import annotations

import logging
import os
import stat
from typing import Any, Mapping

import redis

from . import keys

logger = logging.getLogger(__name__)

#: (inode, mtime_ns, size) of a task file: what the watcher saw when its writer was done.
Identity = tuple[int, int, int]
#: The whole hash expires when no file was closed for this long (entries are also pruned per pass).
CLOSED_TTL_S = 86400


def identity_of(path: str) -> Identity | None:
    """The identity of a regular file (lstat), or None (gone, symlink, FIFO…)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size) if stat.S_ISREG(st.st_mode) else None


def parse_identity(value: Any) -> Identity | None:
    """Validate an identity that came through a message (three non-negative ints), else None."""
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        return None
    if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in value):
        return None
    return (value[0], value[1], value[2])


def is_settled(ident: Identity, *, now: float, settle_time: float, closed: Identity | None) -> bool:
    """Non-empty, and closed by its writer as it is now, or unchanged for ``settle_time`` (pure)."""
    _inode, mtime_ns, size = ident
    return size > 0 and (closed == ident or now - mtime_ns / 1e9 >= settle_time)


def _field(project: str, name: str) -> str:
    return f"{project}/{name}"


def record_closed(r: "redis.Redis", project: str, name: str, ident: Identity) -> None:
    """Remember that the writer of ``project/inbox/name`` was done when it had this identity."""
    pipe = r.pipeline(transaction=False)
    pipe.hset(keys.CLOSED, _field(project, name), ":".join(map(str, ident)))
    pipe.expire(keys.CLOSED, CLOSED_TTL_S)
    pipe.execute()


def closed_files(r: "redis.Redis", *, now: float, settle_time: float) -> dict[tuple[str, str], Identity]:
    """The recorded sightings as ``{(project, name): identity}``; drops those the age rule now covers."""
    raw: Mapping[Any, Any] = r.hgetall(keys.CLOSED)  # type: ignore[assignment]
    out: dict[tuple[str, str], Identity] = {}
    stale: list[Any] = []
    for field, value in raw.items():
        f = field.decode() if isinstance(field, bytes) else str(field)
        v = value.decode() if isinstance(value, bytes) else str(value)
        project, _, name = f.partition("/")
        try:
            ident = parse_identity([int(x) for x in v.split(":")])
        except ValueError:
            ident = None
        # Old enough to be settled by age anyway (or garbage): the entry is no longer needed.
        if ident is None or now - ident[1] / 1e9 >= settle_time:
            stale.append(field)
            continue
        out[(project, name)] = ident
    if stale:
        r.hdel(keys.CLOSED, *stale)
    return out
