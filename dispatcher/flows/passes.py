"""What each Celery task does (``workers/`` only parses its arguments and delegates here).

The task modules pass in how to enqueue more work (``rescan_in``, ``scan_soon``,
``monitor_host``), so nothing here imports Celery.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dispatcher.core import defaults as d
from dispatcher.core import keys
from dispatcher.core.taskfile import is_safe_segment
from dispatcher.flows import blocked, monitor, ready, recovery
from dispatcher.flows.dispatch import Dispatcher
from dispatcher.inbox.inbox_path import InboxPathError, parse_inbox_path
from dispatcher.inbox.ready_check import Verdict
from dispatcher.store import settle

logger = logging.getLogger(__name__)

#: Enqueue a full_scan this many seconds from now.
RescanIn = Callable[[float], None]


def full_scan(disp: Dispatcher, rescan_in: RescanIn) -> dict[str, Any]:
    """Reconcile everything (lost hosts' tasks, markers), then give work to free sessions of every host."""
    disp.r.delete(keys.SCAN_PENDING)  # from now on an event may queue another
    recovered = recovery.recover_cluster(disp.ports)
    # Classify and mark even when nothing can be dispatched (pool paused, every session busy).
    result = disp.plan()
    rescan_when_settled(disp, result.settles_at, rescan_in)
    outcomes = disp.fan_out()
    return {"recovered": recovered, "marked": len(result.changes), "assigned": [o.as_dict() for o in outcomes]}


def rescan_when_settled(disp: Dispatcher, settles_at: float | None, rescan_in: RescanIn) -> None:
    """A file only a scan found is still being written: scan again when it settles, not a beat later."""
    if settles_at is None or settles_at <= disp.clock():
        return
    delay = settles_at - disp.clock() + 0.1
    if disp.r.set(keys.SETTLE_SCAN, "1", nx=True, px=int(delay * 1000)):
        rescan_in(delay)


def inbox_event(disp: Dispatcher, path: str, closed: Any, rescan_in: RescanIn,
                scan_soon: Callable[[], None]) -> dict[str, Any]:
    """A task file in an inbox was written (``closed``: its [inode, mtime_ns, size] then) or moved:
    give work to free sessions (in global order)."""
    try:
        project, task_id = parse_inbox_path(disp.settings.projects_dir, path)
    except InboxPathError as exc:
        logger.info("inbox_event ignored: %s", exc)
        return {"ignored": str(exc)}
    ident = settle.parse_identity(closed)
    if ident is not None:
        settle.record_closed(disp.r, project, task_id + d.TASK_SUFFIX, ident, disp.settings.settle_time)
    else:  # a hint (polling, our own move): if the file is still being written, look again when it settles
        now_ident = settle.identity_of(path)
        if now_ident is not None and now_ident[2] > 0:
            rescan_when_settled(disp, now_ident[1] / 1e9 + disp.settings.settle_time, rescan_in)
    disp.announce(project, task_id, path)
    verdict = ready.on_new_file(disp, project, path, ident)  # into the ready index when it can be judged alone
    # One file, one task: one session is asked (served here when it is this host's); full_scan asks them all.
    outcomes = disp.fan_out(limit=1)
    if verdict is Verdict.NEEDS_SCAN and disp.r.set(keys.SCAN_PENDING, "1", nx=True, ex=d.SCAN_PENDING_TTL_S):
        # Blocked, invalid or marked: one queued full_scan judges and marks the file (assign_next no longer scans).
        scan_soon()
    return {"task": f"{project}:{task_id}", "assigned": [o.as_dict() for o in outcomes]}


def check_blocked(disp: Dispatcher) -> dict[str, Any]:
    """Watchdog G1: blocked past ``blocked_timeout`` (or upstream failed) → ``.stuck``."""
    return {"stuck": blocked.check_blocked(disp.settings, disp.r, now=disp.clock())}


def monitor_sessions(disp: Dispatcher, host: str | None, monitor_host: Callable[..., None],
                     done: Any = None) -> dict[str, Any]:
    """Without ``host`` (beat): one ``monitor_host(host)`` per live host. With it: that host's pass.

    ``done`` (the watcher): paths of task files that reached done/. Then only the sessions holding those tasks
    are looked at — on their owners' hosts (``monitor_host(host, keys)``) — not every working session.
    """
    keys_done = done_keys(done) if done is not None else None
    if not host:
        if keys_done is None:
            return {"hosts": monitor.fan_out_hosts(disp, monitor_host)}
        by_host: dict[str, list[str]] = {}
        for key, owner in monitor.owners_of(disp, keys_done).items():
            if owner is None:  # no owner record (flushed?): the whole fleet's pass finds the session
                return {"hosts": monitor.fan_out_hosts(disp, monitor_host)}
            by_host.setdefault(owner, []).append(key)
        changes: list[str] = []
        for owner_host, task_keys in sorted(by_host.items()):
            if owner_host == disp.host:  # this worker is on the owner's host: its pass runs here, one message less
                changes += monitor.monitor_tasks(disp, set(task_keys))
            else:
                monitor_host(owner_host, task_keys)
        return {"finished": by_host, "changes": changes}
    if host != disp.host:
        return {"ignored": f"a pass for host {host!r}, this is {disp.host!r}"}
    if keys_done is not None:
        return {"changes": monitor.monitor_tasks(disp, set(keys_done))}
    disp.r.delete(keys.monitor_pending(host))
    recovered = recovery.recover_local(disp.ports)
    return {"recovered": recovered, "changes": monitor.monitor_all(disp)}


def done_keys(done: Any) -> list[str]:
    """``PROJECT:ID`` of the valid entries of ``done``: paths ``<projects_dir>/<project>/.agent-queue/done/<id>.md``
    from the watcher, or keys ``PROJECT:ID`` (a targeted host pass). Anything else is dropped (outside input)."""
    if not isinstance(done, list):
        return []
    out: list[str] = []
    for item in done[:10_000]:
        if not isinstance(item, str):
            continue
        if os.sep in item:
            path = Path(item)
            # Not checked against projects_dir (the watcher may name it another way, through a symlink): the key
            # only selects sessions holding that task, it never becomes a path.
            if path.suffix != d.TASK_SUFFIX or path.parent.name != d.DONE or path.parent.parent.name != d.QUEUE_DIR:
                continue
            project, task_id = path.parent.parent.parent.name, path.name[: -len(d.TASK_SUFFIX)]
        else:
            project, _, task_id = item.partition(":")
        if is_safe_segment(project) and is_safe_segment(task_id):
            out.append(f"{project}:{task_id}")
    return sorted(set(out))
