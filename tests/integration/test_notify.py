"""Notifications with real components: a real command writing a file, a real local HTTP server, real Redis."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from system_fixtures import wait_for

from dispatcher.core.config import NotifySettings
from dispatcher.flows import notify
from dispatcher.store import events

WRITER = """
import json, os, sys
data = json.load(sys.stdin)
data["env_kind"] = os.environ.get("AQ_EVENT_KIND")
with open(sys.argv[1], "a", encoding="utf-8") as f:
    f.write(json.dumps(data) + "\\n")
"""


class Hook:
    """A local webhook receiver (loopback); ``delay`` makes it slow, ``status`` makes it fail."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.delay = 0.0
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(outer.delay)  # a slow receiver, on purpose
                outer.bodies.append({"json": json.loads(body), "type": self.headers["Content-Type"]})
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


class Follower:
    """``notify.follow`` in a thread, stopped at the end."""

    def __init__(self, settings: NotifySettings, r: redis.Redis[str], consumer: str = "test",
                 clock: Any = time.time) -> None:
        self.stop = threading.Event()
        notify.ensure_group(r)  # events emitted from now on are notified
        self.thread = threading.Thread(target=notify.follow, args=(settings, r, self.stop),
                                       kwargs={"consumer": consumer, "clock": clock, "block_ms": 100}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_command_gets_the_event_as_json_on_stdin(tmp_path: Path, sys_redis: redis.Redis[str]) -> None:
    script, out = tmp_path / "writer.py", tmp_path / "notes.jsonl"
    script.write_text(WRITER)
    cfg = NotifySettings(command=f"{sys.executable} {script} '{out}'")
    f = Follower(cfg, sys_redis)
    try:
        events.emit(sys_redis, "launched", task="web:T1", session="ccl-auto-0")  # not for a human
        events.emit(sys_redis, "failed", task="web:T1", session="ccl-auto-0", detail="agent idle; `rm -rf /`; $(x)")
        events.emit(sys_redis, "waiting", task="web:T2", session="ccl-auto-1", detail="Allow editing config.py? (y/n)")
        wait_for(lambda: len(_lines(out)) >= 2, timeout=20, what="two notifications")
        got = _lines(out)
        assert [g["kind"] for g in got] == ["failed", "waiting"]
        assert got[0]["detail"] == "agent idle; `rm -rf /`; $(x)" and got[0]["env_kind"] == "failed"
        assert got[1]["text"] == "[agent-queue] waiting web:T2 @ ccl-auto-1: Allow editing config.py? (y/n)"
    finally:
        f.close()


def test_webhook_posts_json_and_a_slow_or_failing_one_blocks_nothing(tmp_path: Path, sys_redis: redis.Redis[str],
                                                                      hook: Hook) -> None:
    cfg = NotifySettings(webhook=hook.url, timeout=1.0)
    f = Follower(cfg, sys_redis)
    try:
        events.emit(sys_redis, "paused", detail="API rate limit (429) until 10:00")
        wait_for(lambda: hook.bodies, timeout=20, what="webhook call")
        assert hook.bodies[0]["type"] == "application/json" and hook.bodies[0]["json"]["kind"] == "paused"
        hook.status = 500
        events.emit(sys_redis, "stuck", task="web:T3")
        wait_for(lambda: len(hook.bodies) == 2, timeout=20, what="second call (answered 500)")
        hook.status, hook.delay = 200, 3.0  # longer than the timeout
        events.emit(sys_redis, "stuck", task="web:T4")
        events.emit(sys_redis, "unpaused", detail="by operator")
        wait_for(lambda: any(b["json"]["kind"] == "unpaused" for b in hook.bodies), timeout=30,
                 what="the follower goes on after a timed-out call")
    finally:
        f.close()


def test_rate_limited_per_kind_and_minute(tmp_path: Path, sys_redis: redis.Redis[str]) -> None:
    script, out = tmp_path / "writer.py", tmp_path / "notes.jsonl"
    script.write_text(WRITER)
    cfg = NotifySettings(command=f"{sys.executable} {script} {out}", per_minute=3)
    minute = [1_800_000_000.0]
    f = Follower(cfg, sys_redis, clock=lambda: minute[0])
    try:
        for i in range(10):
            events.emit(sys_redis, "failed", task=f"web:F{i}")
        events.emit(sys_redis, "stuck", task="web:S1")  # another kind has its own budget
        wait_for(lambda: any(x["kind"] == "stuck" for x in _lines(out)), timeout=30, what="the stuck notification")
        assert [x["task"] for x in _lines(out) if x["kind"] == "failed"] == ["web:F0", "web:F1", "web:F2"]
        minute[0] += 60  # the next minute: a new budget
        events.emit(sys_redis, "failed", task="web:F10")
        wait_for(lambda: any(x["task"] == "web:F10" for x in _lines(out)), timeout=20, what="next minute's one")
    finally:
        f.close()


def test_two_followers_notify_each_event_once(tmp_path: Path, sys_redis: redis.Redis[str]) -> None:
    script, out = tmp_path / "writer.py", tmp_path / "notes.jsonl"
    script.write_text(WRITER)
    cfg = NotifySettings(command=f"{sys.executable} {script} {out}", per_minute=100)
    a, b = Follower(cfg, sys_redis, "host-a"), Follower(cfg, sys_redis, "host-b")
    try:
        for i in range(12):
            events.emit(sys_redis, "failed", task=f"web:F{i}")
        events.emit(sys_redis, "stuck", task="web:END")
        wait_for(lambda: len(_lines(out)) >= 13, timeout=40, what="13 notifications")
        assert sorted(x["task"] for x in _lines(out)) == sorted([f"web:F{i}" for i in range(12)] + ["web:END"])
    finally:
        a.close()
        b.close()


def test_notify_test_command(tmp_path: Path, hook: Hook) -> None:
    import os
    import subprocess

    import yaml

    (tmp_path / "dispatcher.yaml").write_text(yaml.safe_dump({"notify": {"webhook": hook.url}}))
    env = {**os.environ, "DISPATCHER_CONFIG": str(tmp_path / "dispatcher.yaml")}
    ok = subprocess.run([sys.executable, "-m", "dispatcher", "notify", "--test"], env=env, capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0 and hook.bodies[0]["json"]["kind"] == "test", ok.stderr
    hook.status = 500
    bad = subprocess.run([sys.executable, "-m", "dispatcher", "notify", "--test"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 1 and "notify.webhook" in bad.stdout
