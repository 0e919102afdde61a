"""Fixtures for the fleet page: the real app on a real uvicorn server (loopback, free port), real Chromium."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from system_fixtures import wait_for

from dispatcher.agent.tmux import Tmux
from dispatcher.core.config import Settings
from dispatcher.web import bound_socket, server

USER, PASSWORD = "operator", "correct horse battery staple"
CHROMIUM = os.environ.get("AQ_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


class FleetServer:
    """A running fleet page: ``url``, and the credentials it wants."""

    def __init__(self, settings: Settings, r: redis.Redis[str], tmux: Tmux) -> None:
        self.sock = bound_socket()
        host, port = self.sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        self.server = server(settings, host, port, r=r, tmux=tmux, auth=(USER, PASSWORD), refresh=0.3)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> FleetServer:
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=20, what="uvicorn started")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


@pytest.fixture
def fleet_server(settings: Settings, sys_redis: redis.Redis[str], tmux_pool: Tmux) -> Iterator[FleetServer]:
    srv = FleetServer(settings, sys_redis, tmux_pool).start()
    yield srv
    srv.stop()


def _missing(why: str) -> None:
    # CI must run the browser tests: a missing browser there is a failure, not a skip.
    if os.environ.get("CI"):
        pytest.fail(f"browser tests need {why} (CI installs it in .ci/run)")
    pytest.skip(f"needs {why}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (Playwright's own browser download is not used)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright (pip install -e '.[test]')")
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        _missing(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, fleet_server: FleetServer) -> Iterator[Any]:
    """A logged-in page of the fleet (its console errors fail the test)."""
    ctx = browser.new_context(http_credentials={"username": USER, "password": PASSWORD},
                              viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    yield pg
    ctx.close()
    assert not errors, f"errors in the page: {errors}"
