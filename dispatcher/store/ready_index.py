"""The ready index in Redis: per project, a sorted set of the tasks that may dispatch.

A hint, never the truth: the files are. Every full scan replaces the whole index atomically
(one MULTI); single inserts (a new file the watcher reported) go through a journal so a scan
that was listing while they happened keeps them. A claim removes its entry; an entry whose
file is gone or changed is removed by whoever finds it. ``READY_BUILT`` equals ``READY_DIRTY``
while the index is complete: a flush (both gone) or an invalidation (a dependency done) makes
the next ``assign_next`` run a full scan first, as before the index existed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from dispatcher.core import keys
from dispatcher.core.ready import ReadyEntry, decode
from dispatcher.core.taskfile import DepRef

_PREFIX = keys.ready("")
#: Members per ZADD/SADD command while a scan writes the index.
_CHUNK = 2000
#: Single inserts remembered for scans that overlap them (older ones are trimmed at each rebuild anyway).
_JOURNAL_MAX = 100_000

_CLEAR = """
for _, p in ipairs(redis.call('SMEMBERS', KEYS[1])) do redis.call('DEL', ARGV[1] .. p) end
redis.call('DEL', KEYS[1])
"""

# KEYS: journal, projects, built; ARGV: prefix, seq at scan start, dirty at scan start.
_MERGE = """
for _, item in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[2], '+inf')) do
  local nl = string.find(item, '\\n', 1, true)
  if nl then
    local p = string.sub(item, 1, nl - 1)
    redis.call('ZADD', ARGV[1] .. p, 0, string.sub(item, nl + 1))
    redis.call('SADD', KEYS[2], p)
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
redis.call('SET', KEYS[3], ARGV[3])
"""

# KEYS: journal, seq, projects; ARGV: prefix, project, member, journal cap.
_INSERT = """
local n = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[1], n, ARGV[2] .. '\\n' .. ARGV[3])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[4]) - 1)
redis.call('ZADD', ARGV[1] .. ARGV[2], 0, ARGV[3])
redis.call('SADD', KEYS[3], ARGV[2])
return n
"""

# KEYS: projects; ARGV: prefix, k, excluded projects... One string back (a tab-separated line per project:
# name, then its first k members): a reply of hundreds of items costs the client far more to parse.
_FETCH = """
local skip = {}
for i = 3, #ARGV do skip[ARGV[i]] = true end
local out = {}
for _, p in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if not skip[p] then
    local items = redis.call('ZRANGE', ARGV[1] .. p, 0, tonumber(ARGV[2]) - 1)
    if #items > 0 then out[#out + 1] = p .. '\\t' .. table.concat(items, '\\t') end
  end
end
return table.concat(out, '\\n')
"""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Ticket:
    """Where things stood when a full scan started listing: seq of single inserts, dirty counter, and the
    mtime_ns of each project's done/ (a later change there may release a blocked task)."""

    seq: int
    dirty: int
    done_mtimes: Mapping[str, int] = field(default_factory=dict)


def begin(r: redis.Redis, done_mtimes: Mapping[str, int]) -> Ticket:
    """Call before a full scan lists anything; pass the ticket to :func:`publish`."""
    seq, dirty = r.mget([keys.READY_SEQ, keys.READY_DIRTY])  # type: ignore[misc]
    return Ticket(int(seq or 0), int(dirty or 0), dict(done_mtimes))


def publish(r: redis.Redis, entries: Iterable[ReadyEntry], waits_on: Iterable[DepRef], ticket: Ticket) -> None:
    """Replace the whole index with a full scan's result, in one transaction.

    Single inserts made after ``ticket`` (files the scan may not have listed) are kept; the
    index counts as complete unless something invalidated it after ``ticket`` was taken.
    """
    by_project: dict[str, list[str]] = defaultdict(list)
    for e in entries:
        by_project[e.project].append(e.member)
    pipe = r.pipeline(transaction=True)
    pipe.eval(_CLEAR, 1, keys.READY_PROJECTS, _PREFIX)
    for project, members in by_project.items():
        for i in range(0, len(members), _CHUNK):
            pipe.zadd(keys.ready(project), dict.fromkeys(members[i:i + _CHUNK], 0))
    projects = list(by_project)
    for i in range(0, len(projects), _CHUNK):
        pipe.sadd(keys.READY_PROJECTS, *projects[i:i + _CHUNK])
    pipe.delete(keys.READY_WAITS_ON)
    awaited: dict[str, set[str]] = defaultdict(set)
    for dep in waits_on:
        awaited[dep.project].add(dep.task_id)
    if awaited:
        pipe.hset(keys.READY_WAITS_ON, mapping={
            p: " ".join([str(ticket.done_mtimes.get(p, 0)), *sorted(ids)]) for p, ids in awaited.items()})
    pipe.eval(_MERGE, 3, keys.READY_JOURNAL, keys.READY_PROJECTS, keys.READY_BUILT, _PREFIX, ticket.seq, ticket.dirty)
    pipe.execute()


def is_complete(r: redis.Redis) -> bool:
    """True when a full scan built the index and nothing invalidated it since."""
    return state(r)[0]


def state(r: redis.Redis) -> tuple[bool, dict[str, tuple[int, list[str]]]]:
    """:func:`is_complete` and :func:`awaited` in one round trip."""
    pipe = r.pipeline(transaction=False)
    pipe.mget([keys.READY_BUILT, keys.READY_DIRTY])
    pipe.hgetall(keys.READY_WAITS_ON)
    (built, dirty), raw = pipe.execute()
    return built is not None and int(built) == int(dirty or 0), _awaited(raw)


def invalidate(r: redis.Redis) -> None:
    """The index may miss tasks (a dependency is done): the next reader runs a full scan."""
    r.incr(keys.READY_DIRTY)


def insert(r: redis.Redis, entry: ReadyEntry) -> None:
    """Add one task (a new file gated alone), kept by a full scan that overlaps it."""
    r.eval(_INSERT, 3, keys.READY_JOURNAL, keys.READY_SEQ, keys.READY_PROJECTS,  # type: ignore[no-untyped-call]
           _PREFIX, entry.project, entry.member, _JOURNAL_MAX)


def remove(r: redis.Redis, entry: ReadyEntry) -> None:
    """Drop one entry (claimed, or its file is gone or changed)."""
    remove_member(r, entry.project, entry.member)


def remove_member(r: redis.Redis, project: str, member: str) -> None:
    pipe = r.pipeline(transaction=False)
    pipe.zrem(keys.ready(project), member)
    pipe.zrem(keys.READY_JOURNAL, f"{project}\n{member}")
    pipe.execute()


def heads(r: redis.Redis, k: int, exclude: Iterable[str] = ()) -> dict[str, tuple[list[str], bool]]:
    """The first ``k`` members of every project not excluded, and whether there may be more (one round trip).

    Members stay raw (``core/ready.py`` decodes them): the caller orders them by their bytes and
    decodes only those it tries.
    """
    reply = _s(r.eval(_FETCH, 1, keys.READY_PROJECTS, _PREFIX, k, *exclude))  # type: ignore[no-untyped-call]
    out: dict[str, tuple[list[str], bool]] = {}
    for line in reply.split("\n") if reply else ():
        project, *members = line.split("\t")
        out[project] = (members, len(members) >= k)
    return out


def awaited(r: redis.Redis) -> dict[str, tuple[int, list[str]]]:
    """Per project: done/'s mtime_ns as last seen, and the IDs blocked tasks wait on there."""
    return _awaited(r.hgetall(keys.READY_WAITS_ON))  # type: ignore[arg-type]


def _awaited(raw: Mapping[Any, Any]) -> dict[str, tuple[int, list[str]]]:
    out: dict[str, tuple[int, list[str]]] = {}
    for project, value in raw.items():
        mtime, *ids = _s(value).split(" ")
        try:
            out[_s(project)] = (int(mtime), ids)
        except ValueError:
            continue
    return out


def saw_done_mtime(r: redis.Redis, project: str, mtime_ns: int, ids: list[str]) -> None:
    """done/ changed but released nothing awaited: remember the new mtime (checked once per change)."""
    r.hset(keys.READY_WAITS_ON, project, " ".join([str(mtime_ns), *ids]))


def waits_on(r: redis.Redis, project: str, task_id: str) -> bool:
    """True when a blocked task (as of the last full scan) waits on ``project:task_id``."""
    value = r.hget(keys.READY_WAITS_ON, project)
    return value is not None and task_id in _s(value).split(" ")[1:]


def snapshot(r: redis.Redis) -> set[ReadyEntry]:
    """Every entry (status and tests: does the index agree with the files?)."""
    out: set[ReadyEntry] = set()
    for project in map(_s, r.smembers(keys.READY_PROJECTS)):  # type: ignore[union-attr]
        for m in r.zrange(keys.ready(project), 0, -1):  # type: ignore[union-attr]
            e = decode(project, _s(m))
            if e is not None:
                out.add(e)
    return out
