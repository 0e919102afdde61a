"""What the fleet page shows, as plain JSON-able data (blocking I/O: run it in a thread).

Builds on ``status.collect`` (sessions, counts, pause, holds, hosts when the
multi-host status provides them) and adds what a person in a browser wants:
each session's screen tail, the tasks of each project by state, the
dependency graph as SVG, and recent events.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import redis

from dispatcher.agent.tmux import Tmux
from dispatcher.core import defaults as d
from dispatcher.core import depgraph
from dispatcher.core.config import Settings
from dispatcher.core.errors import DispatcherError
from dispatcher.core.plan import plan as scan_plan
from dispatcher.flows.status import collect as status_collect
from dispatcher.inbox import files as aq
from dispatcher.inbox import markers
from dispatcher.inbox.scanner import read_inboxes
from dispatcher.store import events

logger = logging.getLogger(__name__)


def tail(text: str, lines: int) -> str:
    """The last ``lines`` lines of a screen, trailing blank lines dropped."""
    rows = text.rstrip().splitlines()
    return "\n".join(rows[-lines:])


def this_host(status: dict[str, Any]) -> str | None:
    """This host's name when the status knows it (its ``host``, or the host row marked ``this``), else None."""
    if isinstance(status.get("host"), str):
        return str(status["host"])
    for h in status.get("hosts") or []:
        if isinstance(h, dict) and h.get("this"):
            return str(h.get("host"))
    return None


def local_sessions(status: dict[str, Any]) -> list[str]:
    """Sessions whose tmux server is on this host (their screens can be read here)."""
    here = this_host(status)
    return [row["session"] for row in status.get("sessions", [])
            if row.get("state") != "missing" and (row.get("host") in (None, here))]


def screens(tmux: Tmux, names: list[str], lines: int = d.WEB_SCREEN_LINES) -> dict[str, str]:
    """Screen tails of ``names`` (a session that vanished meanwhile is skipped)."""
    out: dict[str, str] = {}
    for name in names[: d.WEB_MAX_SCREENS]:
        try:
            out[name] = tail(tmux.capture(name), lines)
        except DispatcherError:
            continue
    return out


def _recent_done(proj: aq.Project, count: int) -> list[dict[str, Any]]:
    try:
        entries = [(e.stat().st_mtime, e.name) for e in os.scandir(proj.done)
                   if e.name.endswith(d.TASK_SUFFIX) and not e.name.startswith(".")]
    except OSError:
        return []
    entries.sort(reverse=True)
    return [{"id": name[: -len(d.TASK_SUFFIX)], "state": "done", "since": mtime} for mtime, name in entries[:count]]


def tasks(settings: Settings, now: float) -> tuple[dict[str, list[dict[str, Any]]], depgraph.Graph]:
    """Tasks per project (state, title, reason, since) and the dependency graph, from one scan."""
    snaps, loaded = read_inboxes(settings)
    result = scan_plan(snaps, loaded, now=now, incomplete_grace=settings.incomplete_grace)
    by_project: dict[str, list[dict[str, Any]]] = {s.project.name: [] for s in snaps}
    mtime = {(s.project.name, name): e.mtime for s in snaps for name, e in s.inbox.items()}

    def row(project: str, task_id: str, state: str, title: str = "", reason: str = "", suffix: str = "") -> None:
        rows = by_project.setdefault(project, [])
        if sum(1 for x in rows if x["state"] == state) < d.WEB_TASKS_PER_STATE:
            rows.append({"id": task_id, "state": state, "title": title, "reason": reason,
                         "since": mtime.get((project, f"{task_id}{d.TASK_SUFFIX}{suffix}"))})

    for t in result.eligible:
        row(t.project, t.id, "ready", t.title)
    for state, items in (("waiting", result.waiting), ("blocked", result.blocked), ("stuck", result.stuck)):
        for t, why in items:
            row(t.project, t.id, state, t.title, why)
    for p in result.invalid + result.incomplete:
        row(p.project, p.name[: -len(d.TASK_SUFFIX)] if p.name.endswith(d.TASK_SUFFIX) else p.name, "invalid",
            reason=p.reason)
    suffixes = {"launching": d.LAUNCHING, "dispatched": d.DISPATCHED, "failed": d.FAILED}
    projects = {s.project.name: s.project for s in snaps}
    for state, flight in result.in_flight.items():
        for project, task_id in flight:
            why = ""
            if state == "failed":
                note = markers.read_failure(projects[project].task_path(task_id), limit=2048)
                why = note.splitlines()[0] if note else ""
            row(project, task_id, state, reason=why, suffix=suffixes[state])
    for name, proj in projects.items():
        by_project[name] += _recent_done(proj, d.WEB_RECENT_DONE)
    return by_project, depgraph.build(result, limit=d.WEB_GRAPH_MAX_NODES)


def snapshot(settings: Settings, r: redis.Redis | None, tmux: Tmux, *, now: float | None = None) -> dict[str, Any]:
    """Everything the page shows at one moment."""
    now = time.time() if now is None else now
    status = status_collect(settings, r, tmux, now=now)
    by_project, graph = tasks(settings, now)
    return {"time": now, "status": status, "tasks": by_project,
            "screens": screens(tmux, local_sessions(status)),
            "graph": {"svg": depgraph.render_svg(graph), "cycles": graph.cycles,
                      "nodes": len(graph.nodes), "omitted": graph.omitted},
            "pool": {"socket": settings.tmux.socket_name, "names": list(settings.pool.names())},
            "this_host": this_host(status)}


class Snapshots:
    """One shared snapshot, recomputed at most every ``max_age`` seconds whatever the number of viewers."""

    def __init__(self, settings: Settings, r: redis.Redis | None, tmux: Tmux, max_age: float = d.WEB_REFRESH_S):
        self.settings, self.r, self.tmux, self.max_age = settings, r, tmux, max_age
        self._lock = threading.Lock()
        self._at = 0.0
        self._value: dict[str, Any] | None = None

    def get(self) -> dict[str, Any]:
        """The current snapshot (computed by the first caller after it aged)."""
        with self._lock:
            if self._value is None or time.monotonic() - self._at >= self.max_age:
                self._value = snapshot(self.settings, self.redis(), self.tmux)
                self._at = time.monotonic()
            return self._value

    def redis(self) -> redis.Redis | None:
        """The Redis client when it answers, else None (the page then shows what tmux and files say)."""
        if self.r is None:
            return None
        try:
            self.r.ping()
        except redis.RedisError as exc:
            logger.warning("Redis unreachable: %s", exc)
            return None
        return self.r


def recent_events(r: redis.Redis | None, after: str | None,
                  count: int = d.WEB_EVENTS_BACKLOG) -> list[dict[str, Any]]:
    """Events newer than stream id ``after`` (None: the last ``count``), oldest first."""
    if r is None:
        return []
    try:
        found = events.recent(r, count) if after is None else events.since(r, after, count)
    except redis.RedisError as exc:
        logger.warning("cannot read events: %s", exc)
        return []
    return [{"id": e.id, "time": e.time, "kind": e.kind, "task": e.task, "session": e.session, "detail": e.detail}
            for e in found]
