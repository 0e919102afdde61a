"""agent-queue dispatcher: Markdown task files → Claude Code agents in tmux, via Celery.

``celery -A dispatcher …`` finds the Celery app through :func:`__getattr__`,
so importing the package (and the CLI) does not import Celery.
"""

from __future__ import annotations

from typing import Any

from dispatcher.core.version import __version__

__all__ = ["__version__"]


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from dispatcher.celery_app import app

        return app
    raise AttributeError(f"module 'dispatcher' has no attribute {name!r}")
