"""Talking to a running system from the CLI: send a Celery task by name (no worker code imported)."""

from __future__ import annotations

import logging
import os
from typing import Any

from dispatcher.core.config import Settings
from dispatcher.core.errors import ConfigError
from dispatcher.store.redis_conn import configured_url

logger = logging.getLogger(__name__)


def send_task(settings: Settings, name: str, args: list[Any] | None = None) -> str | None:
    """Enqueue task ``name`` on the Redis of ``settings``; its id, or None (logged) when it cannot be sent."""
    try:
        url = configured_url(settings)
    except ConfigError as exc:  # no Redis for this deployment (e.g. its `up` is not running)
        logger.warning("%s not sent: %s", name, exc)
        return None
    # celeryconfig (read when the app is first used) finds the deployment through these, so a
    # `-c` config or a run from another directory reaches the same Redis as this process.
    os.environ["REDIS_URL"] = url
    if settings.source is not None:
        os.environ["DISPATCHER_CONFIG"] = str(settings.source)
    # Celery only when a message is sent (a fifth of a second), and after the environment above is set.
    from dispatcher.celery_app import app

    try:
        result = app.send_task(name, args=args or [], retry=False)
    except Exception as exc:  # broker down: the periodic scan will catch up
        logger.warning("could not reach the broker to send %s: %s", name, exc)
        return None
    return str(result.id)
