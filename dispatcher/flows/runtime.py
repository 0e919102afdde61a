"""Per-process wiring: settings, Redis, tmux and the launcher, built once and shared by tasks.

Celery task modules call :func:`dispatcher` and only delegate; tests and the
benchmarks call :func:`configure` to inject their own settings or launcher.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable

import redis

from dispatcher.agent.tmux import Tmux
from dispatcher.core import defaults as d
from dispatcher.core.config import Settings
from dispatcher.flows import recovery
from dispatcher.flows.dispatch import Dispatcher
from dispatcher.flows.launch import LaunchFn, launch_in_session
from dispatcher.flows.ports import Ports
from dispatcher.store import hosts, redis_conn
from dispatcher.store.config_file import load_config

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_settings: Settings | None = None
_launch: LaunchFn | None = None
_enqueue: Callable[[str], None] | None = None
_instance: Dispatcher | None = None
#: How fan-out reaches other workers (set by the Celery task modules: one assign_next message per free session).
_default_enqueue: Callable[[str], None] | None = None


def register_enqueue(fn: Callable[[str], None]) -> None:
    """Set the default way to enqueue ``assign_next(session)``."""
    global _default_enqueue, _instance
    with _lock:
        _default_enqueue, _instance = fn, None


def configure(settings: Settings | None = None, *, launch: LaunchFn | None = None,
              enqueue_assign: Callable[[str], None] | None = None) -> None:
    """Replace the process-wide wiring (None: from the config file / defaults)."""
    global _settings, _launch, _enqueue, _instance
    with _lock:
        _settings, _launch, _enqueue, _instance = settings, launch, enqueue_assign, None


def settings() -> Settings:
    global _settings
    with _lock:
        if _settings is None:
            _settings = load_config()
        return _settings


def redis_client(s: Settings | None = None) -> redis.Redis:
    return redis_conn.client(settings=s or settings())


def tmux(s: Settings | None = None) -> Tmux:
    return Tmux((s or settings()).tmux.socket_name)


def agent_launcher(s: Settings, r: redis.Redis, t: Tmux) -> LaunchFn:
    """The real launch path (flows/launch.py: launch_in_session) bound to these adapters."""
    return functools.partial(launch_in_session, s, r, t)


def ports() -> Ports:
    """The process-wide adapters (those of :func:`dispatcher`)."""
    return dispatcher().ports


def dispatcher() -> Dispatcher:
    """The process-wide Dispatcher (built on first use, with this process's Ports)."""
    global _instance
    s = settings()
    with _lock:
        if _instance is None:
            r = redis_client(s)
            t = tmux(s)
            wired = Ports(s, r, t, _launch or agent_launcher(s, r, t))
            _instance = Dispatcher(wired, enqueue_assign=_enqueue or _default_enqueue)
        return _instance


def host_info(s: Settings) -> hosts.HostInfo:
    """What this process's heartbeat says about its host."""
    return hosts.HostInfo(name=s.host.name, fingerprint=hosts.fingerprint(s.state_dir, s.tmux.socket_name),
                          account=s.host.account, sessions=s.pool.names(), started=time.time(), pid=os.getpid())


def start_heartbeat(alive: Callable[[], bool] | None = None) -> hosts.Heartbeat:
    """Publish this host's heartbeat now and every ``host_lost_after / 6`` s (while ``alive()``);
    raises HostConflictError."""
    s = settings()
    wired = ports()
    beat = hosts.Heartbeat(redis_client(s), host_info(s), interval=s.host_lost_after / d.HEARTBEATS_PER_LOST,
                           lost_after=s.host_lost_after, on_beat=lambda: recovery.reassert_owners(wired),
                           alive=alive)
    return beat.start()
