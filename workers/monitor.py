"""Celery task ``monitor_sessions``: watch every pool session of every host and move its lifecycle on."""

from __future__ import annotations

from typing import Any

from dispatcher.celery_app import app
from dispatcher.flows import passes, runtime


def _send(host: str, done: list[str] | None = None) -> None:
    app.send_task("monitor_sessions", args=[host] if done is None else [host, done])


# Nobody reads a pass's result (Flower shows it from the task-succeeded event): no backend write per pass.
@app.task(name="monitor_sessions", ignore_result=True)
def monitor_sessions(host: str | None = None, done: Any = None) -> dict[str, Any]:
    """Without ``host`` (beat): one ``monitor_sessions(host)`` per live host. With it: that host's pass.
    ``done`` (the watcher): paths of task files that reached done/; only the sessions holding them are looked at."""
    return passes.monitor_sessions(runtime.dispatcher(), host, _send, done)
