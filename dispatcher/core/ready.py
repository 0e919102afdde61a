"""Entries of the ready index (pure): one eligible task as a sortable string, and back.

A member is ``<rank><mtime as 16 sortable hex digits><id> <size> <deps>`` (``deps``: 1 when the
task has dependencies, so only those are parsed again before a claim): Redis orders the members
of a project's sorted set (all scores 0) byte-wise, which is then (rank, mtime, id) — the
order of that project's queue in ``ordering.round_robin``. The space sorts before every
character an ID may hold, so ``T1`` comes before ``T10`` as in Python. The mtime is the
float's exact bits, so the entry's (mtime, size) compares exactly with a later ``stat``
(the check that the file did not change since it was indexed).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from dispatcher.core import defaults as d
from dispatcher.core.ordering import round_robin
from dispatcher.core.taskfile import Task, is_safe_segment

_SIGN = 1 << 63
_MASK = (1 << 64) - 1


def _sortable(x: float) -> str:
    """16 hex digits whose byte order is the numeric order of ``x`` (IEEE 754 trick)."""
    (u,) = struct.unpack(">Q", struct.pack(">d", x))
    u = u | _SIGN if not u & _SIGN else ~u & _MASK
    return f"{u:016x}"


def _unsortable(h: str) -> float:
    u = int(h, 16)
    u = u & ~_SIGN if u & _SIGN else ~u & _MASK
    return float(struct.unpack(">d", struct.pack(">Q", u))[0])


@dataclass(frozen=True)
class ReadyEntry:
    """One indexed task: enough to order it and to re-check its file before a claim."""

    project: str
    id: str
    rank: int
    mtime: float
    size: int
    has_deps: bool = False

    @property
    def member(self) -> str:
        return encode(self.rank, self.mtime, self.id, self.size, self.has_deps)

    @property
    def priority(self) -> str:
        return d.PRIORITIES[self.rank]


def encode(rank: int, mtime: float, task_id: str, size: int, has_deps: bool = False) -> str:
    return f"{rank}{_sortable(mtime)}{task_id} {size} {int(has_deps)}"


def entry_of(task: Task) -> ReadyEntry:
    return ReadyEntry(task.project, task.id, task.priority.rank, task.mtime, task.size, bool(task.depends_on))


def decode(project: str, member: str) -> ReadyEntry | None:
    """The entry of a member, or None when it is malformed (Redis is outside: validate)."""
    try:
        head, size, deps = member.rsplit(" ", 2)
        rank, task_id = int(head[0]), head[17:]
        if not 0 <= rank < len(d.PRIORITIES) or not is_safe_segment(task_id) or deps not in ("0", "1"):
            return None
        return ReadyEntry(project, task_id, rank, _unsortable(head[1:17]), int(size), deps == "1")
    except (ValueError, IndexError, struct.error):
        return None


def in_order(entries: Iterable[ReadyEntry]) -> list[ReadyEntry]:
    """Entries in dispatch order (the same rule as ``order_tasks``)."""
    return round_robin(entries, rank=lambda e: e.rank, project=lambda e: e.project, age=lambda e: (e.mtime, e.id))


def members_in_order(members: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """``(project, member)`` pairs in dispatch order without decoding them: the member's first 17
    characters sort as (rank, mtime) do, and the ID follows (malformed members sort somewhere; decode refuses them)."""
    return round_robin(members, rank=lambda m: ord(m[1][0]) if m[1] else 0, project=lambda m: m[0],
                       age=lambda m: (m[1][1:17], m[1][17:].partition(" ")[0]))
