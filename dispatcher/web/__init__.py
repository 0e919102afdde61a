"""The fleet page (``dispatcher web``, ``dispatcher up --web``): the operator's view in a browser.

Starlette + uvicorn, server-sent events for live updates, plain HTML/CSS/JS
files (no build step); the dependency graph is drawn server-side as SVG.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING

from dispatcher.core.config import Settings
from dispatcher.store import credentials

if TYPE_CHECKING:
    import uvicorn

logger = logging.getLogger(__name__)


def server(settings: Settings, address: str, port: int, **app_kwargs: object) -> uvicorn.Server:
    """A uvicorn server for the page (call ``.run()``; set ``.should_exit`` to stop it)."""
    # Starlette and uvicorn load only when a page is served: the CLI imports this module for every command.
    import uvicorn

    from dispatcher.web.app import create_app

    app = create_app(settings, **app_kwargs)  # type: ignore[arg-type]
    # Open streams (SSE) would hold a graceful shutdown forever: give them a moment, then close.
    config = uvicorn.Config(app, host=address, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=2, lifespan="off", proxy_headers=False)
    return uvicorn.Server(config)


def serve(settings: Settings, address: str, port: int) -> None:
    """Run the page until Ctrl-C/SIGTERM."""
    user, _ = credentials.load_or_create(settings.state_dir, settings.flower.basic_auth)
    where = f"[{address}]" if ":" in address else address
    logger.warning("fleet page on http://%s:%d/ (user %s; password: FLOWER_BASIC_AUTH or %s)", where, port, user,
                   credentials.path(settings.state_dir))
    server(settings, address, port).run()


def bound_socket(address: str = "127.0.0.1") -> socket.socket:
    """A listening-ready TCP socket on a free port (tests, ``--port 0``)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, 0))
    return sock
