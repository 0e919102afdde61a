"""Failed attempts of a task (launch failure, agent death, take-back): bounded retries, then ``.failed``.

The one owner of the counter: dispatch, the monitor, recovery and ``retry`` all go through here.
"""

from __future__ import annotations

import redis

from dispatcher.core import keys

#: Failed-attempt counters are forgotten after a week without failures.
ATTEMPTS_TTL_S = 7 * 86400


def count(r: redis.Redis, project: str, task_id: str) -> int:
    """One more failed attempt of a task; the count so far (the week-long TTL restarts with each)."""
    key = keys.attempts(project, task_id)
    pipe = r.pipeline(transaction=True)
    pipe.incr(key)
    pipe.expire(key, ATTEMPTS_TTL_S)
    return int(pipe.execute()[0])


def forget(r: redis.Redis, project: str, task_id: str) -> None:
    """The task launched, failed for good, or was retried by hand: its next failure is the first again."""
    r.delete(keys.attempts(project, task_id))
