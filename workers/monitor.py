"""Celery task ``monitor_sessions``: watch every pool session and move its lifecycle on."""

from __future__ import annotations

from typing import Any

from dispatcher import monitor, runtime
from dispatcher.celery_app import app


@app.task(name="monitor_sessions")
def monitor_sessions() -> dict[str, Any]:
    """Detect finished/failed/limited/waiting agents, recycle sessions and assign the next task."""
    return {"changes": monitor.monitor_all(runtime.dispatcher())}
