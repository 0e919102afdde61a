"""The Celery application (``celery -A dispatcher``); settings live in top-level celeryconfig.py.

Every worker publishes its host's heartbeat (hosts.py) from start to shutdown;
a worker whose host name a live deployment of another machine already uses
refuses to start.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_shutdown

app = Celery("dispatcher")
app.config_from_object("celeryconfig")

logger = logging.getLogger(__name__)
_heartbeat: Any = None


@worker_init.connect
def _start_heartbeat(**_: Any) -> None:
    global _heartbeat
    from . import runtime
    from .errors import HostConflictError

    try:
        _heartbeat = runtime.start_heartbeat()
    except HostConflictError as exc:
        logger.critical("%s", exc)
        raise SystemExit(3) from None  # not an Exception: Celery's signal dispatch lets it stop the worker


@worker_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    global _heartbeat
    if _heartbeat is not None:
        _heartbeat.stop()
        _heartbeat = None
