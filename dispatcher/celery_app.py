"""The Celery application (``celery -A dispatcher``); settings live in top-level celeryconfig.py.

Every worker publishes its host's heartbeat (hosts.py) from start to shutdown;
a worker whose host name a live deployment of another machine already uses
refuses to start.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, bootsteps
from celery.signals import worker_init, worker_shutdown

from dispatcher.core.errors import HostConflictError

app = Celery("dispatcher")
app.config_from_object("celeryconfig")

logger = logging.getLogger(__name__)
#: Heartbeats by worker (an in-process test worker is started and stopped many times in one process).
_heartbeats: dict[int, Any] = {}


def _running(worker: Any) -> bool:
    state = getattr(getattr(worker, "blueprint", None), "state", None)
    return state not in (bootsteps.CLOSE, bootsteps.TERMINATE)


@worker_init.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    # Here, not at the top: the CLI imports the app only to send messages, and the worker's wiring
    # (every flow, the launcher) would add a third of a second to each such command.
    from dispatcher.flows import runtime

    try:
        _heartbeats[id(sender)] = runtime.start_heartbeat(alive=lambda: _running(sender))
    except HostConflictError as exc:
        logger.critical("%s", exc)
        raise SystemExit(3) from None  # not an Exception: Celery's signal dispatch lets it stop the worker


@worker_shutdown.connect
def _stop_heartbeat(sender: Any = None, **_: Any) -> None:
    beat = _heartbeats.pop(id(sender), None)
    if beat is not None:
        beat.stop()
