"""Celery tasks ``full_scan``, ``inbox_event`` and ``check_blocked``: parse and delegate (flows/passes.py)."""

from __future__ import annotations

from typing import Any

from dispatcher.celery_app import app
from dispatcher.flows import passes, runtime


def _rescan_in(delay: float) -> None:
    full_scan.apply_async(countdown=delay)


@app.task(name="full_scan", ignore_result=False)
def full_scan() -> dict[str, Any]:
    """Reconcile everything (lost hosts' tasks, markers), then give work to free sessions of every host."""
    return passes.full_scan(runtime.dispatcher(), _rescan_in)


@app.task(name="inbox_event")
def inbox_event(path: str, closed: Any = None) -> dict[str, Any]:
    """A task file in an inbox was written (``closed``: its [inode, mtime_ns, size] then) or moved:
    give work to free sessions (in global order)."""
    return passes.inbox_event(runtime.dispatcher(), path, closed, _rescan_in, lambda: full_scan.delay())


@app.task(name="check_blocked")
def check_blocked() -> dict[str, Any]:
    """Watchdog G1: blocked past ``blocked_timeout`` (or upstream failed) → ``.stuck``."""
    return passes.check_blocked(runtime.dispatcher())


def _enqueue_assign(session: str) -> None:
    app.send_task("assign_next", args=[session])


runtime.register_enqueue(_enqueue_assign)
