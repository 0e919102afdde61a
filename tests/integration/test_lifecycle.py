"""Session lifecycle: finish → next task, failure → .failed + dependents stuck + retry, usage limit → resume, G1."""

from __future__ import annotations

from pathlib import Path

from system_fixtures import Clock, add_task, done_ids, messages, tags_received, wait_for

from dispatcher.core import keys
from dispatcher.core.config import Settings
from dispatcher.flows import blocked, monitor
from dispatcher.flows.dispatch import Dispatcher
from dispatcher.flows.ports import Ports
from dispatcher.flows.retry import retry_task
from dispatcher.inbox import files as aq
from dispatcher.store import events
from dispatcher.store import sessions as ss
from dispatcher.store.sessions import State


def step(d: Dispatcher) -> None:
    monitor.monitor_all(d)
    d.fan_out()


def kinds(d: Dispatcher) -> list[str]:
    return [e.kind for e in events.recent(d.r, 500)]


def test_chain_across_two_projects_runs_unattended_in_order(disp: Dispatcher, settings: Settings,
                                                            agent_log: Path) -> None:
    settings_2 = settings.with_overrides(pool=settings.pool.__class__(prefix="ccl-auto-", max=2))
    d2 = Dispatcher(Ports(settings_2, disp.r, disp.tmux, disp.launch, clock=disp.clock))
    add_task(settings, "front", "C", depends_on=("back:B",))
    add_task(settings, "back", "B", depends_on=("front:A",))
    add_task(settings, "front", "A")
    # The agent moves C to done/ before the monitor's next pass sees it: wait for the monitor's "finished" too.
    wait_for(lambda: done_ids(settings, "front") == {"A", "C"} and done_ids(settings, "back") == {"B"}
             and kinds(disp).count("finished") >= 3, timeout=90, what="A→B→C done and finished", step=lambda: step(d2))
    assert tags_received(agent_log) == ["front:A", "back:B", "front:C"]
    assert kinds(disp).count("finished") == 3


def test_failing_agent_fails_task_dependents_stuck_and_retry_recovers(disp: Dispatcher, settings: Settings,
                                                                      agent_log: Path, clock: Clock) -> None:
    add_task(settings, "p", "UP", "@fake: fail")
    add_task(settings, "p", "DOWN", depends_on=("UP",))
    inbox = aq.project(settings.projects_dir, "p").inbox
    assert disp.assign_next("ccl-auto-0").status == "dispatched"
    wait_for(lambda: (inbox / "UP.md.failed").exists(), timeout=60, what="UP failed", step=lambda: step(disp))
    note = (inbox / "UP.md.failure").read_text()
    assert "not in done/" in note and "last screen lines" in note
    assert (inbox / "DOWN.md.stuck").read_text().startswith("upstream failed: p:UP")
    info = disp.session_info("ccl-auto-0")
    assert info.state is State.IDLE and info.in_cooldown(clock(), settings.pool.cooldown)
    assert "failed" in kinds(disp) and "stuck" in kinds(disp)

    # Fixed upstream: retry puts it back, the dependent is released, both run.
    text = (inbox / "UP.md.failed").read_text().replace("@fake: fail", "@fake: done")
    (inbox / "UP.md.failed").write_text(text)
    retry_task(settings, disp.r, "p:UP")
    assert (inbox / "UP.md").exists() and not (inbox / "DOWN.md.stuck").exists()
    wait_for(lambda: done_ids(settings, "p") == {"UP", "DOWN"}, timeout=90, what="UP, DOWN done",
             step=lambda: step(disp))
    assert tags_received(agent_log).count("p:UP") == 2 and tags_received(agent_log).count("p:DOWN") == 1


def test_usage_limit_pauses_pool_and_resumes_same_conversation(disp: Dispatcher, settings: Settings,
                                                               agent_log: Path, clock: Clock) -> None:
    add_task(settings, "p", "LIM", "@fake: limit")
    add_task(settings, "p", "OTHER")
    assert disp.assign_next("ccl-auto-0").status == "dispatched"
    first = wait_for(lambda: messages(agent_log), what="LIM delivered")[0]
    wait_for(lambda: disp.session_info("ccl-auto-0").state is State.LIMITED, timeout=30, what="limited",
             step=lambda: monitor.monitor_all(disp))
    assert disp.paused_until(clock()) > clock()
    assert disp.fan_out() == []  # account-wide: nothing launches while paused
    resume_file = Path(settings.agent.resume_dir) / "ccl-auto-0-resume-id.txt"
    assert resume_file.read_text().strip() == first["session_id"]
    inbox = aq.project(settings.projects_dir, "p").inbox
    assert (inbox / "LIM.md.dispatched").exists()  # still owned
    disp.r.delete(keys.session_state(str(disp.ref("ccl-auto-0"))))  # Redis loses it: the tmux copy says limited too
    assert disp.session_info("ccl-auto-0").state is State.LIMITED

    clock.advance(26 * 3600)
    wait_for(lambda: len(messages(agent_log)) >= 2, timeout=60, what="resumed",
             step=lambda: monitor.monitor_all(disp))
    resumed = messages(agent_log)[1]
    assert resumed["resume"] == first["session_id"]
    assert resumed["text"].startswith("[LIM.md] You were interrupted")
    assert not resume_file.exists()  # consumed once, after a successful launch
    assert disp.session_info("ccl-auto-0").state is State.WORKING
    # The resumed agent completes it; the session is recycled and takes the next task; LIM ran once.
    wait_for(lambda: "OTHER" in done_ids(settings, "p"), timeout=60, step=lambda: step(disp),
             what=lambda: f"OTHER done; events {[e.line() for e in events.recent(disp.r, 30)]}")
    assert tags_received(agent_log).count("p:LIM") == 2  # the task message, then the tagged continue
    assert "limited" in kinds(disp) and "resumed" in kinds(disp)


def test_blocked_past_timeout_becomes_stuck_then_dispatches_when_dep_arrives(
        disp: Dispatcher, settings: Settings, agent_log: Path, clock: Clock) -> None:
    add_task(settings, "p", "WAIT", depends_on=("q:LATE",))
    disp.fan_out()
    inbox = aq.project(settings.projects_dir, "p").inbox
    assert (inbox / "WAIT.md.blocked").exists()
    assert blocked.check_blocked(settings, disp.r, now=clock()) == []
    clock.advance(settings.blocked_timeout + 1)
    stuck = blocked.check_blocked(settings, disp.r, now=clock())
    assert stuck and "q:LATE" in (inbox / "WAIT.md.stuck").read_text()
    add_task(settings, "q", "LATE")
    wait_for(lambda: done_ids(settings, "p") == {"WAIT"}, timeout=90, what="WAIT done", step=lambda: step(disp))
    assert not (inbox / "WAIT.md.stuck").exists() and not (inbox / "WAIT.md.blocked").exists()


def test_dead_agent_requeues_task_and_cools_session_down(disp: Dispatcher, settings: Settings,
                                                        agent_log: Path, clock: Clock) -> None:
    add_task(settings, "p", "DIE", "@fake: exit 3")
    assert disp.assign_next("ccl-auto-0").status == "dispatched"
    inbox = aq.project(settings.projects_dir, "p").inbox
    wait_for(lambda: (inbox / "DIE.md").exists(), timeout=30, what="requeued", step=lambda: monitor.monitor_all(disp))
    info = disp.session_info("ccl-auto-0")
    assert info.state is State.IDLE and info.in_cooldown(clock(), settings.pool.cooldown)
    assert disp.r.get(keys.attempts("p", "DIE")) == "1"


def test_lost_tmux_session_is_recreated(disp: Dispatcher, settings: Settings) -> None:
    disp.tmux.kill_session("ccl-auto-2")
    assert disp.session_info("ccl-auto-2").state is State.MISSING
    monitor.monitor_all(disp)
    assert disp.tmux.has_session("ccl-auto-2")
    assert disp.session_info("ccl-auto-2").state is State.IDLE
    assert ss.get(disp.r, disp.ref("ccl-auto-2")) is not None


def test_agent_asking_a_question_shows_as_waiting_then_working(disp: Dispatcher, settings: Settings,
                                                               agent_log: Path) -> None:
    """A Notification hook (permission prompt) → session `waiting` with the question; a new prompt → working."""
    import io
    import json

    from dispatcher import hook

    add_task(settings, "p", "Q", "@fake: hang")
    assert disp.assign_next("ccl-auto-0").status == "dispatched"
    info = disp.session_info("ccl-auto-0")
    env = {"AQ_SESSION": info.ref, "AQ_TASK": "p:Q", "AQ_REDIS_URL": settings.redis_url or ""}
    payload = {"session_id": info.agent_uuid, "hook_event_name": "Notification",
               "notification_type": "permission_prompt", "message": "Claude needs your permission to use Bash"}
    assert hook.main(["Notification"], io.StringIO(json.dumps(payload)), env) == 0
    monitor.monitor_all(disp)
    waiting = disp.session_info("ccl-auto-0")
    assert waiting.state is State.WAITING and "permission to use Bash" in waiting.detail
    assert "waiting" in kinds(disp)
    prompt = {"session_id": info.agent_uuid, "hook_event_name": "UserPromptSubmit", "prompt": "yes, go on"}
    assert hook.main(["UserPromptSubmit"], io.StringIO(json.dumps(prompt)), env) == 0
    monitor.monitor_all(disp)
    assert disp.session_info("ccl-auto-0").state is State.WORKING


def test_tmux_crash_and_restart_resumes_the_agents_conversation(disp: Dispatcher, settings: Settings,
                                                                agent_log: Path) -> None:
    """tmux dies and `dispatcher up` recreates the pool: the owned task resumes with --resume, never twice."""
    from dispatcher.agent import pool

    add_task(settings, "p", "CR", "@fake: hang")
    assert disp.assign_next("ccl-auto-0").status == "dispatched"
    first = wait_for(lambda: messages(agent_log), what="CR delivered")[0]
    disp.tmux.kill_server()
    pool.create(disp.tmux, settings.pool, cwd=settings.projects_dir)  # what a restarted `up` does
    wait_for(lambda: len(messages(agent_log)) >= 2, timeout=60, what="resumed",
             step=lambda: monitor.monitor_all(disp))
    resumed = messages(agent_log)[1]
    assert resumed["resume"] == first["session_id"]
    assert resumed["text"].startswith("[CR.md] You were interrupted")
    assert disp.session_info("ccl-auto-0").state is State.WORKING
    assert aq.project(settings.projects_dir, "p").task_path("CR", ".dispatched").exists()
    assert "recovered" in kinds(disp) and "resumed" in kinds(disp)
    disp.fan_out()
    assert tags_received(agent_log) == ["p:CR", "p:CR"]  # the task, then its tagged continue: no new launch


def test_one_lost_session_is_recreated_and_its_task_resumed(disp: Dispatcher, settings: Settings,
                                                            agent_log: Path) -> None:
    add_task(settings, "p", "LS", "@fake: hang")
    assert disp.assign_next("ccl-auto-1").status == "dispatched"
    first = wait_for(lambda: messages(agent_log), what="LS delivered")[0]
    disp.tmux.kill_session("ccl-auto-1")
    wait_for(lambda: len(messages(agent_log)) >= 2, timeout=60, what="resumed",
             step=lambda: monitor.monitor_all(disp))
    assert messages(agent_log)[1]["resume"] == first["session_id"]
    assert disp.tmux.has_session("ccl-auto-1") and "session-created" in kinds(disp)
