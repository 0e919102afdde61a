"""After a task or a failed launch the pane holds an idle shell, and status, pool list and the pane agree.

Also: a session killed between the state check and the launch is a launch failure, not an exception
escaping the Celery task; a dialog failure's note carries the last screen lines.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from system_fixtures import Clock, add_task, done_ids, messages, wait_for

from dispatcher.agent import pool
from dispatcher.agent.tmux import Tmux
from dispatcher.core import keys
from dispatcher.core.config import Settings
from dispatcher.flows import monitor, runtime, status
from dispatcher.flows.dispatch import Dispatcher
from dispatcher.flows.launch import LaunchSpec
from dispatcher.flows.ports import Ports
from dispatcher.flows.resume import resume_session
from dispatcher.inbox import files as aq
from dispatcher.store import sessions as ss
from dispatcher.store.sessions import State


def _log_entries(log: Path) -> list[dict[str, Any]]:
    """Every line the fake agents logged (start, message, exit…)."""
    if not log.exists():
        return []
    return [json.loads(x) for x in log.read_text(encoding="utf-8").splitlines() if x.strip()]


def _shell_name() -> str:
    return Path(pool.idle_shell()[0]).name


def _pane_command(tmux: Tmux, settings: Settings, name: str) -> str:
    [row] = [p for p in pool.status(tmux, settings.pool) if p.name == name]
    return "dead" if row.dead else row.command


def _assert_idle_shell_everywhere(d: Dispatcher, settings: Settings, name: str) -> None:
    """The pane runs the idle shell (no agent), pool list says so and status says idle."""
    wait_for(lambda: _pane_command(d.tmux, settings, name) == _shell_name(), timeout=15,
             what=lambda: f"{name} running {_shell_name()}, pane runs {_pane_command(d.tmux, settings, name)!r}; "
                          f"screen:\n{d.tmux.capture(name)}")
    row = {r["session"]: r for r in status.collect(settings, d.r, d.tmux)["sessions"]}[name]
    assert row["state"] == "idle" and row["task"] == ""
    assert _pane_command(d.tmux, settings, name) == _shell_name()  # still: nothing re-ran in the meantime


def test_finished_task_leaves_an_idle_shell_not_the_last_agent(disp: Dispatcher, settings: Settings,
                                                               agent_log: Path) -> None:
    add_task(settings, "p", "F1")
    assert disp.assign_next("ccl-auto-0").status == "dispatched"
    wait_for(lambda: done_ids(settings, "p") == {"F1"} and disp.session_info("ccl-auto-0").state is State.IDLE,
             timeout=60, what="F1 finished", step=lambda: monitor.monitor_all(disp))
    _assert_idle_shell_everywhere(disp, settings, "ccl-auto-0")
    starts = [m for m in _log_entries(agent_log) if m["event"] == "start"]
    assert len(starts) == 1


def test_failed_launch_leaves_an_idle_shell_not_the_last_agent(settings: Settings, sys_redis, tmux_pool: Tmux,
                                                               clock: Clock, agent_log: Path) -> None:
    # The bypass dialog: a launch failure (the trust dialog holds the project instead: test_trust.py).
    s = settings.with_overrides(agent=replace(settings.agent,
                                              env={**settings.agent.env, "FAKE_AGENT_DIALOG": "bypass"}))
    d = Dispatcher(Ports(s, sys_redis, tmux_pool, runtime.agent_launcher(s, sys_redis, tmux_pool), clock=clock))
    path = add_task(s, "p", "D1")
    assert d.assign_next("ccl-auto-0").status == "launch-failed"
    assert path.exists()  # back to pending for another attempt
    _assert_idle_shell_everywhere(d, s, "ccl-auto-0")


def test_dialog_failure_note_has_the_last_screen_lines(settings: Settings, sys_redis, tmux_pool: Tmux,
                                                      clock: Clock) -> None:
    s = settings.with_overrides(max_launch_attempts=1,
                                agent=replace(settings.agent,
                                              env={**settings.agent.env, "FAKE_AGENT_DIALOG": "bypass"}))
    d = Dispatcher(Ports(s, sys_redis, tmux_pool, runtime.agent_launcher(s, sys_redis, tmux_pool), clock=clock))
    add_task(s, "p", "D2")
    assert d.assign_next("ccl-auto-0").status == "launch-failed"
    inbox = aq.project(s.projects_dir, "p").inbox
    note = (inbox / "D2.md.failure").read_text()
    assert "bypass permissions dialog" in note
    assert "last screen" in note and "running in Bypass Permissions mode" in note


def _racing(d: Dispatcher) -> Dispatcher:
    """The same dispatcher, but its session is killed just before each launch (a real race, made certain)."""
    real = d.launch

    def launch(spec: LaunchSpec) -> None:
        d.tmux.kill_session(spec.session)
        real(spec)

    return Dispatcher(Ports(d.settings, d.r, d.tmux, launch, clock=d.clock))


def test_session_killed_before_the_launch_gives_the_task_back(disp: Dispatcher, settings: Settings,
                                                              clock: Clock) -> None:
    path = add_task(settings, "p", "K1")
    outcome = _racing(disp).assign_next("ccl-auto-0")  # launcher raises a bare SessionError
    assert outcome.status == "launch-failed" and "does not exist" in outcome.detail
    assert path.exists()
    info = ss.get(disp.r, disp.ref("ccl-auto-0"))
    assert info is not None and info.state is State.IDLE
    assert not info.in_cooldown(clock(), settings.pool.cooldown)  # not the task's or the session's fault
    assert disp.r.get(keys.attempts("p", "K1")) is None
    monitor.monitor_all(disp)  # the session is recreated; the task then runs normally
    wait_for(lambda: done_ids(settings, "p") == {"K1"}, timeout=60, what="K1 done",
             step=lambda: (monitor.monitor_all(disp), disp.fan_out()))


def test_session_killed_before_a_resume_requeues_the_task(disp: Dispatcher, settings: Settings,
                                                          agent_log: Path) -> None:
    add_task(settings, "p", "R1", "@fake: hang")
    assert disp.assign_next("ccl-auto-1").status == "dispatched"
    wait_for(lambda: messages(agent_log), what="R1 delivered")
    info = disp.session_info("ccl-auto-1")
    result = resume_session(_racing(disp).ports, info)
    assert result == "resume failed, p:R1 requeued"
    assert aq.project(settings.projects_dir, "p").task_path("R1").exists()
    assert ss.get(disp.r, disp.ref("ccl-auto-1")).state is State.IDLE  # type: ignore[union-attr]
