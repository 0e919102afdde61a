"""Every Redis key the dispatcher uses, built in one place.

Redis holds only what one full scan can rebuild (design §1): locks, session
states, hook reports and the event stream. Losing it loses no task.
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "aq:"

#: Capped stream of every state change (``dispatcher events``).
EVENTS: Final = PREFIX + "events"
EVENTS_MAXLEN: Final = 10_000
#: Hash: pool-wide pause — fields ``until`` (epoch s or ``inf``), ``reason``, ``cause`` (see pause.py).
PAUSE: Final = PREFIX + "pause"
#: Counter of consecutive API rate limits (backoff step); deleted when a task finishes.
RATE_LIMIT_STREAK: Final = PREFIX + "rate-limit-streak"
#: Hash: project → JSON ``{until, reason}`` of projects whose tasks are held (e.g. folder not trusted).
HOLDS: Final = PREFIX + "holds"
#: Set while a full_scan requested by an inbox event is queued: at most one at a time.
SCAN_PENDING: Final = PREFIX + "scan-pending"
#: Set while a full_scan is scheduled for when a file still being written settles.
SETTLE_SCAN: Final = PREFIX + "settle-scan"
#: Host-wide lock serialising agent start-up (Claude's ~/.claude.json breaks on parallel starts).
STARTUP_LOCK: Final = PREFIX + "lock:startup"


def session_lock(session: str) -> str:
    """Lock held by the worker that is launching into ``session``."""
    return f"{PREFIX}lock:session:{session}"


def session_state(session: str) -> str:
    """Hash with the state of one pool session (state, task, project, model, since, …)."""
    return f"{PREFIX}session:{session}"


def session_hooks(session: str) -> str:
    """Capped stream of Claude Code hook reports for one pool session."""
    return f"{PREFIX}hooks:{session}"


HOOKS_MAXLEN: Final = 1_000


def attempts(project: str, task_id: str) -> str:
    """Counter of failed launch attempts of one task (bounded retries, then .failed)."""
    return f"{PREFIX}attempts:{project}:{task_id}"


def seen(project: str, task_id: str, version: int) -> str:
    """Marks one version (inode) of a task file as announced ("submitted" event once)."""
    return f"{PREFIX}seen:{project}:{task_id}:{version}"


def assign_pending(session: str) -> str:
    """Set while an ``assign_next(session)`` message is queued: at most one per session."""
    return f"{PREFIX}assign-pending:{session}"

#: Hash: host → JSON heartbeat (``last_seen`` epoch s, …) of each dispatcher host (read by ``dispatcher doctor``).
HOSTS: Final = PREFIX + "hosts"


def notify_window(kind: str, minute: int) -> str:
    """Counter of notifications sent for event ``kind`` in one minute (rate limit)."""
    return f"{PREFIX}notify:{kind}:{minute}"


def closed(project: str, name: str) -> str:
    """``inode:mtime_ns:size`` of ``<project>/inbox/<name>`` when the watcher saw its writer finish."""
    return f"{PREFIX}closed:{project}:{name}"
