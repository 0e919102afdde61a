"""Celery task ``monitor_sessions``: watch every pool session of every host and move its lifecycle on."""

from __future__ import annotations

from typing import Any

from dispatcher.celery_app import app
from dispatcher.flows import passes, runtime


@app.task(name="monitor_sessions")
def monitor_sessions(host: str | None = None) -> dict[str, Any]:
    """Without ``host`` (beat): one ``monitor_sessions(host)`` per live host. With it: that host's pass."""
    return passes.monitor_sessions(runtime.dispatcher(), host,
                                   lambda h: app.send_task("monitor_sessions", args=[h]))
