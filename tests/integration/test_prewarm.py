"""Pre-warmed agents (``agent.prewarm``), inline: real Redis, real tmux pool, fake agents, real files.

A warm agent is booted in a free session before its task exists; a dispatch that fits it
only pastes. These tests read the fake agent's log: every agent logs ``start`` (with its
Claude session id), and every message it receives, so "typed into by nothing but a
dispatch" is "its only message is its task's".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
from system_fixtures import add_task, done_ids, wait_for

from dispatcher.agent import pool_state, warm
from dispatcher.agent.tmux import Tmux
from dispatcher.core.config import Settings
from dispatcher.core.defaults import WARM_LOCK_TTL_S
from dispatcher.flows import monitor, runtime, status
from dispatcher.flows import warm as warming
from dispatcher.flows.dispatch import Dispatcher
from dispatcher.inbox import files as aq
from dispatcher.store import sessions as ss
from dispatcher.store.sessions import State


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The system settings with warming on and one task per project at a time (warm agents must not count)."""
    return replace(settings, agent=replace(settings.agent, prewarm=True), max_parallel=1)


def log_rows(log: Path, event: str) -> list[dict[str, Any]]:
    import json

    if not log.exists():
        return []
    rows = [json.loads(x) for x in log.read_text(encoding="utf-8").splitlines() if x.strip()]
    return [r for r in rows if r.get("event") == event]


def by_agent(log: Path) -> dict[str, list[str]]:
    """Claude session id → the messages that agent received, for every agent that started."""
    out: dict[str, list[str]] = {row["session_id"]: [] for row in log_rows(log, "start")}
    for row in log_rows(log, "message"):
        out.setdefault(row["session_id"], []).append(row["text"])
    return out


def with_settings(disp: Dispatcher, changed: Settings) -> Dispatcher:
    """The same adapters under other settings (the launcher bound to them too, as a restarted worker's is)."""
    return Dispatcher(replace(disp.ports, settings=changed,
                              launch=runtime.agent_launcher(changed, disp.r, disp.tmux)))


def run_to_done(disp: Dispatcher, settings: Settings, project: str, task_id: str) -> None:
    wait_for(lambda: task_id in done_ids(settings, project), timeout=30, what=f"{project}:{task_id} done",
             step=lambda: monitor.monitor_all(disp))


def warm_tags(disp: Dispatcher) -> dict[str, warm.WarmTag]:
    return {n: tag for n in disp.settings.pool.names() if (tag := warm.read_tag(disp.tmux, n)) is not None}


def first_task_then_warm(disp: Dispatcher, settings: Settings) -> tuple[str, warm.WarmTag]:
    """One cold task of alpha (teaches what to warm); when it is done, a session is warmed for alpha."""
    add_task(settings, "alpha", "T1")
    assert disp.assign_next("ccl-auto-0").status == "dispatched"
    run_to_done(disp, settings, "alpha", "T1")
    tags = wait_for(lambda: warm_tags(disp), timeout=30, what="a warm agent", step=lambda: monitor.monitor_all(disp))
    assert len(tags) == 1, tags  # one per (project, model) the next tasks need
    name, tag = next(iter(tags.items()))
    wait_for(lambda: tag.uuid in by_agent(settings_log(settings)), what="warm agent logged its start")
    return name, tag


def settings_log(settings: Settings) -> Path:
    return Path(settings.agent.env["FAKE_AGENT_LOG"])


def test_warm_agent_gets_its_task_by_paste_only(disp: Dispatcher, settings: Settings, agent_log: Path) -> None:
    name, tag = first_task_then_warm(disp, settings)
    assert (tag.project, tag.model) == ("alpha", "sonnet")
    starts = len(log_rows(agent_log, "start"))
    # Idle and free while warm: the monitor leaves it alone however long it waits (finish_grace is 2 s).
    disp.clock.advance(60)  # type: ignore[attr-defined]
    monitor.monitor_all(disp)
    assert by_agent(agent_log)[tag.uuid] == []
    add_task(settings, "alpha", "T2")
    outcomes = disp.fan_out()
    assert [o.session for o in outcomes if o.status == "dispatched"] == [name], outcomes
    assert len(log_rows(agent_log, "start")) == starts  # no agent was started for T2
    run_to_done(disp, settings, "alpha", "T2")
    received = by_agent(agent_log)
    # The warm agent received T2, and nothing else, ever.
    assert len(received[tag.uuid]) == 1 and received[tag.uuid][0].startswith("[T2.md] Work on T2.")
    cwd = {row["session_id"]: row["cwd"] for row in log_rows(agent_log, "start")}[tag.uuid]
    assert Path(cwd) == settings.projects_dir / "alpha"


@pytest.mark.parametrize("change", ["model", "env"])
def test_a_warm_agent_that_does_not_fit_is_replaced_by_a_cold_start(
        disp: Dispatcher, settings: Settings, agent_log: Path, sys_redis: redis.Redis, tmux_pool: Tmux,
        change: str) -> None:
    name, tag = first_task_then_warm(disp, settings)
    priority = "default"
    if change == "model":
        priority = "critical"  # opus, not the warm agent's sonnet
    else:  # the same deployment restarted with another agent.env: the warm agent's environment is stale
        changed = replace(settings, agent=replace(settings.agent, env={**settings.agent.env, "EXTRA": "1"}))
        disp = with_settings(disp, changed)
    add_task(settings, "alpha", "T2", priority=priority)
    assert disp.assign_next(name).status == "dispatched"
    run_to_done(disp, settings, "alpha", "T2")
    received = by_agent(agent_log)
    assert received[tag.uuid] == []  # the warm agent was never typed into: it was replaced
    fresh = [row for row in log_rows(agent_log, "message") if row["text"].startswith("[T2.md]")]
    assert len(fresh) == 1 and fresh[0]["session_id"] != tag.uuid
    assert fresh[0]["model"] == ("opus" if change == "model" else "sonnet")


def test_warm_agents_count_as_free_not_working(disp: Dispatcher, settings: Settings, agent_log: Path,
                                               tmux_pool: Tmux) -> None:
    name, tag = first_task_then_warm(disp, settings)
    infos = disp.pool_infos()
    assert {n: i.state for n, i in infos.items()} == dict.fromkeys(settings.pool.names(), State.IDLE)
    assert name in disp.free_sessions()
    data = status.collect(settings, disp.r, tmux_pool, now=disp.clock())
    assert data["hosts"][0]["working"] == 0 if data["hosts"] else True
    assert all(row["state"] == "idle" and not row["task"] for row in data["sessions"])
    assert [row["warm"] for row in data["sessions"] if row["session"] == name] == ["alpha (sonnet)"]
    assert "warm agent for alpha (sonnet)" in status.render(data)
    # max_parallel is 1: the warm agent in alpha does not hold alpha's slot.
    add_task(settings, "alpha", "T2", body="@fake: await GO")
    add_task(settings, "beta", "B1", body="@fake: await GO")
    outcomes = disp.fan_out()
    assert sorted(o.task for o in outcomes if o.status == "dispatched") == ["alpha:T2", "beta:B1"], outcomes
    info = ss.get(disp.r, disp.ref(name))
    assert info is not None and info.task == "T2" and info.agent_uuid == tag.uuid
    # A tmux copy that says working names the warm agent: the monitor's "agent replaced" check agrees.
    assert pool_state.read_tmux_copy(tmux_pool, name)["agent_uuid"] == tag.uuid
    monitor.monitor_all(disp)
    assert ss.get(disp.r, disp.ref(name)).state is State.WORKING  # type: ignore[union-attr]


def test_a_warm_agent_typed_into_is_not_used(disp: Dispatcher, settings: Settings, agent_log: Path,
                                             tmux_pool: Tmux) -> None:
    """Someone typed into the warm agent (an operator attached): a dispatch starts a clean agent instead."""
    name, tag = first_task_then_warm(disp, settings)
    tmux_pool.send_literal(name, "hello from an operator")
    wait_for(lambda: "hello from an operator" in tmux_pool.capture(name), what="typed text shown")
    add_task(settings, "alpha", "T2")
    assert disp.assign_next(name).status == "dispatched"
    run_to_done(disp, settings, "alpha", "T2")
    fresh = [row for row in log_rows(agent_log, "message") if row["text"].startswith("[T2.md]")]
    assert len(fresh) == 1 and fresh[0]["session_id"] != tag.uuid
    assert "hello from an operator" not in fresh[0]["text"]
    # The cold agent got a Claude session id of its own (the typed-into one may hold a conversation),
    # and the session's record names it: a resume resumes the agent that has the task.
    assert fresh[0]["argv"][fresh[0]["argv"].index("--session-id") + 1] == fresh[0]["session_id"]
    info = ss.get(disp.r, disp.ref(name))
    assert info is not None and info.agent_uuid == fresh[0]["session_id"]


WARM_CHILD = """
import json, sys
import redis
from dispatcher.agent.tmux import Tmux
from dispatcher.core.config import AgentSettings, PoolSettings, Settings, TmuxSettings
from dispatcher.flows import runtime, warm
from dispatcher.flows.dispatch import Dispatcher
from dispatcher.inbox import files as aq
from dispatcher.flows.ports import Ports
a = json.loads(sys.argv[1])
from pathlib import Path
settings = Settings(projects_dir=Path(a["projects_dir"]), pool=PoolSettings(prefix="ccl-auto-", max=3),
                    tmux=TmuxSettings(socket_name=a["socket"]), state_dir=Path(a["state_dir"]),
                    redis_url=a["redis_url"],
                    agent=AgentSettings(command=a["command"], resume_dir=Path(a["resume_dir"]), env=a["env"],
                                        prewarm=True, prompt_timeout=60.0))
r = redis.Redis.from_url(a["redis_url"], decode_responses=True)
tmux = Tmux(a["socket"])
disp = Dispatcher(Ports(settings, r, tmux, runtime.agent_launcher(settings, r, tmux)))
warm.warm_session(disp, "ccl-auto-1", "alpha", "default")
"""


def child_args(settings: Settings, **env: str) -> str:
    import json

    return json.dumps({"projects_dir": str(settings.projects_dir), "socket": settings.tmux.socket_name,
                       "state_dir": str(settings.state_dir), "redis_url": settings.redis_url,
                       "command": settings.agent.command, "resume_dir": str(settings.agent.resume_dir),
                       "env": {**settings.agent.env, **env}})


def test_worker_killed_while_warming_leaves_no_stuck_session(disp: Dispatcher, settings: Settings, agent_log: Path,
                                                              tmux_pool: Tmux) -> None:
    add_task(settings, "alpha", "T0", body="@fake: await GO\n@fake: done")
    assert disp.assign_next("ccl-auto-0").status == "dispatched"
    child = subprocess.Popen([sys.executable, "-c", WARM_CHILD, child_args(settings, FAKE_AGENT_BOOT_MS="20000")],
                             cwd=Path(__file__).resolve().parents[2])
    try:
        wait_for(lambda: any(r["aq_session"].endswith("/ccl-auto-1") for r in log_rows(agent_log, "start")),
                 timeout=30, what="warm agent booting in ccl-auto-1")
        assert "ccl-auto-1" not in disp.free_sessions()  # the warm pass holds its launch lock
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=10)
    # The session never left idle; no warm tag (the agent never got ready); the lock expires by itself.
    assert ss.get(disp.r, disp.ref("ccl-auto-1")).state is State.IDLE  # type: ignore[union-attr]
    assert warm.read_tag(tmux_pool, "ccl-auto-1") is None
    wait_for(lambda: "ccl-auto-1" in disp.free_sessions(), timeout=WARM_LOCK_TTL_S * 3, what="session free again")
    # Nothing lost: the next task goes there and runs (a cold start replaces the half-booted agent).
    (settings.projects_dir / "alpha" / ".agent-queue" / "GO").write_text("")
    run_to_done(disp, settings, "alpha", "T0")
    add_task(settings, "beta", "B1")
    assert disp.assign_next("ccl-auto-1").status == "dispatched"
    run_to_done(disp, settings, "beta", "B1")
    assert [r["text"][:8] for r in log_rows(agent_log, "message")].count("[B1.md] ") == 1


def test_a_task_that_comes_while_warming_gets_the_warm_agent(disp: Dispatcher, settings: Settings, agent_log: Path,
                                                             tmux_pool: Tmux) -> None:
    """The start holds the session (busy for dispatch); when it is over the waiting task is offered the session."""
    import threading

    slow = replace(settings, agent=replace(settings.agent, env={**settings.agent.env, "FAKE_AGENT_BOOT_MS": "1500"}))
    disp = with_settings(disp, slow)
    for name in ("ccl-auto-1", "ccl-auto-2"):  # one session: the task has nowhere else to go
        tmux_pool.kill_session(name)
    aq.ensure_dirs(aq.project(settings.projects_dir, "alpha"))
    starting = threading.Thread(target=warming.warm_session, args=(disp, "ccl-auto-0", "alpha", "default"))
    starting.start()
    try:
        wait_for(lambda: log_rows(agent_log, "start"), what="warm agent booting")
        add_task(settings, "alpha", "T1")
        disp.plan()  # what the watcher's inbox_event does: index it, and offer it to the free sessions
        assert disp.fan_out() == [] and disp.assign_next("ccl-auto-0").status == "busy"
    finally:
        starting.join(timeout=30)
    (start,) = log_rows(agent_log, "start")
    msgs = wait_for(lambda: log_rows(agent_log, "message"), what="T1 delivered")
    assert [m["session_id"] for m in msgs] == [start["session_id"]] and msgs[0]["text"].startswith("[T1.md]")


def test_warming_is_off_by_default(disp: Dispatcher, settings: Settings, agent_log: Path) -> None:
    off = with_settings(disp, replace(settings, agent=replace(settings.agent, prewarm=False)))
    add_task(settings, "alpha", "T1")
    assert off.assign_next("ccl-auto-0").status == "dispatched"
    run_to_done(off, settings, "alpha", "T1")
    monitor.monitor_all(off)
    assert warming.warm_free(off) == [] and warm_tags(off) == {}
    assert len(log_rows(agent_log, "start")) == 1
