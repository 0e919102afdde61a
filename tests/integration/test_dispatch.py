"""Dispatch end to end, inline (no Celery): real Redis, real tmux pool, fake agents, real files."""

from __future__ import annotations

import threading
from pathlib import Path

import redis
from system_fixtures import (
    Clock,
    add_fifty_tasks,
    add_task,
    assert_fifty_once_in_order,
    done_ids,
    messages,
    tags_received,
    wait_for,
)

from dispatcher.agent import pool_state
from dispatcher.agent.tmux import Tmux
from dispatcher.core import keys
from dispatcher.core.config import Settings
from dispatcher.core.session_ref import SessionRef
from dispatcher.flows import claim as cl
from dispatcher.flows import monitor, recovery
from dispatcher.flows.claim import FileClaim
from dispatcher.flows.dispatch import Dispatcher
from dispatcher.flows.ports import Ports
from dispatcher.inbox import files as aq
from dispatcher.inbox.fsio import with_suffix
from dispatcher.store import sessions as ss
from dispatcher.store.sessions import State


def run_until_done(d: Dispatcher, settings: Settings, expected: dict[str, set[str]], timeout: float = 90.0) -> None:
    """Drive the system like beat would (fan_out + monitor) until every expected task is in done/."""
    def step() -> None:
        monitor.monitor_all(d)
        d.fan_out()

    wait_for(lambda: all(done_ids(settings, p) >= ids for p, ids in expected.items()), timeout=timeout,
             what=f"tasks done: {expected}", step=step)


def test_assign_next_launches_in_project_dir_with_model(disp: Dispatcher, settings: Settings, agent_log: Path) -> None:
    add_task(settings, "alpha", "T1", "Do it\n@fake: done", priority="critical")
    outcome = disp.assign_next("ccl-auto-0")
    assert outcome.status == "dispatched", outcome
    msgs = wait_for(lambda: messages(agent_log), what="fake agent got the message")
    assert msgs[0]["text"].startswith("[T1.md] Work on T1.\nDo it")
    assert Path(msgs[0]["cwd"]) == settings.projects_dir / "alpha"
    assert msgs[0]["model"] == "opus"
    info = ss.get(disp.r, disp.ref("ccl-auto-0"))
    assert info is not None and info.state is State.WORKING and info.task_key == "alpha:T1"


def test_assign_next_refuses_sessions_outside_the_pool(disp: Dispatcher, settings: Settings, agent_log: Path,
                                                       tmux_pool: Tmux) -> None:
    """A dedicated session with the pool's prefix pattern but outside its range is never touched."""
    tmux_pool.new_session("ccl-auto-10", width=200, height=50)
    tmux_pool.new_session("ccl-auto-operator", width=200, height=50)
    before = tmux_pool.capture("ccl-auto-10")
    add_task(settings, "alpha", "T1")
    for name in ("ccl-auto-10", "ccl-auto-operator", "=ccl-auto-0", "ccl-auto-0; rm -rf /"):
        assert disp.assign_next(name).status == "not-in-pool"
    assert messages(agent_log) == []
    assert tmux_pool.capture("ccl-auto-10") == before
    assert aq.project(settings.projects_dir, "alpha").task_path("T1").exists()


def test_blocked_task_is_not_dispatched_until_its_dep_is_done(disp: Dispatcher, settings: Settings,
                                                              agent_log: Path) -> None:
    add_task(settings, "alpha", "B", depends_on=("beta:A",))
    assert disp.assign_next("ccl-auto-0").status == "no-task"
    inbox = aq.project(settings.projects_dir, "alpha").inbox
    assert (inbox / "B.md.blocked").exists()
    add_task(settings, "beta", "A")
    run_until_done(disp, settings, {"beta": {"A"}, "alpha": {"B"}})
    assert tags_received(agent_log) == ["beta:A", "alpha:B"]
    assert not (inbox / "B.md.blocked").exists()
    from dispatcher.store import events

    kinds = [(e.kind, e.task) for e in events.recent(disp.r, 200)]
    assert kinds.count(("blocked", "alpha:B")) == 1 and ("unblocked", "alpha:B") in kinds


def test_fifty_tasks_three_projects_each_exactly_once_in_priority_order(
        disp: Dispatcher, settings: Settings, agent_log: Path, clock: Clock) -> None:
    expected = add_fifty_tasks(settings, clock() - 1000)
    run_until_done(disp, settings, expected, timeout=240)
    assert_fifty_once_in_order(agent_log)  # the 3 sessions start with critical tasks, the chain in order


def test_racing_dispatchers_never_double_book(settings: Settings, sys_redis: redis.Redis[str], tmux_pool: Tmux,
                                              agent_log: Path) -> None:
    """Four dispatchers (own Redis connections) fan out at once on one inbox: no task twice, no session twice."""
    from dispatcher.flows import runtime

    for i in range(6):
        add_task(settings, "alpha", f"R{i}", "@fake: hang")
    ds = []
    for _ in range(4):
        r = redis.Redis.from_url(settings.redis_url or "", decode_responses=True)
        ds.append(Dispatcher(Ports(settings, r, tmux_pool, runtime.agent_launcher(settings, r, tmux_pool))))
    barrier = threading.Barrier(len(ds))
    errors: list[BaseException] = []

    def go(d: Dispatcher) -> None:
        try:
            barrier.wait()
            for _ in range(3):
                d.fan_out()
                d.assign_next("ccl-auto-1")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(d,)) for d in ds]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    wait_for(lambda: len(messages(agent_log)) >= 3, what="three launches")
    got = tags_received(agent_log)
    assert len(got) == 3 and len(set(got)) == 3, got
    sessions = [m["env_session"] for m in messages(agent_log) if "env_session" in m] or None
    states = ss.get_all(sys_redis, [SessionRef(settings.host.name, n) for n in settings.pool.names()])
    tasks = [s.task for s in states.values() if s is not None and s.state is State.WORKING]
    assert len(tasks) == 3 and len(set(tasks)) == 3
    inbox = aq.project(settings.projects_dir, "alpha").inbox
    assert len(list(inbox.glob("*.md.dispatched"))) == 3
    assert len(list(inbox.glob("*.md"))) == 3
    assert sessions is None or len(set(sessions)) == 3


def test_abandoned_launch_is_returned_to_pending_and_runs_once(disp: Dispatcher, settings: Settings,
                                                               agent_log: Path, clock: Clock) -> None:
    """A worker died after claiming (no flock holder, agent never got the task): back to pending, then once."""
    path = add_task(settings, "alpha", "K1")
    launching = cl.claim(path)
    info = ss.get(disp.r, disp.ref("ccl-auto-0")) or ss.SessionInfo("ccl-auto-0", host=disp.host)
    pool_state.transition(disp.r, disp.tmux, info, State.LAUNCHING, since=clock(), project="alpha", task="K1",
                          agent_uuid="x")
    assert recovery.recover_launching(disp.ports) == []  # too young: may be a live claim
    clock.advance(recovery.CLAIM_GRACE_S + 1)
    done = recovery.recover_launching(disp.ports)
    assert done == ["alpha:K1: returned to pending"]
    assert path.exists() and not launching.exists()
    assert disp.session_info("ccl-auto-0").state is State.IDLE
    run_until_done(disp, settings, {"alpha": {"K1"}})
    assert tags_received(agent_log) == ["alpha:K1"]


def test_live_claim_is_left_alone(disp: Dispatcher, settings: Settings, clock: Clock) -> None:
    path = add_task(settings, "alpha", "L1")
    launching = cl.claim(path)
    holder = FileClaim(launching)
    try:
        clock.advance(3600)
        assert recovery.recover_launching(disp.ports) == []
        assert launching.exists()
    finally:
        holder.close()


def test_redis_flush_rebuilds_sessions_from_tmux_and_never_double_books(
        disp: Dispatcher, settings: Settings, agent_log: Path) -> None:
    add_task(settings, "alpha", "F1", "@fake: hang")
    assert disp.assign_next("ccl-auto-0").status == "dispatched"
    disp.r.flushdb()
    add_task(settings, "alpha", "F2", "@fake: hang")
    assert disp.assign_next("ccl-auto-0").status == "busy"
    info = disp.session_info("ccl-auto-0")
    assert info.state is State.WORKING and info.task == "F1"
    outcomes = disp.fan_out()
    assert [o.session for o in outcomes if o.status == "dispatched"] == ["ccl-auto-1"]
    assert sorted(tags_received(agent_log)) == ["alpha:F1", "alpha:F2"]


def test_session_lock_excludes_a_second_dispatcher(disp: Dispatcher, settings: Settings) -> None:
    from dispatcher.store import locks

    add_task(settings, "alpha", "S1")
    held = locks.try_lock_session(disp.r, str(disp.ref("ccl-auto-0")), 30)
    assert held is not None
    try:
        assert disp.assign_next("ccl-auto-0").status == "busy"
        assert aq.project(settings.projects_dir, "alpha").task_path("S1").exists()
    finally:
        held.release()


def test_kill_9_mid_launch_then_recovery_runs_the_task_once(disp: Dispatcher, settings: Settings, agent_log: Path,
                                                           clock: Clock, tmp_path: Path) -> None:
    """A worker process killed -9 while its agent boots: the claim is released and the task runs once."""
    import os
    import signal
    import subprocess
    import sys

    import yaml

    slow = settings.agent.env | {"FAKE_AGENT_BOOT_MS": "20000"}
    cfg = tmp_path / "dispatcher.yaml"
    cfg.write_text(yaml.safe_dump({
        "projects_dir": str(settings.projects_dir), "state_dir": str(settings.state_dir),
        "redis_url": settings.redis_url, "pool": {"max": settings.pool.max}, "settle_time": 0,
        "tmux": {"socket_name": settings.tmux.socket_name},
        "agent": {"command": settings.agent.command, "env": dict(slow), "prompt_timeout": 60,
                  "resume_dir": str(settings.agent.resume_dir)}}))
    path = add_task(settings, "alpha", "K9")
    code = ("from dispatcher.flows import runtime; from dispatcher.store.config_file import load_config; "
            f"runtime.configure(load_config({str(cfg)!r})); print(runtime.dispatcher().assign_next('ccl-auto-0'))")
    worker = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    launching = with_suffix(path, ".launching")
    wait_for(launching.exists, timeout=30, what="the worker claimed K9")
    wait_for(lambda: disp.session_info("ccl-auto-0").state is State.LAUNCHING, what="session launching")
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    assert launching.exists()
    assert not disp.is_free(disp.session_info("ccl-auto-0"), clock())  # still marked launching
    clock.advance(recovery.CLAIM_GRACE_S + 1)
    assert recovery.recover_launching(disp.ports) == ["alpha:K9: returned to pending"]
    assert path.exists() and disp.session_info("ccl-auto-0").state is State.IDLE
    run_until_done(disp, settings, {"alpha": {"K9"}})
    assert tags_received(agent_log) == ["alpha:K9"]


def test_abandoned_launch_whose_agent_got_the_task_is_promoted_not_rerun(
        disp: Dispatcher, settings: Settings, agent_log: Path, clock: Clock) -> None:
    """The worker died after the agent received the task but before `.dispatched`: promote, never resend."""
    import uuid

    from dispatcher.agent.launcher import LaunchRequest, launch

    path = add_task(settings, "alpha", "P1", "@fake: hang")
    launching = cl.claim(path)
    agent_uuid = str(uuid.uuid4())
    pool_state.transition(disp.r, disp.tmux, disp.session_info("ccl-auto-0"), State.LAUNCHING, since=clock(),
                          project="alpha", task="P1", agent_uuid=agent_uuid)
    launch(disp.tmux, "ccl-auto-0", LaunchRequest(project_dir=settings.projects_dir / "alpha", project="alpha",
                                                  task_id="P1", body="Work on P1.\n@fake: hang",
                                                  session_uuid=agent_uuid),
           settings.agent, disp.r, state_dir=settings.state_dir)
    clock.advance(recovery.CLAIM_GRACE_S + 1)
    assert recovery.recover_launching(disp.ports) == ["alpha:P1: promoted (agent in ccl-auto-0 had received it)"]
    assert with_suffix(path, ".dispatched").exists() and not launching.exists()
    assert disp.session_info("ccl-auto-0").state is State.WORKING
    disp.fan_out()
    assert tags_received(agent_log) == ["alpha:P1"]


def test_a_burst_of_events_queues_one_assign_per_session(settings: Settings, sys_redis: redis.Redis[str],
                                                         tmux_pool: Tmux) -> None:
    queued: list[str] = []
    d = Dispatcher(Ports(settings, sys_redis, tmux_pool, lambda spec: None), enqueue_assign=queued.append)
    add_task(settings, "alpha", "E1")
    for _ in range(20):  # twenty inbox events for files arriving together
        d.fan_out()
    host = settings.host.name  # messages name sessions HOST/NAME (routed to that host's queue)
    assert sorted(queued) == [f"{host}/{n}" for n in settings.pool.names()]
    assert d.assign_next("ccl-auto-0").status == "dispatched"  # the queued messages run…
    assert d.assign_next(f"{host}/ccl-auto-1").status == "no-task"
    d.fan_out()  # …so the next event may queue again, for free sessions only
    assert queued.count(f"{host}/ccl-auto-0") == 1  # now working
    assert queued.count(f"{host}/ccl-auto-1") == 2
    assert queued.count(f"{host}/ccl-auto-2") == 1  # its first message is still queued


def test_missing_agent_executable_pauses_the_pool_instead_of_failing_tasks(
        settings: Settings, sys_redis: redis.Redis[str], tmux_pool: Tmux, clock: Clock) -> None:
    from dispatcher.core.config import AgentSettings
    from dispatcher.flows import runtime

    broken = settings.with_overrides(agent=AgentSettings(command="no-such-claude-xyz --model {model} {resume}"))
    d = Dispatcher(Ports(broken, sys_redis, tmux_pool, runtime.agent_launcher(broken, sys_redis, tmux_pool),
                         clock=clock))
    path = add_task(broken, "alpha", "M1")
    outcome = d.assign_next("ccl-auto-0")
    assert outcome.status == "paused" and "not found on PATH" in outcome.detail
    assert path.exists()  # untouched: no attempt counted, nothing failed
    assert d.paused_until(clock()) > clock() and d.fan_out() == []
    assert not d.session_info("ccl-auto-0").in_cooldown(clock(), broken.pool.cooldown)


def test_a_late_inbox_event_still_announces_a_task_already_done(disp: Dispatcher, settings: Settings) -> None:
    """On a loaded machine the watcher's event can run after the agent finished: "submitted" is logged once."""
    from dispatcher.store import events

    path = add_task(settings, "alpha", "LATE")
    run_until_done(disp, settings, {"alpha": {"LATE"}})
    disp.announce("alpha", "LATE", str(path))
    disp.announce("alpha", "LATE", str(path))
    assert [e.task for e in events.recent(disp.r, 200) if e.kind == "submitted"] == ["alpha:LATE"]


def test_submitted_is_the_first_event_of_a_task_however_the_events_race(disp: Dispatcher, settings: Settings) -> None:
    """A scan may claim or block a file before the watcher's inbox_event announces it: `submitted` still comes
    first, once per file version."""
    from dispatcher.store import events

    ready = add_task(settings, "alpha", "O1")
    waiting = add_task(settings, "alpha", "O2", depends_on=("alpha:NOPE",))
    assert disp.assign_next("ccl-auto-0").status == "dispatched"  # no inbox_event has run yet
    for path in (ready, waiting):  # the late watcher events
        disp.announce("alpha", path.name[:-3], str(path))

    def kinds(task: str) -> list[str]:
        return [e.kind for e in events.recent(disp.r, 200) if e.task == task]

    assert kinds("alpha:O1") == ["submitted", "claimed", "launched"]
    assert kinds("alpha:O2") == ["submitted", "blocked"]


def test_a_file_waits_to_settle_unless_the_watcher_saw_its_writer_done(
        settings: Settings, sys_redis: redis.Redis[str], tmux_pool: Tmux, agent_log: Path, clock: Clock) -> None:
    from dispatcher.flows import runtime
    from dispatcher.store import settle

    slow = settings.with_overrides(settle_time=30.0)
    d = Dispatcher(Ports(slow, sys_redis, tmux_pool, runtime.agent_launcher(slow, sys_redis, tmux_pool), clock=clock))
    path = add_task(slow, "alpha", "S1")
    assert d.assign_next("ccl-auto-0").status == "no-task"  # nobody said it is complete, and it is fresh
    ident = settle.identity_of(str(path))
    assert ident is not None
    settle.record_closed(sys_redis, "alpha", "S1.md", ident, 30.0)  # what inbox_event does for the watcher

    assert d.assign_next("ccl-auto-0").status == "dispatched"
    assert tags_received(agent_log) == ["alpha:S1"]
    # A sighting is needed only until the age rule covers the file: it expires by itself.
    assert 30 < sys_redis.ttl(keys.closed("alpha", "S1.md")) <= 30 + settle.CLOSED_MARGIN_S


def test_a_file_written_to_after_the_scan_is_given_back_not_launched(disp: Dispatcher, settings: Settings,
                                                                     agent_log: Path) -> None:
    path = add_task(settings, "alpha", "G1")
    task = disp.plan().eligible[0]
    with open(path, "a", encoding="utf-8") as fh:  # its writer was not done after all
        fh.write("one more line\n")

    outcome = disp.dispatch_one(task, "ccl-auto-0")

    assert outcome.status == "taken" and "changed after it was scanned" in outcome.detail
    assert path.exists() and messages(agent_log) == []
    assert disp.session_info("ccl-auto-0").state is State.IDLE


def test_one_new_file_asks_one_session_here_and_a_busy_one_passes_the_request_on(
        settings: Settings, sys_redis: redis.Redis[str], tmux_pool: Tmux) -> None:
    """inbox_event's fan-out: one file is work for one session, served in this process when the session is
    this host's (no assign_next message, no N-1 losers re-planning); a session that turns out busy asks another."""
    queued: list[str] = []
    launched: list[str] = []
    d = Dispatcher(Ports(settings, sys_redis, tmux_pool, lambda spec: launched.append(spec.session)),
                   enqueue_assign=queued.append)
    add_task(settings, "alpha", "F1")
    outcomes = d.fan_out(limit=1)
    assert [o.status.value for o in outcomes] == ["dispatched"] and launched == ["ccl-auto-0"]
    assert queued == []  # served here: nothing sent to the other sessions
    assert sys_redis.get(keys.assign_pending(str(d.ref("ccl-auto-0")))) is None

    add_task(settings, "alpha", "F2")
    assert d.assign_next("ccl-auto-0").status.value == "busy"  # working on F1: it cannot take F2…
    host = settings.host.name
    assert queued == [f"{host}/ccl-auto-1"]  # …so the request goes to a free session
    assert d.assign_next(queued[0]).status.value == "dispatched" and launched == ["ccl-auto-0", "ccl-auto-1"]


def test_a_targeted_pass_gives_the_session_it_frees_its_next_task_here(
        settings: Settings, sys_redis: redis.Redis[str], tmux_pool: Tmux) -> None:
    """A done/ report's pass frees the session and serves its next task in the same process: no assign_next
    message (the full pass, which must not wait for launches, still queues one)."""
    queued: list[str] = []
    launched: list[str] = []
    d = Dispatcher(Ports(settings, sys_redis, tmux_pool, lambda spec: launched.append(spec.session)),
                   enqueue_assign=queued.append)
    add_task(settings, "alpha", "F1")
    assert [o.status.value for o in d.fan_out(limit=1)] == ["dispatched"] and launched == ["ccl-auto-0"]
    add_task(settings, "alpha", "F2")
    add_task(settings, "alpha", "F3")
    proj = aq.project(settings.projects_dir, "alpha")
    proj.task_path("F1", ".dispatched").rename(proj.done / "F1.md")  # the agent's last act
    changes = monitor.monitor_tasks(d, {"alpha:F1"})
    assert any("finished alpha:F1" in c for c in changes) and any("dispatched alpha:F2" in c for c in changes)
    assert launched == ["ccl-auto-0", "ccl-auto-0"] and queued == []
    assert d.session_info("ccl-auto-0").task == "F2"
    proj.task_path("F2", ".dispatched").rename(proj.done / "F2.md")
    monitor.monitor_all(d)  # the periodic pass: the freed session's request is queued, not served here
    assert queued == [f"{settings.host.name}/ccl-auto-0"] and launched == ["ccl-auto-0", "ccl-auto-0"]


def test_a_task_reaching_done_frees_only_the_session_holding_it(disp: Dispatcher, settings: Settings) -> None:
    """The watcher's report of done/ files: the owner's host is asked to look at the sessions holding those
    tasks (not at every working one) — in this process when it is this worker's host, one message less; the
    finished one is freed at once, the one still working is not touched."""
    from dispatcher.flows import passes
    from dispatcher.store import owners

    add_task(settings, "alpha", "W1", "@fake: hang")
    add_task(settings, "beta", "D1", "@fake: done")
    disp.fan_out()
    wait_for(lambda: done_ids(settings, "beta") == {"D1"}, what="D1 moved to done/ by its agent")
    states = {i.task: i.state for i in disp.pool_infos().values() if i.task}
    assert states == {"W1": State.WORKING, "D1": State.WORKING}  # no monitor pass yet
    sent: list[tuple[str, list[str]]] = []
    done_path = aq.project(settings.projects_dir, "beta").done / "D1.md"
    hostile = ["/etc/passwd", "../x:y", 42, str(done_path.parent / "..md")]
    owners.take(disp.r, "gamma", "X1", "other-host/ccl-auto-0")  # a task another host's session holds
    elsewhere = aq.project(settings.projects_dir, "gamma").done / "X1.md"
    out = passes.monitor_sessions(disp, None, lambda host, keys: sent.append((host, keys)),
                                  done=[str(done_path), str(elsewhere), *hostile])
    assert sent == [("other-host", ["gamma:X1"])]  # the other host's pass goes to its queue
    assert out["finished"] == {disp.host: ["beta:D1"], "other-host": ["gamma:X1"]}
    changes = out["changes"]  # this host's pass ran here
    assert len(changes) == 1 and "finished beta:D1" in changes[0]
    assert passes.monitor_sessions(disp, disp.host, lambda *a: None, done=["beta:D1"])["changes"] == []
    states = {i.name: (i.task, i.state) for i in disp.pool_infos().values()}
    assert sorted(s for _, s in states.values()) == [State.IDLE, State.IDLE, State.WORKING]
    assert ("W1", State.WORKING) in states.values()
