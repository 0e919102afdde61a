"""Who owns a claimed task: one record per task in Redis, naming the session (``HOST/NAME``).

Ownership of a ``.launching``/``.dispatched`` file must be provable without the
claimer's kernel (an flock on a shared filesystem proves nothing across
machines). The claimer records itself at claim time; the owning host
re-asserts its records on every heartbeat (so a FLUSHALL loses nothing); the
cluster takes back the tasks of a lost host and leaves a *tombstone* in the
record, so the host, if it returns, learns that its agent was fenced off
(it stops it instead of resuming it).
"""

from __future__ import annotations

import logging

import redis

from dispatcher.core import defaults as d
from dispatcher.core import keys

logger = logging.getLogger(__name__)

RECORD_TTL_S = d.OWNER_RECORD_TTL_S
TOMBSTONE_TTL_S = d.OWNER_TOMBSTONE_TTL_S
TOMBSTONE = "fenced:"
RELEASED = "released:"

# Keep the record if it is ours (refresh), write it if missing, else return the owner that is not us.
_CONFIRM = """
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then redis.call('EXPIRE', KEYS[1], ARGV[2]) return 'ours' end
if not cur then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) return 'reasserted' end
return cur
"""
# Turn the record into a "released" stone only while it is ours: a host that returns with a stale agent on
# this task then finds someone else's word, not an empty record it could re-assert.
_DROP = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) end
return 0
"""
# Replace the record by a tombstone only while it still names the owner we take the task from.
_FENCE = """
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def take(r: redis.Redis, project: str, task_id: str, owner: str) -> None:
    """Record ``owner`` (a session ref) for a task just claimed; replaces any stale record or tombstone."""
    r.set(keys.owner(project, task_id), owner, ex=RECORD_TTL_S)


def queue_take(pipe: redis.client.Pipeline, project: str, task_id: str, owner: str) -> None:
    """:func:`take` queued in a pipeline (the claim sends it with its slot's confirm: one round trip)."""
    pipe.set(keys.owner(project, task_id), owner, ex=RECORD_TTL_S)


def get(r: redis.Redis, project: str, task_id: str) -> str | None:
    """The owner of a task, a tombstone (``fenced:…``), or None."""
    value = r.get(keys.owner(project, task_id))
    return None if value is None else _text(value)


def get_many(r: redis.Redis, tasks: list[tuple[str, str]]) -> dict[tuple[str, str], str | None]:
    """Owners of many tasks in one round trip."""
    if not tasks:
        return {}
    values = r.mget([keys.owner(p, t) for p, t in tasks])
    return {pt: (None if v is None else _text(v)) for pt, v in zip(tasks, values)}


def confirm(r: redis.Redis, project: str, task_id: str, owner: str) -> str | None:
    """Keep (or, after a flush, re-assert) ``owner``'s record; the *other* owner when it is not ours, else None."""
    result = _text(r.eval(_CONFIRM, 1, keys.owner(project, task_id), owner, RECORD_TTL_S))
    if result == "reasserted":
        logger.info("owner record of %s:%s re-asserted by %s", project, task_id, owner)
        return None
    return None if result == "ours" else result


def queue_drop(pipe: redis.client.Pipeline, project: str, task_id: str, owner: str) -> None:
    """``owner`` released, finished or failed the task: its record becomes a ``released:`` stone (queued in a
    pipeline, with the running slot's drop: one round trip)."""
    pipe.eval(_DROP, 1, keys.owner(project, task_id), owner, f"{RELEASED}{owner}", TOMBSTONE_TTL_S)


def fence(r: redis.Redis, project: str, task_id: str, owner: str | None, why: str) -> bool:
    """Take a task from ``owner`` (the record as last read; None: none): True when the tombstone was written.

    Compare-and-set: a record that changed since it was read (its owner re-asserted it) is left alone.
    """
    stone = f"{TOMBSTONE}{owner or '?'}: {why}"
    return bool(r.eval(_FENCE, 1, keys.owner(project, task_id), owner or "", stone, TOMBSTONE_TTL_S)) if owner \
        else bool(r.set(keys.owner(project, task_id), stone, ex=TOMBSTONE_TTL_S, nx=True))


def host_of(owner: str | None) -> str | None:
    """The host part of an owner record (None for a tombstone or no record)."""
    if not owner or is_stone(owner) or "/" not in owner:
        return None
    return owner.split("/", 1)[0]


def is_stone(record: str | None) -> bool:
    """True for a record that names no current owner (fenced off, or released)."""
    return bool(record) and record.startswith((TOMBSTONE, RELEASED))  # type: ignore[union-attr]
