"""Deployments on one machine: own tmux socket, one `up` per state dir, Ctrl-C stops it all (no leftovers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from system_fixtures import wait_for

from dispatcher.agent.tmux import Tmux
from dispatcher.store.config_file import load_config
from dispatcher.testing import FAKE_AGENT_COMMAND


def _deployment(root: Path, redis_url: str | None = None, **tmux: str) -> tuple[Path, dict[str, str]]:
    root.mkdir(parents=True, exist_ok=True)
    cfg: dict[str, Any] = {"projects_dir": "projects", "state_dir": "state", "pool": {"max": 2},
                           "agent": {"command": FAKE_AGENT_COMMAND}}
    if redis_url:
        cfg["redis_url"] = redis_url
    if tmux:
        cfg["tmux"] = dict(tmux)
    (root / "dispatcher.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "AQ_PROJECTS_DIR", "AQ_STATE_DIR")}
    env["DISPATCHER_CONFIG"] = str(root / "dispatcher.yaml")
    return root, env


def _socket(root: Path) -> str:
    return load_config(root / "dispatcher.yaml", env={}).tmux.socket_name


def _cli(root: Path, env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dispatcher", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _up_refused(root: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `dispatcher up` expecting it to refuse; stopped (with its children) if it starts instead."""
    proc = subprocess.Popen([sys.executable, "-m", "dispatcher", "up"], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture
def sockets() -> Iterator[list[str]]:
    """tmux sockets the test used: their servers are killed afterwards."""
    used: list[str] = []
    yield used
    for name in used:
        Tmux(name).kill_server()


class Up:
    """`dispatcher up` running in the background for one deployment."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.log = root / "up.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "dispatcher", "up"], cwd=root, env=env,
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"), start_new_session=True)

    def wait_running(self, socket: str) -> None:
        """Redis up and the pool created."""
        wait_for(lambda: (self.root / "state" / "redis.url").exists() and len(Tmux(socket).list_sessions()) == 2,
                 timeout=60, what=lambda: f"up running; log: {self.log.read_text()[-1500:]}")

    def stop(self) -> int:
        """Ctrl-C; the exit code (the log tail is printed for a failing test)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        code = self.proc.wait(timeout=60)
        if code:
            print(self.log.read_text()[-3000:])
        return code


def test_pool_list_and_status_print_the_exact_attach_command(tmp_path: Path, sockets: list[str]) -> None:
    root, env = _deployment(tmp_path / "d", redis_url="redis://127.0.0.1:1/0")  # no Redis: rebuilt from tmux
    sockets.append(socket := _socket(root))
    assert socket.startswith("agent-queue-")
    assert _cli(root, env, "pool", "create").returncode == 0
    attach = f"tmux -L {socket} attach -t =ccl-auto-0"
    listed = _cli(root, env, "pool", "list")
    assert listed.returncode == 0 and attach in listed.stdout, listed.stdout
    shown = _cli(root, env, "status")
    assert shown.returncode == 0 and attach in shown.stdout, shown.stdout + shown.stderr


def test_second_up_for_a_running_deployment_or_its_socket_refuses_with_the_fix(tmp_path: Path,
                                                                              sockets: list[str]) -> None:
    first_root, first_env = _deployment(tmp_path / "first")
    sockets.append(socket := _socket(first_root))
    first = Up(first_root, first_env)
    try:
        first.wait_running(socket)
        # The same deployment twice (same state dir): the second would replace the first's sessions.
        again = _up_refused(first_root, first_env)
        assert again.returncode == 2, again.stderr
        assert f"pid {first.proc.pid}" in again.stderr and "already running" in again.stderr, again.stderr
        # Another deployment configured with the same socket name: refused, and told what to change.
        other_root, other_env = _deployment(tmp_path / "other", socket_name=socket)
        clash = _up_refused(other_root, other_env)
        assert clash.returncode == 2, clash.stderr
        assert "tmux.socket_name" in clash.stderr and str(first_root / "state") in clash.stderr, clash.stderr
        assert not (other_root / "state" / "redis.url").exists()
        assert sorted(Tmux(socket).list_sessions()) == ["ccl-auto-0", "ccl-auto-1"]  # the first's, untouched
        assert first.proc.poll() is None
    finally:
        assert first.stop() == 0


def test_ctrl_c_stops_the_tmux_pool_and_leaves_no_redis_temp_dir(tmp_path: Path, sockets: list[str]) -> None:
    root, env = _deployment(tmp_path / "d")
    sockets.append(socket := _socket(root))
    operator = Tmux(socket)
    up = Up(root, env)
    try:
        up.wait_running(socket)
        operator.new_session("operator", width=80, height=20)  # not the pool's: left alone
        url = (root / "state" / "redis.url").read_text().strip()
        redis_dir = Path(url.removeprefix("unix://")).parent
        assert redis_dir.is_dir()
    finally:
        assert up.stop() == 0
    assert operator.list_sessions() == ["operator"]
    assert not redis_dir.exists()
    assert not (root / "state" / "redis.url").exists()
    # Restarting works (and finds its own pool again).
    operator.kill_server()
    again = Up(root, env)
    try:
        again.wait_running(socket)
    finally:
        assert again.stop() == 0
    assert Tmux(socket).list_sessions() == []


def test_ctrl_c_while_up_is_still_starting_exits_cleanly(tmp_path: Path, sockets: list[str]) -> None:
    root, env = _deployment(tmp_path / "d")
    sockets.append(socket := _socket(root))
    up = Up(root, env)
    lock = root / "state" / "up.lock"
    wait_for(lambda: lock.exists() and lock.read_text().strip() == str(up.proc.pid), timeout=60,
             what="up holds its lock")  # Redis and the pool are starting now
    assert up.stop() == 0  # not click's "Aborted!" (exit 1) with Redis or the pool left behind
    assert Tmux(socket).list_sessions() == []
    assert not (root / "state" / "redis.url").exists()
