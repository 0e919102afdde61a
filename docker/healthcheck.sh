#!/opt/venv/bin/python
"""Container healthcheck of the agent-queue image: `healthcheck [auto|worker|beat|watcher|flower]`.

Every role: Redis (REDIS_URL) answers PING with the configured password.
worker:  + the tmux server of the pool is up with at least one session, and the Celery worker
         answers `inspect ping` (the worker's node name is celery@<hostname> unless AQ_WORKER_NODE).
flower:  + Flower's /healthcheck answers 200 with the basic-auth credentials (FLOWER_BASIC_AUTH).
auto:    the role is read from the container's command line (PID 1 is tini).
Exit 0 = healthy; otherwise prints why and exits 1.
"""
from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request


def fail(msg: str) -> None:
    print(f"unhealthy: {msg}", file=sys.stderr)
    sys.exit(1)


def cmdline() -> list[str]:
    try:
        with open("/proc/1/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def detect(args: list[str]) -> str:
    if "dispatcher" in args and "watch" in args:
        return "watcher"
    for role in ("flower", "beat", "worker"):
        if role in args:
            return role
    return "worker"


def option(args: list[str], name: str, default: str) -> str:
    for i, a in enumerate(args):
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
        if a == name and i + 1 < len(args):
            return args[i + 1]
    return default


def check_redis() -> None:
    url = os.environ.get("REDIS_URL")
    if not url:
        return
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5).ping()
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
        fail(f"redis: {type(exc).__name__}: {exc}")


def check_worker() -> None:
    try:
        from dispatcher.store.config_file import load_config

        sock = load_config().tmux.socket_name
    except Exception as exc:  # noqa: BLE001
        fail(f"config: {exc}")
    r = subprocess.run(["tmux", "-L", sock, "list-sessions", "-F", "#{session_name}"],
                       capture_output=True, text=True, timeout=10)
    if r.returncode != 0 or not r.stdout.strip():
        fail(f"tmux server -L {sock} has no sessions: {r.stderr.strip() or r.stdout.strip()}")
    node = (os.environ.get("AQ_WORKER_NODE") or "celery@%h").replace("%h", socket.gethostname())
    r = subprocess.run(["celery", "-A", "dispatcher", "inspect", "ping", "--timeout", "10", "-d", node],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0 or "pong" not in r.stdout:
        fail(f"celery worker {node} does not answer ping: {(r.stdout + r.stderr).strip()[-300:]}")


def check_flower(args: list[str]) -> None:
    port = option(args, "--port", os.environ.get("FLOWER_PORT", "5555"))
    address = option(args, "--address", os.environ.get("FLOWER_ADDRESS", "127.0.0.1"))
    if address in ("", "0.0.0.0", "::"):
        address = "127.0.0.1"
    req = urllib.request.Request(f"http://{address}:{port}/healthcheck")
    auth = option(args, "--basic-auth", os.environ.get("FLOWER_BASIC_AUTH", ""))
    if auth:
        token = base64.b64encode(auth.split(",")[0].encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            if resp.status != 200:
                fail(f"flower answered {resp.status}")
    except (urllib.error.URLError, OSError) as exc:
        fail(f"flower: {exc}")


def main() -> None:
    args = cmdline()
    role = sys.argv[1] if len(sys.argv) > 1 else "auto"
    if role == "auto":
        role = detect(args)
    check_redis()
    if role == "worker":
        check_worker()
    elif role == "flower":
        check_flower(args)
    elif role not in ("beat", "watcher"):
        fail(f"unknown role {role!r}")
    print(f"healthy: {role}")


if __name__ == "__main__":
    main()
