"""Celery task ``monitor_sessions``: watch every pool session of every host and move its lifecycle on."""

from __future__ import annotations

from typing import Any

from dispatcher.core import keys
from dispatcher.flows import monitor, recovery, runtime
from dispatcher.celery_app import app


@app.task(name="monitor_sessions")
def monitor_sessions(host: str | None = None) -> dict[str, Any]:
    """Without ``host`` (beat): one ``monitor_sessions(host)`` per live host. With it: that host's pass."""
    disp = runtime.dispatcher()
    if not host:
        return {"hosts": monitor.fan_out_hosts(disp, lambda h: app.send_task("monitor_sessions", args=[h]))}
    if host != disp.host:
        return {"ignored": f"a pass for host {host!r}, this is {disp.host!r}"}
    disp.r.delete(keys.monitor_pending(host))
    recovered = recovery.recover_local(disp.ports)
    return {"recovered": recovered, "changes": monitor.monitor_all(disp)}
