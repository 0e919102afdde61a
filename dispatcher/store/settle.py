"""Is a task file completely written? ("settled": a non-atomic writer may still be at it).

A file is settled when it is non-empty and either the watcher saw its writer close it
(IN_CLOSE_WRITE) or it was moved into the inbox (an atomic write) with the identity it
still has, or it has not changed for ``settle_time`` seconds. The watcher's sightings
live in Redis (one expiring key per file); the scan gets those of the files still fresh
as plain data (:func:`closed_files`).
"""

from __future__ import annotations

import logging
import math
import os
import stat
from collections.abc import Iterable
from typing import Any

import redis

from dispatcher.core import defaults as d
from dispatcher.core import keys
from dispatcher.core.listing import Identity

logger = logging.getLogger(__name__)

CLOSED_MARGIN_S = d.CLOSED_MARGIN_S


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


def record_closed(r: redis.Redis, project: str, name: str, ident: Identity, settle_time: float) -> None:
    """Remember that the writer of ``project/inbox/name`` was done when it had this identity.

    Needed only until the age rule covers the file (its mtime is at most now): it expires then.
    """
    r.set(keys.closed(project, name), ":".join(map(str, ident)), ex=math.ceil(settle_time) + CLOSED_MARGIN_S)


def closed_files(r: redis.Redis, files: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Identity]:
    """The recorded identities of these ``(project, name)`` files (one round trip; none for no files)."""
    wanted = list(files)
    if not wanted:
        return {}
    values: list[Any] = r.mget([keys.closed(p, n) for p, n in wanted])  # type: ignore[assignment]
    out: dict[tuple[str, str], Identity] = {}
    for file, value in zip(wanted, values):
        if value is None:
            continue
        text = value.decode() if isinstance(value, bytes) else str(value)
        try:
            ident = parse_identity([int(x) for x in text.split(":")])
        except ValueError:
            ident = None
        if ident is not None:
            out[file] = ident
    return out
