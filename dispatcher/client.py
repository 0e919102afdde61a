"""Talking to a running system from the CLI: send a Celery task by name (no worker code imported)."""

from __future__ import annotations

import logging
from typing import Any

from .config import Settings

logger = logging.getLogger(__name__)


def send_task(settings: Settings, name: str, args: list[Any] | None = None) -> str | None:
    """Enqueue task ``name``; returns its id, or None (logged) when the broker is unreachable."""
    from .celery_app import app

    try:
        result = app.send_task(name, args=args or [], retry=False)
    except Exception as exc:  # broker down: the periodic scan will catch up
        logger.warning("could not reach the broker to send %s: %s", name, exc)
        return None
    return str(result.id)
