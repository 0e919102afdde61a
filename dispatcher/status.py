"""``dispatcher status``: sessions (state, project, task, model, for how long) and per-project counts."""

from __future__ import annotations

import time
from typing import Any

import redis

from . import keys, pool
from .config import Settings
from .report import render_counts
from .scan import run_scan
from .tmux import Tmux


def collect(settings: Settings, r: "redis.Redis | None", tmux: Tmux, *, now: float | None = None) -> dict[str, Any]:
    """Everything status shows, as plain data (also the ``--json`` output)."""
    from . import pool_state

    now = time.time() if now is None else now
    rows: list[dict[str, Any]] = []
    names = settings.pool.names()
    infos = pool_state.read_all(r, tmux, names) if r is not None else {n: pool_state.rebuild(tmux, n) for n in names}
    for name, info in infos.items():
        rows.append({"session": name, "state": info.state.value, "project": info.project, "task": info.task,
                     "model": info.model, "for_s": int(now - info.since) if info.since else None,
                     "detail": info.detail,
                     "cooldown": info.in_cooldown(now, settings.pool.cooldown)})
    pause: dict[Any, Any] = dict(r.hgetall(keys.PAUSE)) if r is not None else {}
    paused = float(pause.get("until", 0) or 0) > now
    result = run_scan(settings, now=now, write=False)
    return {"time": now, "sessions": rows, "counts": result.counts(),
            "paused_until": float(pause["until"]) if paused else None,
            "pause_reason": pause.get("reason", "") if paused else "",
            "redis": r is not None, "attach": pool.attach_command(settings.tmux.socket_name, settings.pool)}


def _dur(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def render(data: dict[str, Any]) -> str:
    """One screen of text."""
    lines = [f"agent-queue status  {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(data['time']))}"]
    if not data["redis"]:
        lines.append("(Redis unreachable: session states rebuilt from tmux)")
    if data["paused_until"]:
        lines.append(f"POOL PAUSED until {time.ctime(data['paused_until'])}: {data['pause_reason']}")
    lines.append("")
    head = f"{'session':<14}{'state':<11}{'task':<32}{'model':<8}{'for':>8}  detail"
    lines.append(head)
    for row in data["sessions"]:
        task = f"{row['project']}:{row['task']}" if row["task"] else "-"
        state = row["state"] + ("*" if row["cooldown"] else "")
        lines.append(f"{row['session']:<14}{state:<11}{task[:31]:<32}{(row['model'] or '-'):<8}"
                     f"{_dur(row['for_s']):>8}  {row['detail'][:60]}")
    lines += ["", render_counts(data["counts"]), "", f"attach: {data['attach']}"]
    if any(r["cooldown"] for r in data["sessions"]):
        lines.append("\n* cooling down after a failure")
    return "\n".join(lines)
