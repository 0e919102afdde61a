"""Redis locks with TTL, token-checked release and renewal while held (redis-py ``Lock``).

The per-session lock makes "one task per session" hold across workers and hosts: the
worker launching into (or resuming) a session holds it (through flows/claim.py, which
owns the claim of a task), and recovery leaves a session alone while it is held. This
module owns its key. The launcher renews the host's start-up lock with :class:`Held` too.
A lost lock is an event, not a crash.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence

import redis
from redis.exceptions import LockError as RedisLockError
from redis.lock import Lock

from dispatcher.core import keys

logger = logging.getLogger(__name__)


class Held:
    """A lock we hold, renewed every ``ttl/3`` s by a daemon thread until released."""

    def __init__(self, lock: Lock, ttl: float) -> None:
        self.lock = lock
        self.ttl = ttl
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"renew {lock.name}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                self.lock.reacquire()
            except (RedisLockError, redis.RedisError):
                logger.warning("lock %s lost while held", self.lock.name)
                self.lost.set()
                return

    def release(self) -> None:
        """Stop renewing and release (a lock already expired or taken over is only logged)."""
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.lock.release()
        except (RedisLockError, redis.RedisError) as exc:
            logger.warning("lock %s was not ours any more at release: %s", self.lock.name, exc)


# The lock (SET NX PX, redis-py Lock's own acquire) and who holds it, for people and for recovery (the lock
# value stays the token), in one round trip.
_ACQUIRE = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[2]) end
return 1
"""


def try_acquire(r: redis.Redis, key: str, ttl: float, owner: str = "") -> Held | None:
    """Take ``key`` without waiting; None if someone else holds it."""
    lock = r.lock(key, timeout=ttl, blocking=False, thread_local=False)
    token = uuid.uuid1().hex.encode()  # as Lock.acquire makes it: release/reacquire compare it
    if not r.eval(_ACQUIRE, 2, key, key + ":owner", token, int(ttl * 1000), owner):  # type: ignore[no-untyped-call]
        return None
    lock.local.token = token
    return Held(lock, ttl)


def is_held(r: redis.Redis, key: str) -> bool:
    """True while some live holder keeps ``key``."""
    return bool(r.exists(key))


# The per-session lock (``HOST/NAME``): held by the worker launching into or resuming that session.

def try_lock_session(r: redis.Redis, session: str, ttl: float, owner: str = "") -> Held | None:
    """Take ``session``'s lock without waiting; None if another worker holds it."""
    return try_acquire(r, keys.session_lock(session), ttl, owner)


def session_locked(r: redis.Redis, session: str) -> bool:
    """True while some worker holds ``session``'s lock."""
    return is_held(r, keys.session_lock(session))


def sessions_locked(r: redis.Redis, sessions: Sequence[str]) -> list[bool]:
    """:func:`session_locked` for many sessions (in order) in one round trip."""
    pipe = r.pipeline(transaction=False)
    for session in sessions:
        pipe.exists(keys.session_lock(session))
    return [bool(n) for n in pipe.execute()]
