"""`dispatcher up` as a user runs it: a Redis that does not answer, Flower's credentials."""

from __future__ import annotations

import base64
import os
import signal
import socket
import stat
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from system_fixtures import wait_for

from dispatcher.agent.tmux import Tmux
from dispatcher.testing import FAKE_AGENT_COMMAND


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], str]]:
    """A config for a 1-session fake-agent pool on a private tmux socket; (config, env, socket)."""
    sock = f"aqupc-{uuid.uuid4().hex[:10]}"
    cfg = {"projects_dir": "projects", "state_dir": "state", "pool": {"max": 1}, "tmux": {"socket_name": sock},
           "agent": {"command": FAKE_AGENT_COMMAND, "resume_dir": str(tmp_path / "resume")}}
    path = tmp_path / "dispatcher.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "AQ_PROJECTS_DIR", "AQ_STATE_DIR", "FLOWER_BASIC_AUTH")}
    env["DISPATCHER_CONFIG"] = str(path)
    yield path, env, sock
    Tmux(sock).kill_server()


def _start_up(root: Path, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "dispatcher", "up", *args], cwd=root, env=env,
                            stdout=open(root / "up.out", "wb"), stderr=open(root / "up.log", "wb"),
                            start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> int | None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            return proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return None
    return proc.returncode


# --- item 12: a Redis that does not answer ------------------------------------------------------------


@pytest.fixture(params=["closed port", "silent listener"])
def dead_redis(request: pytest.FixtureRequest) -> Iterator[str]:
    """host:port of a "Redis" that never answers: nothing listening, or a socket that accepts and stays mute."""
    if request.param == "closed port":
        yield f"127.0.0.1:{_free_port()}"
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)  # connections complete in the backlog; nobody ever reads or answers
        yield f"127.0.0.1:{s.getsockname()[1]}"


def test_up_fails_soon_on_a_redis_that_does_not_answer(deployment, dead_redis: str) -> None:
    cfg, env, sock = deployment
    root = cfg.parent
    env["REDIS_URL"] = f"redis://agent:s3cret-pw@{dead_redis}/0"

    proc = _start_up(root, env)
    try:
        code = proc.wait(timeout=60)  # a deadline for the test, not a speed assertion
    except subprocess.TimeoutExpired:
        _stop(proc)
        pytest.fail(f"`dispatcher up` still running after 60 s; log: {(root / 'up.log').read_text()[-1500:]}")

    log = (root / "up.log").read_text()
    assert code != 0
    assert f"redis://agent:***@{dead_redis}/0" in log and "s3cret-pw" not in log
    assert "REDIS_URL" in log and "redis_url" in log  # what to fix
    assert not Tmux(sock).list_sessions()  # nothing was started


# --- item 14: Flower always asks for credentials ------------------------------------------------------


def _http_code(url: str, auth: str | None = None) -> int | str:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError as exc:
        return str(exc)


def test_up_flower_on_loopback_requires_a_generated_password(deployment, sys_redis_url: str) -> None:
    cfg, env, _sock = deployment
    root = cfg.parent
    port = _free_port()
    data = yaml.safe_load(cfg.read_text())
    data["flower"] = {"address": "127.0.0.1", "port": port}
    data["redis_url"] = sys_redis_url
    cfg.write_text(yaml.safe_dump(data), encoding="utf-8")
    url = f"http://127.0.0.1:{port}/"

    proc = _start_up(root, env, "--flower")
    try:
        auth_file = root / "state" / "web-auth"
        wait_for(auth_file.exists, timeout=60, what=lambda: f"{auth_file}; log {(root / 'up.log').read_text()[-800:]}")
        assert stat.S_IMODE(auth_file.stat().st_mode) == 0o600
        auth = auth_file.read_text(encoding="utf-8").strip()
        user, _, password = auth.partition(":")
        assert user and len(password) >= 16
        wait_for(lambda: _http_code(url, auth) == 200, timeout=90,
                 what=lambda: f"Flower with the generated credentials; last {_http_code(url, auth)}")
        assert _http_code(url) == 401
        assert _http_code(url, f"{user}:wrong") == 401
        assert str(auth_file) in (root / "up.log").read_text()  # says where the password is
        assert password not in (root / "up.log").read_text() + (root / "up.out").read_text()
    finally:
        assert _stop(proc) == 0
    assert auth_file.read_text(encoding="utf-8").strip() == auth  # kept for the next run
