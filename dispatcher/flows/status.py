"""``dispatcher status``: sessions (state, project, task, model, for how long) and per-project counts."""

from __future__ import annotations

import math
import time
from typing import Any

import redis

from dispatcher.agent import pool, pool_state, warm
from dispatcher.agent.tmux import Tmux
from dispatcher.core.config import Settings
from dispatcher.core.errors import DispatcherError
from dispatcher.core.humanize import duration
from dispatcher.core.report import render_counts
from dispatcher.core.session_ref import SessionRef
from dispatcher.inbox.scanner import run_scan
from dispatcher.store import hosts, pause
from dispatcher.store import sessions as ss
from dispatcher.store.redis_conn import client
from dispatcher.store.sessions import SessionInfo, State


def _row(info: SessionInfo, now: float, cooldown: float, host_alive: bool = True) -> dict[str, Any]:
    return {"session": info.name, "host": info.host, "ref": info.ref, "state": info.state.value,
            "project": info.project, "task": info.task, "model": info.model,
            "for_s": int(now - info.since) if info.since else None, "detail": info.detail,
            "cooldown": info.in_cooldown(now, cooldown), "host_alive": host_alive}


def collect(settings: Settings, r: redis.Redis | None, tmux: Tmux, *, now: float | None = None) -> dict[str, Any]:
    """Everything status shows, as plain data (also the ``--json`` output)."""
    now = time.time() if now is None else now
    me = settings.host.name
    names = settings.pool.names()
    infos = (pool_state.read_all(r, tmux, me, names) if r is not None
             else {n: pool_state.rebuild(tmux, me, n) for n in names})
    rows = [_row(info, now, settings.pool.cooldown) for info in infos.values()]
    if settings.agent.prewarm:  # a free session with a booted agent says for what (it is still free: idle)
        for row in rows:
            tag = warm.read_tag(tmux, row["session"]) if row["state"] == "idle" else None
            row["warm"] = f"{tag.project} ({tag.model})" if tag is not None else ""
    host_rows: list[dict[str, Any]] = []
    registry = hosts.read_all(r) if r is not None else {}
    for name, h in sorted(registry.items()):
        alive = h.alive(now, settings.host_lost_after)
        if name != me and r is not None:
            stored = ss.get_all(r, [SessionRef(name, n) for n in h.sessions])
            rows += [_row(info or SessionInfo(ref.name, State.MISSING, host=name, detail="no state yet"),
                          now, settings.pool.cooldown, alive) for ref, info in stored.items()]
        mine = [row for row in rows if row["host"] == name]
        host_rows.append({"host": name, "alive": alive, "last_seen_s": round(now - h.last_seen, 1),
                          "version": h.version, "account": h.account, "sessions": len(mine),
                          "working": sum(row["state"] in ("launching", "working", "waiting") for row in mine),
                          "idle": sum(row["state"] == "idle" for row in mine), "this": name == me})
    held = pause.current(r, now, settings.host.account) if r is not None else None
    holds = pause.holds(r, now) if r is not None else {}
    result = run_scan(settings, now=now, write=False)
    return {"time": now, "host": me, "hosts": host_rows, "sessions": rows, "counts": result.counts(),
            "waiting": [{"task": str(t.key), "reason": why} for t, why in result.waiting],
            # JSON has no infinity: an operator's open-ended pause has no end time.
            "paused": held is not None,
            "paused_until": held.until if held is not None and math.isfinite(held.until) else None,
            "pause_cause": held.cause if held is not None else "",
            "pause_reason": held.describe() if held is not None else "",
            "held": {p: {"reason": h.reason, "until": h.until} for p, h in sorted(holds.items())},
            "redis": r is not None, "attach": pool.attach_command(settings.tmux.socket_name, settings.pool)}


def current_holds(settings: Settings, *, now: float | None = None) -> dict[str, str]:
    """Held projects → reason, from the running system's Redis; {} when it cannot be reached (dry runs)."""
    try:
        r = client(settings=settings, timeout=1.0)
    except DispatcherError:
        return {}
    try:
        return {p: h.reason for p, h in pause.holds(r, time.time() if now is None else now).items()}
    except redis.RedisError:
        return {}
    finally:
        r.close()


def _dur(seconds: float | None) -> str:
    return duration(seconds)


def _detail(row: dict[str, Any]) -> str:
    return f"warm agent for {row['warm']}" if row.get("warm") else row["detail"]


def render(data: dict[str, Any]) -> str:
    """One screen of text."""
    lines = [f"agent-queue status  {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(data['time']))}"]
    if not data["redis"]:
        lines.append("(Redis unreachable: session states rebuilt from tmux)")
    if data["paused"]:
        left = f" ({_dur(data['paused_until'] - data['time'])} left)" if data.get("paused_until") else ""
        lines.append(f"POOL PAUSED: {data['pause_reason']}{left}")
    for project, hold in data["held"].items():
        lines.append(f"project {project} held until {time.ctime(hold['until'])} "
                     f"({_dur(hold['until'] - data['time'])} left): {hold['reason']}")
    lines.append("")
    fleet = len(data.get("hosts") or []) > 1
    if fleet:
        lines.append(f"{'host':<16}{'state':<8}{'sessions':>9}{'working':>9}{'idle':>6}{'heartbeat':>11}  version")
        for h in data["hosts"]:
            lines.append(f"{h['host'][:15]:<16}{('alive' if h['alive'] else 'LOST'):<8}{h['sessions']:>9}"
                         f"{h['working']:>9}{h['idle']:>6}{_dur(int(h['last_seen_s'])) + ' ago':>11}  {h['version']}")
        lines.append("")
    width = max([14] + [len(row["ref"]) + 2 for row in data["sessions"]]) if fleet else 14
    head = f"{'session':<{width}}{'state':<11}{'task':<32}{'model':<8}{'for':>8}  detail"
    lines.append(head)
    for row in data["sessions"]:
        task = f"{row['project']}:{row['task']}" if row["task"] else "-"
        state = row["state"] + ("*" if row["cooldown"] else "")
        name = row["ref"] if fleet else row["session"]
        lines.append(f"{name:<{width}}{state:<11}{task[:31]:<32}{(row['model'] or '-'):<8}"
                     f"{_dur(row['for_s']):>8}  {_detail(row)[:60]}")
    if data.get("waiting"):
        lines += ["", "waiting:"] + [f"  {w['task']}  — waiting: {w['reason']}" for w in data["waiting"]]
    lines += ["", render_counts(data["counts"]), "", f"attach: {data['attach']}"]
    if any(r["cooldown"] for r in data["sessions"]):
        lines.append("\n* cooling down after a failure")
    return "\n".join(lines)
