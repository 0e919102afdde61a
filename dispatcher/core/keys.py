"""Every Redis key the dispatcher uses, built in one place.

Redis holds only what one full scan can rebuild (design §1): locks, session
states, hook reports and the event stream. Losing it loses no task.
"""

from __future__ import annotations

import hashlib
from typing import Final

PREFIX: Final = "aq:"

#: Capped stream of every state change (``dispatcher events``).
EVENTS: Final = PREFIX + "events"
EVENTS_MAXLEN: Final = 10_000
#: Hash: pool-wide pause — fields ``until`` (epoch s or ``inf``), ``reason``, ``cause`` (see pause.py).
PAUSE: Final = PREFIX + "pause"
#: Hash: host name → JSON heartbeat (fingerprint, account, sessions, last_seen, version).
HOSTS: Final = PREFIX + "hosts"
#: Lease of the one beat that schedules for the whole cluster.
BEAT_LEADER: Final = PREFIX + "lock:beat"
#: Counter of consecutive API rate limits (backoff step); deleted when a task finishes.
RATE_LIMIT_STREAK: Final = PREFIX + "rate-limit-streak"


def pause(account: str) -> str:
    """The pause of one Claude account (limits are per account): ``PAUSE`` for the default one."""
    return PAUSE if account == "default" else f"{PAUSE}:{account}"


def rate_limit_streak(account: str) -> str:
    """Backoff step of one account's rate limits."""
    return RATE_LIMIT_STREAK if account == "default" else f"{RATE_LIMIT_STREAK}:{account}"
#: Hash: project → JSON ``{until, reason}`` of projects whose tasks are held (e.g. folder not trusted).
HOLDS: Final = PREFIX + "holds"
#: Set while a full_scan requested by an inbox event is queued: at most one at a time.
SCAN_PENDING: Final = PREFIX + "scan-pending"
#: Set while a full_scan is scheduled for when a file still being written settles.
SETTLE_SCAN: Final = PREFIX + "settle-scan"


def startup_lock(host: str, config_dir: str = "") -> str:
    """Lock serialising agent start-ups on ``host`` that share one Claude config dir (``~/.claude.json``).

    Agents with their own config dir (``CLAUDE_CONFIG_DIR``/``HOME``) never wait for each other.
    """
    if not config_dir:
        return f"{PREFIX}lock:startup:{host}"
    return f"{PREFIX}lock:startup:{host}:{hashlib.sha1(config_dir.encode('utf-8', 'surrogateescape')).hexdigest()[:16]}"


def running(project: str) -> str:
    """The project's running tasks (a hash, store/running.py): what ``max_parallel`` is counted from."""
    return f"{PREFIX}running:{project}"


def running_scan(token: str) -> str:
    """Present from the start of a full scan to its end: gone means Redis lost data meanwhile (store/running.py)."""
    return f"{PREFIX}running-scan:{token}"


def owner(project: str, task_id: str) -> str:
    """Who owns a claimed task: ``HOST/NAME`` of its session, or a tombstone once taken back."""
    return f"{PREFIX}owner:{project}:{task_id}"


def orphan_since(project: str, task_id: str) -> str:
    """When a claimed task was first seen with no owner record (a flush, or a claimer that died at once)."""
    return f"{PREFIX}orphan:{project}:{task_id}"


def monitor_pending(host: str) -> str:
    """Set while a ``monitor_sessions(host)`` message is queued: at most one per host."""
    return f"{PREFIX}monitor-pending:{host}"


# Sessions are named by their ref, ``HOST/NAME`` (session_ref.py): a name is unique on its host only.

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


def notify_window(kind: str, minute: int) -> str:
    """Counter of notifications sent for event ``kind`` in one minute (rate limit)."""
    return f"{PREFIX}notify:{kind}:{minute}"


def closed(project: str, name: str) -> str:
    """``inode:mtime_ns:size`` of ``<project>/inbox/<name>`` when the watcher saw its writer finish."""
    return f"{PREFIX}closed:{project}:{name}"


# The ready index (store/ready_index.py): a hint of what may dispatch, rebuilt by every full scan.
#: Set of projects that have a ready set.
READY_PROJECTS: Final = PREFIX + "ready:projects"
#: Counter bumped by anything that makes the index incomplete (a dependency done): it needs a full scan.
READY_DIRTY: Final = PREFIX + "ready:dirty"
#: The ``READY_DIRTY`` value the index was built at (absent: never built, or flushed).
READY_BUILT: Final = PREFIX + "ready:built"
#: Counter numbering single inserts, and the sorted set of those inserts by number (kept across a rebuild).
READY_SEQ: Final = PREFIX + "ready:seq"
READY_JOURNAL: Final = PREFIX + "ready:journal"
#: Hash: project → ``"<its done/ mtime_ns> <id> <id>…"``, the IDs blocked tasks wait on and done/'s mtime when
#: the scan started (a change there may have released one: assign_next checks those IDs).
READY_WAITS_ON: Final = PREFIX + "ready:waits-on"


def ready(project: str) -> str:
    """Sorted set of one project's eligible tasks (members: core/ready.py, all scores 0)."""
    return f"{PREFIX}ready:p:{project}"


def warm_recent(host: str) -> str:
    """Sorted set of ``project priority`` dispatched on ``host`` (scored by time): what to warm when nothing waits."""
    return f"{PREFIX}warm:recent:{host}"


def warm_backoff(session: str) -> str:
    """Set (with a TTL) after a warm start failed in ``session``: no new attempt until it expires."""
    return f"{PREFIX}warm:backoff:{session}"


def warm_pass_lock(host: str) -> str:
    """Held while one worker pre-warms ``host``'s free sessions: passes never overlap (one agent per target)."""
    return f"{PREFIX}lock:warm-pass:{host}"
