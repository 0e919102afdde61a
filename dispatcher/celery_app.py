"""The Celery application (``celery -A dispatcher``); settings live in top-level celeryconfig.py."""

from __future__ import annotations

from celery import Celery

app = Celery("dispatcher")
app.config_from_object("celeryconfig")
