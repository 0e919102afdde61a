"""The pool-wide pause and per-project holds: the one place that reads and writes them in Redis.

A pause stops every launch until a time and says why (its cause): ``usage_limit``
(until the reset time the CLI showed), ``rate_limit`` / ``overloaded`` (what the API
said, else a backoff doubling from ``limits.rate_limit_pause`` up to
``limits.rate_limit_max_pause``), ``agent_missing`` or ``operator``. A hold stops
one project's tasks (say Claude Code does not trust its folder) while the pool
serves the other projects; it expires so a fixed project is tried again.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from dispatcher.core import defaults as d
from dispatcher.core import keys, limits
from dispatcher.core.config import LimitSettings

USAGE_LIMIT, RATE_LIMIT, OVERLOADED = limits.USAGE_LIMIT, limits.RATE_LIMIT, limits.OVERLOADED
AGENT_MISSING = "agent_missing"
OPERATOR = "operator"
CAUSES = (USAGE_LIMIT, RATE_LIMIT, OVERLOADED, AGENT_MISSING, OPERATOR)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _when(at: float) -> str:
    return "`dispatcher resume`" if math.isinf(at) else time.ctime(at)


@dataclass(frozen=True)
class Pause:
    """The pool is paused until ``until`` (``inf``: until an operator resumes it) because of ``cause``."""

    until: float
    reason: str
    cause: str

    def describe(self) -> str:
        """What status and assign_next say: ``paused by operator until …``, ``API rate limit (429: …) until …``."""
        if self.cause == OPERATOR:
            return f"paused by operator until {_when(self.until)}" + (f": {self.reason}" if self.reason else "")
        if self.cause == AGENT_MISSING:
            return f"{self.reason}; checking again at {_when(self.until)}"
        return f"{self.reason} until {_when(self.until)}"


@dataclass(frozen=True)
class Hold:
    """One project's tasks wait until ``until``: ``reason`` says why and how to fix it."""

    project: str
    reason: str
    until: float


def current(r: redis.Redis, now: float, account: str = d.ACCOUNT) -> Pause | None:
    """The pause of ``account`` in force at ``now``, or None."""
    found = stored(r, account)
    return found if found is not None and found.until > now else None


def queue_current(pipe: redis.client.Pipeline, account: str = d.ACCOUNT) -> None:
    """Queue the read of ``account``'s pause in ``pipe``; :func:`in_force` judges its reply."""
    pipe.hgetall(keys.pause(account))


def in_force(raw: Any, now: float) -> Pause | None:
    """The pause a :func:`queue_current` reply holds if it is in force at ``now``, else None."""
    found = current_from(raw or {})
    return found if found is not None and found.until > now else None


def stored(r: redis.Redis, account: str = d.ACCOUNT) -> Pause | None:
    """The pause recorded for ``account`` whatever its age (an expired one too), or None when there is none."""
    return current_from(r.hgetall(keys.pause(account)) or {})


def pause(r: redis.Redis, until: float, reason: str, cause: str, *, extend_only: bool = False,
          account: str = d.ACCOUNT) -> Pause:
    """Pause the pool until ``until``; ``extend_only`` keeps a pause that already lasts longer.

    Returns the one in force.
    """
    if cause not in CAUSES:
        raise ValueError(f"unknown pause cause {cause!r}")
    new = Pause(until, reason[:500], cause)
    fields = {"until": "inf" if math.isinf(until) else f"{until:.0f}", "reason": new.reason, "cause": cause}

    in_force: list[Pause] = []

    def write(pipe: Any) -> None:  # may run again when another writer changed the pause meanwhile
        if extend_only:
            old = current_from(pipe.hgetall(key) or {})
            if old is not None and old.until >= until:
                in_force.append(old)
                return
        pipe.multi()
        pipe.delete(key)
        pipe.hset(key, mapping=fields)
        in_force.append(new)

    key = keys.pause(account)
    r.transaction(write, key)
    return in_force[-1]


def current_from(raw: Any) -> Pause | None:
    """A Pause from the raw hash (whatever its age), or None when empty or unreadable."""
    fields = {_text(k): _text(v) for k, v in raw.items()}
    try:
        until = float(fields["until"])
    except (KeyError, ValueError):
        return None
    # A pause written before causes were recorded came from a usage limit.
    return Pause(until, fields.get("reason", ""), fields.get("cause") or USAGE_LIMIT)


def for_limit(r: redis.Redis, limit: limits.Limit, now: float, settings: LimitSettings,
              account: str = d.ACCOUNT) -> Pause:
    """Pause ``account`` for a limit an agent hit: the reset time, the API's wait, or the rate-limit backoff."""
    from dispatcher.core.screen import parse_reset

    if limit.kind == USAGE_LIMIT:
        at = parse_reset(limit.resets, datetime.fromtimestamp(now, UTC)) if limit.resets else None
        until = at.timestamp() if at is not None else now + d.USAGE_LIMIT_FALLBACK_S
        return pause(r, until, limit.describe(), USAGE_LIMIT, extend_only=True, account=account)
    held = current(r, now, account)
    if held is not None and held.cause in (RATE_LIMIT, OVERLOADED):
        return held  # the same burst, seen by another session: one step of backoff, not one per session
    if limit.retry_after is not None:
        wait = min(max(limit.retry_after, 1.0), d.RETRY_AFTER_MAX_S)
    else:
        pipe = r.pipeline(transaction=True)
        pipe.incr(keys.rate_limit_streak(account))
        pipe.expire(keys.rate_limit_streak(account), int(max(d.RATE_LIMIT_QUIET_S, 2 * settings.rate_limit_max_pause)))
        streak = int(pipe.execute()[0])
        wait = min(settings.rate_limit_pause * 2 ** min(streak - 1, 30), settings.rate_limit_max_pause)
    return pause(r, now + wait, limit.describe(), limit.kind, extend_only=True, account=account)


def backoff_step(r: redis.Redis, account: str = d.ACCOUNT) -> int:
    """Rate limits counted in a row for ``account``'s backoff (0: the next one waits the base pause)."""
    return int(r.get(keys.rate_limit_streak(account)) or 0)


def reset_backoff(r: redis.Redis, account: str = d.ACCOUNT) -> None:
    """The API works again (a task finished): the next rate limit waits the base pause."""
    r.delete(keys.rate_limit_streak(account))


def hold(r: redis.Redis, project: str, reason: str, until: float) -> Hold:
    """Hold ``project``'s tasks until ``until`` (the pool keeps serving the others)."""
    r.hset(keys.HOLDS, project, json.dumps({"until": until, "reason": reason[:1000]}))
    return Hold(project, reason[:1000], until)


def holds(r: redis.Redis, now: float) -> dict[str, Hold]:
    """Projects held at ``now`` (read only: an expired hold is ignored, and overwritten by the next one)."""
    out: dict[str, Hold] = {}
    for key, value in (r.hgetall(keys.HOLDS) or {}).items():  # type: ignore[union-attr]
        try:
            data = json.loads(_text(value))
            item = Hold(_text(key), str(data["reason"]), float(data["until"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        if item.until > now:
            out[item.project] = item
    return out


def resume(r: redis.Redis, account: str = d.ACCOUNT) -> tuple[Pause | None, list[str]]:
    """Lift ``account``'s pause and every project hold (``dispatcher resume``); returns what was lifted."""
    pipe = r.pipeline(transaction=True)
    pipe.hgetall(keys.pause(account))
    pipe.hkeys(keys.HOLDS)
    pipe.delete(keys.pause(account), keys.HOLDS)
    raw, held, _ = pipe.execute()
    return current_from(raw or {}), sorted(_text(p) for p in held or [])


def parse_until(text: str, now: float) -> float:
    """``--until`` value: a duration (``90s``, ``30m``, ``2h``, ``1d``), a clock time (``14:30``)
    or an ISO date-time."""
    value = text.strip()
    m = re.fullmatch(r"(\d{1,7})\s*([smhd])", value)
    if m:
        return now + int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", value)
    if m:
        hour, minute = int(m.group(1)), int(m.group(2))
        if hour > 23 or minute > 59:
            raise ValueError(f"{text!r} is not a time of day")
        local = datetime.fromtimestamp(now).replace(hour=hour, minute=minute, second=0, microsecond=0)
        at = local.timestamp()
        return at if at > now else at + 86400
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{text!r}: give a duration (30m, 2h), a time (14:30) or a date-time "
                         "(2026-11-28T09:00)") from None
    at = parsed.timestamp()  # a naive date-time is local time
    if at <= now:
        raise ValueError(f"{text!r} is in the past")
    return at
