"""Celery task ``assign_next(session)``: ``celery -A dispatcher call assign_next --args '["ccl-auto-0"]'``."""

from __future__ import annotations

from dispatcher.celery_app import app
from dispatcher.flows import runtime


@app.task(name="assign_next", track_started=True)
def assign_next(session: str) -> dict[str, str]:
    """Give the next eligible task to ``session`` (a free pool session), or say why not."""
    if not isinstance(session, str):
        return {"status": "not-in-pool", "session": repr(session), "task": "", "detail": "session must be a name"}
    return runtime.dispatcher().assign_next(session).as_dict()
