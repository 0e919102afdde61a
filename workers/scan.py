"""Celery tasks ``full_scan``, ``inbox_event`` and ``check_blocked``: parse and delegate."""

from __future__ import annotations

import logging
from typing import Any

from dispatcher.flows import blocked, ready, recovery, runtime
from dispatcher.core import keys
from dispatcher.store import settle
from dispatcher.core import defaults as d
from dispatcher.celery_app import app
from dispatcher.flows.dispatch import Dispatcher
from dispatcher.inbox.inbox_path import InboxPathError, parse_inbox_path
from dispatcher.inbox.ready_check import Verdict

logger = logging.getLogger(__name__)


#: A queued marking full_scan whose message was lost stops deduplicating after this long.
SCAN_PENDING_TTL_S = 60


@app.task(name="full_scan", ignore_result=False)
def full_scan() -> dict[str, Any]:
    """Reconcile everything (lost hosts' tasks, markers), then give work to free sessions of every host."""
    disp = runtime.dispatcher()
    disp.r.delete(keys.SCAN_PENDING)  # from now on an event may queue another
    recovered = recovery.recover_cluster(disp)
    # Classify and mark even when nothing can be dispatched (pool paused, every session busy).
    result = disp.plan()
    _rescan_when_settled(disp, result.settles_at)
    outcomes = disp.fan_out()
    return {"recovered": recovered, "marked": len(result.changes), "assigned": [o.as_dict() for o in outcomes]}


def _rescan_when_settled(disp: Dispatcher, settles_at: float | None) -> None:
    """A file only a scan found is still being written: scan again when it settles, not a beat later."""
    if settles_at is None or settles_at <= disp.clock():
        return
    delay = settles_at - disp.clock() + 0.1
    if disp.r.set(keys.SETTLE_SCAN, "1", nx=True, px=int(delay * 1000)):
        full_scan.apply_async(countdown=delay)


@app.task(name="inbox_event")
def inbox_event(path: str, closed: Any = None) -> dict[str, Any]:
    """A task file in an inbox was written (``closed``: its [inode, mtime_ns, size] then) or moved:
    give work to free sessions (in global order)."""
    disp = runtime.dispatcher()
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
            _rescan_when_settled(disp, now_ident[1] / 1e9 + disp.settings.settle_time)
    disp.announce(project, task_id, path)
    verdict = ready.on_new_file(disp, project, path)  # into the ready index when it can be judged alone
    outcomes = disp.fan_out()
    if verdict is Verdict.NEEDS_SCAN and disp.r.set(keys.SCAN_PENDING, "1", nx=True, ex=SCAN_PENDING_TTL_S):
        # Blocked, invalid or marked: one queued full_scan judges and marks the file (assign_next no longer scans).
        full_scan.delay()
    return {"task": f"{project}:{task_id}", "assigned": [o.as_dict() for o in outcomes]}


@app.task(name="check_blocked")
def check_blocked() -> dict[str, Any]:
    """Watchdog G1: blocked past ``blocked_timeout`` (or upstream failed) → ``.stuck``."""
    disp = runtime.dispatcher()
    return {"stuck": blocked.check_blocked(disp.settings, disp.r, now=disp.clock())}


def _enqueue_assign(session: str) -> None:
    app.send_task("assign_next", args=[session])


runtime.register_enqueue(_enqueue_assign)
