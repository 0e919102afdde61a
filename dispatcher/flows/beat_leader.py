"""One beat in the cluster: ``celery beat -S dispatcher.flows.beat_leader:LeaderScheduler``.

``dispatcher up`` may run on every host, each with a beat. Only the holder of
a Redis lease (``keys.BEAT_LEADER``) sends scheduled tasks; the others stand
by and take over within ``LEASE_S`` when the leader dies.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from celery.beat import PersistentScheduler

from dispatcher.core import defaults as d
from dispatcher.core import keys
from dispatcher.flows import runtime
from dispatcher.store import redis_conn

logger = logging.getLogger(__name__)

LEASE_S = d.BEAT_LEASE_S

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaderScheduler(PersistentScheduler):
    """A PersistentScheduler that ticks only while it holds the cluster's beat lease."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._me = f"{socket.gethostname()}:{os.getpid()}"
        self._leading = False
        self._r = redis_conn.client(settings=runtime.settings())
        super().__init__(*args, **kwargs)

    def _lead(self) -> bool:
        ttl_ms = int(LEASE_S * 1000)
        try:
            if self._leading and self._r.eval(_RENEW, 1, keys.BEAT_LEADER, self._me, ttl_ms):
                return True
            got = bool(self._r.set(keys.BEAT_LEADER, self._me, nx=True, px=ttl_ms))
        except Exception as exc:  # Redis away: stop sending until we hold the lease again
            logger.warning("beat lease check failed: %s", exc)
            got = False
        if got != self._leading:
            logger.warning("beat %s: %s", self._me,
                           "now the cluster's beat" if got else "standing by (another beat leads)")
        self._leading = got
        return got

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self._lead():
            return LEASE_S / 3
        return min(float(super().tick(*args, **kwargs)), LEASE_S / 3)

    def close(self) -> None:
        if self._leading:
            try:
                self._r.eval(_RELEASE, 1, keys.BEAT_LEADER, self._me)
            except Exception as exc:
                logger.warning("beat lease not released: %s", exc)
        super().close()
