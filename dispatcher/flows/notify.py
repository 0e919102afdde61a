"""Notifications: run ``notify.command`` and/or POST ``notify.webhook`` on the events a human must act on.

A follower reads the event stream through a Redis consumer group, so each event
is notified once however many hosts run one, and dispatch never waits for a
slow webhook: the follower is its own process (``dispatcher notify``, started
by ``dispatcher up`` when ``notify`` is configured). The command runs without a
shell, the event as JSON on stdin; the webhook gets the same JSON. At most
``notify.per_minute`` notifications per event kind and minute (a storm of
failures sends a few, then one line in the log).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import redis

from dispatcher.core import keys
from dispatcher.core.config import NotifySettings

logger = logging.getLogger(__name__)

GROUP = "notify"


def payload(event_id: str, fields: Mapping[str, Any], host: str) -> dict[str, Any]:
    """The JSON a command or webhook receives (``text``: one line for chat webhooks)."""
    kind, task, session, detail = (str(fields.get(k, "")) for k in ("kind", "task", "session", "detail"))
    try:
        at = float(fields.get("time", 0))
    except ValueError:
        at = 0.0
    where = " ".join(x for x in (task, f"@ {session}" if session else "") if x)
    text = f"[agent-queue] {kind}" + (f" {where}" if where else "") + (f": {detail}" if detail else "")
    return {"id": event_id, "time": at, "kind": kind, "task": task, "session": session, "detail": detail,
            "host": host, "text": text[:2000]}


def allowed(r: redis.Redis, kind: str, per_minute: int, now: float) -> bool:
    """Count one notification of ``kind`` in this minute; False once the minute's budget is spent."""
    key = keys.notify_window(kind, int(now // 60))
    pipe = r.pipeline(transaction=True)
    pipe.incr(key)
    pipe.expire(key, 120)
    count = int(pipe.execute()[0])
    if count == per_minute + 1:
        logger.warning("more than %d %r notifications this minute: the rest are dropped until the next", per_minute,
                       kind)
    return count <= per_minute


def run_command(command: str, data: dict[str, Any], timeout: float) -> None:
    """Run ``command`` (no shell) with ``data`` as JSON on stdin; raises on failure or timeout."""
    env = {**os.environ, "AQ_EVENT_KIND": data["kind"], "AQ_EVENT_TASK": data["task"],
           "AQ_EVENT_SESSION": data["session"], "AQ_EVENT_TEXT": data["text"]}
    proc = subprocess.run(shlex.split(command), input=json.dumps(data).encode(), capture_output=True,
                          timeout=timeout, check=False, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.decode('utf-8', 'replace').strip()[:300]}")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A webhook that redirects is refused (no surprise destinations)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def post_webhook(url: str, data: dict[str, Any], timeout: float) -> None:
    """POST ``data`` as JSON to an http(s) ``url``; raises on a non-2xx answer or timeout."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"webhook must be http(s): {url!r}")
    req = urllib.request.Request(url, data=json.dumps(data).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "User-Agent": "agent-queue-dispatcher"})
    opener = urllib.request.build_opener(_NoRedirect)
    with opener.open(req, timeout=timeout) as res:
        if not 200 <= res.status < 300:
            raise urllib.error.HTTPError(url, res.status, "not 2xx", res.headers, None)


def deliver(settings: NotifySettings, data: dict[str, Any]) -> list[str]:
    """Send one notification every configured way; returns the errors (logged, never raised)."""
    errors: list[str] = []
    if settings.command:
        try:
            run_command(settings.command, data, settings.timeout)
        except (OSError, ValueError, RuntimeError, subprocess.TimeoutExpired) as exc:
            errors.append(f"notify.command: {exc}")
    if settings.webhook:
        try:
            post_webhook(settings.webhook, data, settings.timeout)
        except (OSError, ValueError, urllib.error.URLError) as exc:
            errors.append(f"notify.webhook: {exc}")
    for err in errors:
        logger.error("notification of %s %s failed: %s", data["kind"], data["task"], err)
    return errors


def ensure_group(r: redis.Redis) -> None:
    """Create the consumer group at the stream's end (only events from now on are notified)."""
    try:
        r.xgroup_create(keys.EVENTS, GROUP, id="$", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def consumer_name() -> str:
    """Stable per host: a restarted follower picks up what it had read but not yet sent."""
    return f"{socket.gethostname()}"


def handle(settings: NotifySettings, r: redis.Redis, event_id: str, fields: Mapping[str, Any], now: float) -> bool:
    """Notify one event if its kind is wanted and the rate allows; True when sent."""
    kind = str(fields.get("kind", ""))
    if kind not in settings.events or not allowed(r, kind, settings.per_minute, now):
        return False
    deliver(settings, payload(event_id, fields, socket.gethostname()))
    return True


def follow(settings: NotifySettings, r: redis.Redis, stop: threading.Event, *, consumer: str | None = None,
           clock: Callable[[], float] = time.time, block_ms: int = 1000) -> None:
    """Notify events until ``stop`` is set (a Redis error is logged and retried, never fatal)."""
    consumer = consumer or consumer_name()
    cursor = "0"  # first what this consumer read before a restart but did not acknowledge, then new ones
    while not stop.is_set():
        try:
            ensure_group(r)
            rows: Any = r.xreadgroup(GROUP, consumer, {keys.EVENTS: cursor}, count=50,
                                     block=None if cursor == "0" else block_ms) or []
            entries = [e for _stream, batch in rows for e in batch]
            if cursor == "0" and not entries:
                cursor = ">"
            for entry_id, fields in entries:
                if fields:  # a trimmed entry comes back empty: nothing to say
                    handle(settings, r, entry_id, fields, clock())
                r.xack(keys.EVENTS, GROUP, entry_id)
        except redis.RedisError as exc:
            logger.warning("notifications: Redis error %s; retrying", exc)
            stop.wait(2.0)
