"""Watchdog G1: a task blocked longer than ``blocked_timeout`` — or whose upstream failed — is stuck.

The ``.blocked`` marker's mtime is the first detection (never refreshed), so
the timeout counts from then. ``.stuck`` names the missing deps; both markers
go away by themselves when the deps arrive (markers.apply_plan).
"""

from __future__ import annotations

import logging

import redis

from dispatcher.core.config import Settings
from dispatcher.core.plan import plan
from dispatcher.core.taskfile import DepRef
from dispatcher.inbox import markers
from dispatcher.inbox.scanner import read_inboxes
from dispatcher.store import events

logger = logging.getLogger(__name__)


def _failed_deps(missing: tuple[DepRef, ...], failed: set[tuple[str, str]]) -> list[DepRef]:
    return [dep for dep in missing if (dep.project, dep.task_id) in failed]


def check_blocked(settings: Settings, r: redis.Redis, *, now: float) -> list[str]:
    """Write ``.stuck`` where due; returns the tasks newly stuck."""
    listings, loaded = read_inboxes(settings)
    result = plan(listings, loaded, now=now, incomplete_grace=settings.incomplete_grace,
                  settle_time=settings.settle_time)
    failed = set(result.in_flight.get("failed", []))
    newly: list[str] = []
    for task, reason in result.blocked:
        gate = result.unmet.get(task.key)
        upstream = _failed_deps(gate.missing if gate else (), failed)
        if upstream:
            text = markers.upstream_failed(upstream)
        else:
            markers.mark_blocked(task.path)
            since = markers.blocked_since(task.path)
            if since is None:
                continue
            if now - since < settings.blocked_timeout:
                continue
            text = f"blocked for {int(now - since)}s (> {int(settings.blocked_timeout)}s): {reason}"
        markers.write_stuck(task.path, text)
        events.announce(r, task.project, task.id, str(task.path))  # may be its first state
        events.emit(r, "stuck", task=str(task.key), detail=text, now=now)
        newly.append(f"{task.key}: {text}")
    return newly
