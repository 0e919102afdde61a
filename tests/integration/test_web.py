"""The fleet page's HTTP side against a real server: auth always, hostile parameters, CSRF, the actions."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis
from system_fixtures import add_task, wait_for
from web_fixtures import PASSWORD, USER, FleetServer, fleet_server  # noqa: F401

from dispatcher.agent.tmux import Tmux
from dispatcher.core.config import Settings
from dispatcher.flows import claim as cl
from dispatcher.inbox import files as aq
from dispatcher.store import events, pause

AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def call(srv: FleetServer, path: str, *, method: str = "GET", body: Any = None, auth: str | None = AUTH,
         headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(srv.url + path, data=data, method=method)
    if auth:
        req.add_header("Authorization", auth)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=20) as res:
            return res.status, res.headers, res.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


ACTION = {"X-AQ-CSRF": "1"}


PATHS = ["/", "/api/snapshot", "/api/stream", "/static/app.js", "/session/ccl-auto-0", "/api/screen/ccl-auto-0",
         "/nope", "/static/../../../../etc/passwd"]
BAD_AUTH = [None, "Basic " + base64.b64encode(f"{USER}:wrong".encode()).decode(),
            "Basic " + base64.b64encode(f"{USER}x:{PASSWORD}".encode()).decode(),
            "Basic " + base64.b64encode(f"{USER}:{PASSWORD}x".encode()).decode(),
            "Basic !!!notbase64", "Bearer " + PASSWORD, "Basic " + base64.b64encode(USER.encode()).decode(), "Basic "]


def test_every_path_refuses_without_the_credentials(fleet_server: FleetServer) -> None:
    for path in PATHS:
        for auth in BAD_AUTH:
            status, headers, body = call(fleet_server, path, auth=auth)
            assert status == 401, (path, auth)
            assert headers["WWW-Authenticate"].startswith("Basic ") and b"fleet" not in body
    for method in ("POST", "PUT", "DELETE"):
        assert call(fleet_server, "/api/resume", method=method, body={}, auth=None, headers=ACTION)[0] == 401


def test_page_and_snapshot_with_auth(fleet_server: FleetServer, settings: Settings) -> None:
    add_task(settings, "alpha", "T1")
    status, headers, body = call(fleet_server, "/")
    assert status == 200 and b"agent-queue fleet" in body
    assert "default-src 'self'" in headers["content-security-policy"] and headers["x-frame-options"] == "DENY"
    status, _, body = call(fleet_server, "/api/snapshot")
    snap = json.loads(body)
    assert [s["session"] for s in snap["status"]["sessions"]] == ["ccl-auto-0", "ccl-auto-1", "ccl-auto-2"]
    assert snap["tasks"]["alpha"][0]["id"] == "T1" and snap["tasks"]["alpha"][0]["state"] == "ready"
    assert set(snap["screens"]) == {"ccl-auto-0", "ccl-auto-1", "ccl-auto-2"}


def test_screens_only_of_pool_sessions(fleet_server: FleetServer, tmux_pool: Tmux) -> None:
    tmux_pool.new_session("ccl-auto-10", width=200, height=50)  # an operator's session outside the pool
    for name in ["ccl-auto-3", "ccl-auto-10", "=ccl-auto-0", "ccl-auto-0:0", "..", "ccl-auto-0;ls", "ccl-auto-0%0a",
                 "%2e%2e%2fetc", "ccl-auto-0%00", "%3Dccl-auto-0"]:
        assert call(fleet_server, f"/api/screen/{name}")[0] == 404, name
        assert call(fleet_server, f"/session/{name}")[0] == 404, name
    assert call(fleet_server, "/api/screen/ccl-auto-0")[0] == 200


def test_screen_history_is_bounded_and_numeric(fleet_server: FleetServer) -> None:
    assert call(fleet_server, "/api/screen/ccl-auto-0?history=abc")[0] == 400
    status, _, body = call(fleet_server, "/api/screen/ccl-auto-0?history=99999999999")
    assert status == 200 and json.loads(body)["attach"].endswith("attach -t =ccl-auto-0")


def _failed_task(settings: Settings, project: str, task_id: str) -> Path:
    path = add_task(settings, project, task_id)
    return cl.fail(cl.claim(path), "agent exited without moving the task to done/")


def test_actions_refuse_cross_site_requests(fleet_server: FleetServer, settings: Settings,
                                            sys_redis: redis.Redis[str]) -> None:
    failed = _failed_task(settings, "alpha", "F1")
    host = fleet_server.url.split("//")[1]
    for headers in ({}, {"X-AQ-CSRF": "0"}, {"X-AQ-CSRF": "1", "Origin": "http://evil.example"},
                    {"X-AQ-CSRF": "1", "Origin": f"http://{host}.evil.example"},
                    {"X-AQ-CSRF": "1", "Origin": "null"},
                    {"X-AQ-CSRF": "1", "Sec-Fetch-Site": "cross-site"},
                    {"X-AQ-CSRF": "1", "Sec-Fetch-Site": "same-site"}):
        for path, body in (("/api/retry", {"task": "alpha:F1"}), ("/api/pause", {}), ("/api/resume", {})):
            assert call(fleet_server, path, method="POST", body=body, headers=headers)[0] == 403, (path, headers)
    assert failed.exists() and pause.stored(sys_redis) is None
    same = {"X-AQ-CSRF": "1", "Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"}
    assert call(fleet_server, "/api/pause", method="POST", body={}, headers=same)[0] == 200


def test_actions_need_post_and_json(fleet_server: FleetServer) -> None:
    assert call(fleet_server, "/api/resume")[0] == 405
    req = urllib.request.Request(fleet_server.url + "/api/resume", data=b"task=x", method="POST",
                                 headers={"Authorization": AUTH, "X-AQ-CSRF": "1",
                                          "Content-Type": "application/x-www-form-urlencoded"})
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=10)
    assert exc.value.code == 415
    big = {"task": "alpha:" + "A" * 20000}
    assert call(fleet_server, "/api/retry", method="POST", body=big, headers=ACTION)[0] == 413
    assert call(fleet_server, "/api/retry", method="POST", body=["alpha:F1"], headers=ACTION)[0] == 400


def test_retry_validates_the_task(fleet_server: FleetServer, settings: Settings) -> None:
    failed = _failed_task(settings, "alpha", "F1")
    for ref in ["../../etc:passwd", "alpha:../x", "alpha", ":", "alpha:F1\n", "alpha:.", 7, None, "alpha:NOPE",
                "alpha:F1/../F1", ["alpha:F1"]]:
        status, _, body = call(fleet_server, "/api/retry", method="POST", body={"task": ref}, headers=ACTION)
        assert status == 400, (ref, body)
    assert failed.exists()


def test_retry_requeues_a_failed_task(fleet_server: FleetServer, settings: Settings,
                                      sys_redis: redis.Redis[str]) -> None:
    failed = _failed_task(settings, "alpha", "F1")
    status, _, body = call(fleet_server, "/api/retry", method="POST", body={"task": "alpha:F1"}, headers=ACTION)
    assert status == 200, body
    assert not failed.exists() and aq.project(settings.projects_dir, "alpha").task_path("F1").exists()
    assert ("retried", "alpha:F1") in [(e.kind, e.task) for e in events.recent(sys_redis, 20)]


def test_pause_and_resume(fleet_server: FleetServer, sys_redis: redis.Redis[str]) -> None:
    status, _, body = call(fleet_server, "/api/pause", method="POST", body={"until": "yesterday"}, headers=ACTION)
    assert status == 400 and b"duration" in body
    status, _, body = call(fleet_server, "/api/pause", method="POST", body={"until": "30m", "reason": "lunch"},
                           headers=ACTION)
    assert status == 200, body
    held = pause.stored(sys_redis)
    assert held is not None and (held.cause, held.reason) == (pause.OPERATOR, "lunch")
    snap = json.loads(call(fleet_server, "/api/snapshot")[2])
    wait_for(lambda: json.loads(call(fleet_server, "/api/snapshot")[2])["status"]["paused"], timeout=10,
             what="snapshot says paused")
    assert snap is not None
    status, _, body = call(fleet_server, "/api/resume", method="POST", body={}, headers=ACTION)
    assert status == 200 and pause.stored(sys_redis) is None
    kinds = [e.kind for e in events.recent(sys_redis, 10)]
    assert kinds[-2:] == ["paused", "unpaused"]


def test_stream_sends_snapshots_and_events(fleet_server: FleetServer, sys_redis: redis.Redis[str]) -> None:
    events.emit(sys_redis, "failed", task="alpha:T1", detail="before connect")
    req = urllib.request.Request(fleet_server.url + "/api/stream", headers={"Authorization": AUTH})
    seen: list[str] = []
    with urllib.request.urlopen(req, timeout=20) as res:
        assert res.headers["Content-Type"].startswith("text/event-stream")
        emitted = False
        for raw in res:
            line = raw.decode().rstrip("\n")
            seen.append(line)
            if line == "event: snapshot" and not emitted:
                events.emit(sys_redis, "stuck", task="alpha:T2", detail="after connect")
                emitted = True
            if line.startswith("data: ") and "after connect" in line:
                break
    assert any("before connect" in x for x in seen)
    assert any(x.startswith("id: ") for x in seen)


def test_up_web_serves_the_page_with_generated_credentials(tmp_path: Path) -> None:
    """`dispatcher up --web`: the page runs beside the rest, on loopback, with a password generated once (0600)."""
    import os
    import signal
    import stat
    import subprocess
    import sys
    import uuid

    import yaml

    from dispatcher.web import bound_socket

    with bound_socket() as probe:
        port = probe.getsockname()[1]
    socket_name = f"aqweb-{uuid.uuid4().hex[:10]}"
    cfg = {"projects_dir": "projects", "state_dir": "state", "tmux": {"socket_name": socket_name},
           "pool": {"max": 1}, "web": {"port": port}}
    (tmp_path / "dispatcher.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "FLOWER_BASIC_AUTH", "AQ_STATE_DIR")}
    env["DISPATCHER_CONFIG"] = str(tmp_path / "dispatcher.yaml")
    up = subprocess.Popen([sys.executable, "-m", "dispatcher", "up", "--web"], cwd=tmp_path, env=env,
                          stdout=subprocess.DEVNULL, stderr=open(tmp_path / "up.log", "wb"), start_new_session=True)
    try:
        auth_file = tmp_path / "state" / "web-auth"
        wait_for(auth_file.exists, timeout=60, what=lambda: f"web-auth; log {(tmp_path / 'up.log').read_text()[-800:]}")
        assert stat.S_IMODE(auth_file.stat().st_mode) == 0o600
        user, password = auth_file.read_text().strip().split(":", 1)
        good = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

        def get(auth: str | None) -> int:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/api/snapshot")
            if auth:
                req.add_header("Authorization", auth)
            try:
                with urllib.request.urlopen(req, timeout=10) as res:
                    return int(res.status)
            except urllib.error.HTTPError as exc:
                return exc.code
            except OSError:
                return 0

        wait_for(lambda: get(good) == 200, timeout=60, what="the fleet page answering")
        assert get(None) == 401
    finally:
        os.killpg(up.pid, signal.SIGINT)
        assert up.wait(timeout=60) == 0
        Tmux(socket_name).kill_server()
