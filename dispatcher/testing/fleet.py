"""Simulated hosts on one machine (tests and bench): each its own host name, tmux server, state dir and worker.

All hosts share one Redis DB and one projects dir, like machines sharing a
Redis server and an NFS export. Killing a host = kill -9 its worker's process
group and its tmux server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dispatcher.agent import pool
from dispatcher.agent.tmux import Tmux
from dispatcher.core.config import PoolSettings
from dispatcher.testing import FAKE_AGENT_COMMAND


@dataclass
class SimHost:
    """One host of a simulated fleet."""

    name: str
    root: Path
    projects_dir: Path
    redis_url: str
    agent_log: Path
    sessions: int = 2
    lost_after: float = 6.0
    extra: dict[str, Any] = field(default_factory=dict)
    #: Merged into the config's ``agent`` section (hooks, startup_lock, env, ...).
    agent: dict[str, Any] = field(default_factory=dict)
    #: Solo worker processes on this host's queues (``dispatcher up --workers``).
    workers: int = 1
    socket: str = field(default_factory=lambda: f"aqfleet-{uuid.uuid4().hex[:10]}")
    proc: subprocess.Popen[bytes] | None = None
    more: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.root / "dispatcher.yaml"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def tmux(self) -> Tmux:
        return Tmux(self.socket)

    def write_config(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        data: dict[str, Any] = {
            "projects_dir": str(self.projects_dir),
            "state_dir": str(self.state_dir),
            "redis_url": self.redis_url,
            "host": {"name": self.name},
            "host_lost_after": self.lost_after,
            "pool": {"prefix": "ccl-auto-", "max": self.sessions, "cooldown": 1},
            "tmux": {"socket_name": self.socket},
            "scan_interval": 2,
            "monitor_interval": 0.5,
            "finish_grace": 5,
            "agent": {"command": FAKE_AGENT_COMMAND, "resume_dir": str(self.root / "resume"),
                      "prompt_timeout": 30, "submit_timeout": 10,
                      "env": {"FAKE_AGENT_LOG": str(self.agent_log), "FAKE_AGENT_BUSY_MS": "50"},
                      **self.agent},
            **self.extra,
        }
        self.config.write_text(yaml.safe_dump(data), encoding="utf-8")
        return self.config

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AQ_", "DISPATCHER_", "REDIS_URL"))
               or k == "AQ_TMUX_CONTROL"}  # a process switch, not the host's config: benches compare both
        return {**env, "DISPATCHER_CONFIG": str(self.config), "REDIS_URL": self.redis_url}

    def start(self) -> SimHost:
        """Create the pool (as ``dispatcher up`` does) and start a real worker on this host's queues."""
        self.write_config()
        pool.create(self.tmux, PoolSettings(prefix="ccl-auto-", max=self.sessions), cwd=self.projects_dir)
        procs = []
        for i in range(max(1, self.workers)):
            log = open(self.root / ("worker.log" if i == 0 else f"worker{i}.log"), "ab")
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "dispatcher", "worker", "-P", "solo", "-l", "info",
                 "-n", f"w{i or ''}.{self.name}@%h", "--without-gossip", "--without-mingle"],
                env=self.env(), stdout=log, stderr=log, start_new_session=True, cwd=self.root))
        self.proc, self.more = procs[0], procs[1:]
        return self

    @property
    def procs(self) -> list[subprocess.Popen[bytes]]:
        """Every worker process of this host."""
        return ([self.proc] if self.proc is not None else []) + self.more

    def kill(self) -> None:
        """kill -9 the whole host: its workers' process groups and its tmux server (agents included)."""
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.tmux.kill_server()

    def stop(self) -> None:
        """A clean stop (tests' teardown)."""
        for proc in self.procs:
            stop_proc(proc)
        self.tmux.kill_server()

    def log_tail(self) -> str:
        try:
            return (self.root / "worker.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""


def start_watcher(host: SimHost) -> subprocess.Popen[bytes]:
    """A real ``dispatcher watch`` with this host's config (inbox events → inbox_event messages)."""
    log = open(host.root / "watcher.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "dispatcher", "watch"], env=host.env(), stdout=log, stderr=log,
                            start_new_session=True, cwd=host.root)


def start_beat(host: SimHost, name: str = "beat") -> subprocess.Popen[bytes]:
    """A real ``celery beat`` (the leader-elected scheduler) with this host's config."""
    log = open(host.root / f"{name}.log", "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "dispatcher", "beat", "-l", "info",
         "-s", str(host.root / f"{name}-schedule")],
        env=host.env(), stdout=log, stderr=log, start_new_session=True, cwd=host.root)


def stop_proc(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def agent_entries(log: Path, event: str) -> list[dict[str, Any]]:
    """Lines of the fake agents' shared log of one kind ("message", "done", "start")."""
    if not log.exists():
        return []
    rows = [json.loads(x) for x in log.read_text(encoding="utf-8").splitlines() if x.strip()]
    return [r for r in rows if r.get("event") == event]


def delivered(log: Path) -> list[dict[str, Any]]:
    """Task messages (not the resume's "continue"): task key, session ref, tmux socket, time."""
    out = []
    for m in agent_entries(log, "message"):
        text = m.get("text", "")
        if text.startswith("[") and ".md]" in text:
            out.append({"task": f"{Path(m['cwd']).name}:{text[1:text.index('.md]')]}",
                        "session": m.get("aq_session", ""), "socket": _socket(m.get("tmux", "")),
                        "time": m["time"]})
    return out


def _socket(tmux_env: str) -> str:
    # $TMUX is "<socket path>,<server pid>,<session index>"; the socket file is named after -L.
    return Path(tmux_env.split(",")[0]).name if tmux_env else ""
