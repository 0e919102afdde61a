"""What the pre-warming of agents remembers in Redis: recent (project, priority) pairs, and failed warm starts.

Hints only: losing them (a flush) means a cold launch or a warm start retried, never a wrong one.
"""

from __future__ import annotations

import redis

from dispatcher.core import keys

#: Pairs kept per host (the newest): more than a pool has sessions to warm.
RECENT_KEPT = 16


def remember(r: redis.Redis, host: str, project: str, priority: str, now: float) -> None:
    """A task of ``project`` at ``priority`` was dispatched on ``host`` at ``now``."""
    key = keys.warm_recent(host)
    pipe = r.pipeline(transaction=False)
    pipe.zadd(key, {f"{project} {priority}": now})
    pipe.zremrangebyrank(key, 0, -RECENT_KEPT - 1)
    pipe.execute()


def recent(r: redis.Redis, host: str) -> list[tuple[str, str]]:
    """(project, priority) pairs dispatched on ``host``, newest first."""
    out = []
    for raw in r.zrevrange(keys.warm_recent(host), 0, RECENT_KEPT - 1):
        member = raw.decode() if isinstance(raw, bytes) else str(raw)
        project, _, priority = member.partition(" ")
        if project and priority:
            out.append((project, priority))
    return out


def back_off(r: redis.Redis, session: str, seconds: float) -> None:
    """No warm start in ``session`` (``HOST/NAME``) for ``seconds`` (the last one failed)."""
    r.set(keys.warm_backoff(session), "1", px=max(1, int(seconds * 1000)))


def backing_off(r: redis.Redis, session: str) -> bool:
    return bool(r.exists(keys.warm_backoff(session)))
