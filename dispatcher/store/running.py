"""Each project's running tasks in Redis: the count ``max_parallel`` is checked against (one hash per project).

The files stay the truth (a task runs while its file is ``.launching`` or ``.dispatched``);
this hash lets a claim count without listing the inbox. ``aq:running:<project>`` holds:

- the **sentinel** field ``.``: present iff the hash was built from the files. A hash is one
  key, so a FLUSHALL or an eviction loses sentinel and members together, and a hash
  without it is rebuilt from one listing (:func:`rebuild`) before anyone counts on it;
- one field per task id, valued ``c:<nonce>:<owner>`` once its claim is **confirmed** (its
  file was renamed; owner ``?`` when rebuilt from a file whose owner record was lost), else
  ``r:<ms>:<owner>``, a **reservation** (a claim between its count and its rename) made at
  the Redis server's time ``ms``. The nonce is new for every entry written, so a value names
  one entry for good: a prune compares the value it read (compare-and-delete) and cannot
  remove a later claim of the same task that happens to have the same owner (an ABA that a
  racing flush and rebuild made real: two claims then ran past a limit of 2). A drop removes
  only its owner's confirmed entry; an entry of unknown owner (``?``) is never dropped by
  name, only pruned by a claimer that saw its file not running.

The protocol (flows/claim.py drives it; docs/decisions.md "Running count without a
listing" argues it): reserve (count < limit, atomically) → rename → confirm (atomically:
still our reservation, or room among the *others*) — a claim keeps its file only after a
successful confirm. Entries leave after their file left the running states; an entry whose
file is gone is pruned by the claimer that finds the project full (a young reservation is
left alone: its claimer may be between reserve and rename). Times are Redis's own
(``TIME``), so hosts' clocks do not matter.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from dispatcher.core import keys

SENTINEL = "."
SCAN_MARKER_TTL_S = 3600  # longer than any full scan: an expired marker only skips building
CONFIRMED = "c:"
RESERVED = "r:"
UNKNOWN_OWNER = "?"

_NOW_MS = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

# KEYS[1] the hash; ARGV[1] task id, ARGV[2] limit (0: none), ARGV[3] owner.
# -> {'rebuild'} | {'ok', token} | {'full', now, field, value, field, value...}: full also when the task has an
# entry already (running, being claimed by another worker, or stale): never overwritten, the claimer judges it.
_RESERVE = _NOW_MS + """
if redis.call('HEXISTS', KEYS[1], '.') == 0 then return {'rebuild'} end
local limit = tonumber(ARGV[2])
local n = redis.call('HLEN', KEYS[1]) - 1
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or (limit > 0 and n >= limit) then
  local out = {'full', tostring(now)}
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all do out[#out + 1] = all[i] end
  return out
end
local token = 'r:' .. tostring(now) .. ':' .. ARGV[3]
redis.call('HSET', KEYS[1], ARGV[1], token)
return {'ok', token}
"""
# KEYS[1]; ARGV[1] task id, ARGV[2] the reservation's token, ARGV[3] limit, ARGV[4] the confirmed value.
# -> 'ok' | 'full' | 'rebuild'. Still our reservation: confirmed. Lost (pruned, rebuilt, or replaced by a
# racing claimer of the same task): the claim counts again among the others, atomically, as a reserve would.
_CONFIRM = """
if redis.call('HEXISTS', KEYS[1], '.') == 0 then return 'rebuild' end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur ~= ARGV[2] then
  local limit = tonumber(ARGV[3])
  local n = redis.call('HLEN', KEYS[1]) - 1
  if cur then n = n - 1 end
  if limit > 0 and n >= limit then return 'full' end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
return 'ok'
"""
# KEYS[1]; ARGV: field, value, field, value... of the files that run now. Only when no sentinel: the first
# rebuild wins (every rebuild lists after the loss was seen, so any of them is complete).
_REBUILD = """
if redis.call('HEXISTS', KEYS[1], '.') == 1 then return 0 end
redis.call('HSET', KEYS[1], '.', '')
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""
# KEYS[1]; ARGV: field, value, field, value... Removes each field only while it still has that value.
_PRUNE = """
local n = 0
for i = 1, #ARGV, 2 do
  if ARGV[i] ~= '.' and redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i]) n = n + 1
  end
end
return n
"""
# KEYS[1]; ARGV[1] task id, ARGV[2] owner: removes the task's confirmed entry only if it names that owner.
_DROP = """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and string.match(v, '^c:[^:]*:(.*)$') == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""
# KEYS[1]; ARGV[1] field, ARGV[2] value: a file that runs for a known owner outside a claim (set only in a built hash).
_SET = """
if redis.call('HEXISTS', KEYS[1], '.') == 0 then return 0 end
return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
"""
# KEYS[1] the hash, KEYS[2] the scan's marker; ARGV: field, value... of the files the scan saw running.
_AFTER_SCAN = """
if redis.call('HEXISTS', KEYS[1], '.') == 0 then
  if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
  redis.call('HSET', KEYS[1], '.', '')
end
local n = 0
for i = 1, #ARGV, 2 do n = n + redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) end
return n
"""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def confirmed(owner: str) -> str:
    """A new confirmed entry's value for ``owner`` (``?``: unknown), unique: see the module's docstring."""
    return f"{CONFIRMED}{uuid.uuid4().hex[:12]}:{owner}"


def owner_of(value: str) -> str | None:
    """The owner a confirmed value names (``?`` when unknown); None for a reservation or junk."""
    if not value.startswith(CONFIRMED):
        return None
    _nonce, sep, owner = value[len(CONFIRMED):].partition(":")
    return owner if sep else None


@dataclass(frozen=True)
class Reserve:
    """What :func:`reserve` answered: ``ok`` (with the token), ``full`` (with every entry and the server's now),
    or ``rebuild`` (the hash was never built, or lost)."""

    status: str
    token: str = ""
    now_ms: int = 0
    entries: tuple[tuple[str, str], ...] = ()  # (task id, value) of every field but the sentinel


def reserved_at(value: str) -> int | None:
    """The server time (ms) of a reservation's value; None for a confirmed entry (or junk)."""
    if not value.startswith(RESERVED):
        return None
    try:
        return int(value[len(RESERVED):].split(":", 1)[0])
    except ValueError:
        return None


def reserve(r: redis.Redis, project: str, task_id: str, limit: int, owner: str) -> Reserve:
    """Take a slot of ``project`` for ``task_id`` (claimed by session ``owner``) unless ``limit`` (0: none)
    entries exist or ``task_id`` has one already (``full`` then, with every entry to judge)."""
    reply = [_text(v) for v in r.eval(_RESERVE, 1, keys.running(project), task_id, limit, owner)]
    if reply[0] == "ok":
        return Reserve("ok", token=reply[1])
    if reply[0] == "full":
        rest = reply[2:]
        entries = tuple((rest[i], rest[i + 1]) for i in range(0, len(rest) - 1, 2) if rest[i] != SENTINEL)
        return Reserve("full", now_ms=int(float(reply[1])), entries=entries)
    return Reserve("rebuild")


def queue_confirm(pipe: redis.client.Pipeline, project: str, task_id: str, token: str, limit: int,
                  owner: str) -> None:
    """Queue the confirm of a renamed claim in ``pipe``; its reply: ``ok``, ``full`` (give the file back) or
    ``rebuild`` (the hash was lost: rebuild, then confirm again)."""
    pipe.eval(_CONFIRM, 1, keys.running(project), task_id, token, limit, confirmed(owner))


def rebuild(r: redis.Redis, project: str, running_ids: Sequence[str]) -> bool:
    """Build a lost hash from the ids whose files run now, listed *after* the loss was seen; each entry names
    its owner record's session when one is left. False if someone rebuilt it first."""
    ids = list(running_ids)
    recorded = r.mget([keys.owner(project, t) for t in ids]) if ids else []
    args: list[str] = []
    for task_id, rec in zip(ids, recorded):
        who = _text(rec) if rec is not None else ""
        if not who or who.startswith(("fenced:", "released:")):
            who = UNKNOWN_OWNER
        args += [task_id, confirmed(who)]
    return bool(r.eval(_REBUILD, 1, keys.running(project), *args))


def prune(r: redis.Redis, project: str, entries: Sequence[tuple[str, str]]) -> int:
    """Remove entries (task id, value as read) whose file does not run, each only while its value is unchanged."""
    if not entries:
        return 0
    return int(r.eval(_PRUNE, 1, keys.running(project), *[x for pair in entries for x in pair]))


def unreserve(r: redis.Redis, project: str, task_id: str, token: str) -> None:
    """A claim whose rename failed gives its reservation back (unless another claimer's replaced it)."""
    prune(r, project, [(task_id, token)])


def queue_drop(pipe: redis.client.Pipeline, project: str, task_id: str, owner: str | None) -> None:
    """Queue the drop of the slot ``owner`` held for ``task_id``, after its file left the running states: only a
    confirmed entry naming that owner goes. None (owner unknown), or an entry of unknown owner (rebuilt after a
    flush): nothing is dropped by name — it may be another claim's of the same task by now — and the entry stays
    until a claimer that finds the project full sees its file not running and prunes it (a count too high for a
    moment, never too low)."""
    if owner:
        pipe.eval(_DROP, 1, keys.running(project), task_id, owner)


def set_owner(r: redis.Redis, project: str, task_id: str, owner: str) -> None:
    """A file that runs for ``owner`` outside a claim (an adopted launch; done/ back to ``.dispatched``): its
    entry names ``owner`` (replacing a dead claimer's reservation). Nobody else can claim a file that is not
    pending, so no other claim's entry is overwritten."""
    r.eval(_SET, 1, keys.running(project), task_id, confirmed(owner))


def begin_scan(r: redis.Redis) -> str:
    """Before a full scan lists anything: a marker key that a FLUSHALL removes. Its presence when the scan
    writes (:func:`after_scan`) proves Redis lost nothing since, so a hash missing then was lost *before* the
    listing, which is therefore complete for it (the rule of :func:`rebuild`)."""
    token = uuid.uuid4().hex
    r.set(keys.running_scan(token), "1", ex=SCAN_MARKER_TTL_S)
    return token


def after_scan(r: redis.Redis, token: str, seen: dict[str, list[str]]) -> int:
    """The scan's repair, from its listing (``seen``: every scanned project → ids whose files run):

    - a built hash gets the ids it misses (a file moved by hand), as ``c:?``; extra entries are the claimers' to
      prune, from an lstat, not from this older listing;
    - a missing hash is built from the listing while the marker of :func:`begin_scan` is still there (so the
      first claim of a project after a start or a flush does not list its inbox itself).
    """
    pipe = r.pipeline(transaction=False)
    marker = keys.running_scan(token)
    for project, ids in seen.items():
        args = [x for t in ids for x in (t, confirmed(UNKNOWN_OWNER))]
        pipe.eval(_AFTER_SCAN, 2, keys.running(project), marker, *args)
    pipe.delete(marker)
    return sum(int(n) for n in pipe.execute()[:-1])


def entries(r: redis.Redis, project: str) -> dict[str, str] | None:
    """Every entry (task id → ``c:<owner>`` or the reservation's value, nonces left out); None when the hash is
    not built. For tests and the doctor."""
    raw = {_text(k): _text(v) for k, v in r.hgetall(keys.running(project)).items()}
    if SENTINEL not in raw:
        return None
    del raw[SENTINEL]
    out = {}
    for task_id, value in raw.items():
        owner = owner_of(value)
        out[task_id] = value if owner is None else CONFIRMED + owner
    return out
