"""Celery routing: work that touches a host's tmux panes goes to that host's queue, the rest to the cluster's.

``celery -A dispatcher call assign_next --args '["HOST/ccl-auto-0"]'`` lands on
``aq.host.HOST``, consumed only by that host's workers; a bare ``ccl-auto-0``
means the host the command runs on. Everything else (inbox_event, full_scan,
check_blocked, the monitor fan-out) goes to ``aq.cluster``, which every
worker consumes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from dispatcher.core.errors import DispatcherError
from dispatcher.core.session_ref import parse
from dispatcher.flows import runtime
from dispatcher.store.hosts import CLUSTER_QUEUE, host_queue

logger = logging.getLogger(__name__)

#: Tasks whose first argument names a session (``HOST/NAME`` or ``NAME``).
SESSION_TASKS = frozenset({"assign_next"})
#: Tasks whose first argument, when given, names a host.
HOST_TASKS = frozenset({"monitor_sessions"})


def queue_for(name: str, args: Sequence[Any] | None, local_host: str) -> str:
    """The queue of one task message."""
    first = args[0] if args else None
    if name in SESSION_TASKS and first is not None:
        try:
            return host_queue(parse(first, default_host=local_host).host)
        except DispatcherError:
            return CLUSTER_QUEUE  # the worker refuses it with the reason
    if name in HOST_TASKS and isinstance(first, str) and first:
        return host_queue(first)
    return CLUSTER_QUEUE


def route(name: str, args: Sequence[Any] | None, kwargs: dict[str, Any] | None, options: dict[str, Any],
          task: Any = None, **_: Any) -> dict[str, str]:
    """Celery ``task_routes`` entry."""
    if options.get("queue"):
        return {}  # an explicit queue wins
    return {"queue": queue_for(name, args, runtime.settings().host.name)}
