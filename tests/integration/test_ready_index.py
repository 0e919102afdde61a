"""The ready index against real Redis, tmux, files and fake agents: same order as the plan, repaired by scans,
never the cause of a double or a lost dispatch (stale entries, a flush, a worker killed mid-claim)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml
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

from dispatcher.celery_app import app
from dispatcher.core.config import Settings
from dispatcher.core.ordering import order_tasks
from dispatcher.flows import monitor, ready, recovery
from dispatcher.flows.dispatch import Dispatcher
from dispatcher.inbox import files as aq
from dispatcher.inbox.ready_check import Verdict
from dispatcher.inbox.scanner import run_scan
from dispatcher.store import ready_index
from dispatcher.store.hosts import host_queue


def drive_by_index(d: Dispatcher, settings: Settings, expected: dict[str, set[str]], timeout: float = 120.0) -> None:
    """Like a worker fleet without fan-out scans: recovery, monitor, then assign_next for each free session."""
    def step() -> None:
        recovery.recover_local(d)
        monitor.monitor_all(d)
        for name in d.free_sessions():
            d.assign_next(name)

    wait_for(lambda: all(done_ids(settings, p) >= ids for p, ids in expected.items()), timeout=timeout,
             what=f"tasks done: {expected}", step=step)


def indexed(d: Dispatcher) -> set[str]:
    return {f"{e.project}:{e.id}" for e in ready_index.snapshot(d.r)}


def test_candidates_come_in_the_plan_order(disp: Dispatcher, settings: Settings, clock: Clock) -> None:
    base = clock() - 5000
    prios = ["low", "default", "high", "critical"]
    for p, count in (("p1", 1), ("p2", 3), ("p3", 9), ("p4", 25)):
        for i in range(count):
            add_task(settings, p, f"T{i}", priority=prios[(i * 7 + count) % 4], mtime=base + (i * 13 + count) % 17)
    result = disp.plan()
    everything = order_tasks(result.eligible + [t for t, _ in result.waiting])  # before the max_parallel cap
    assert len(everything) == 38 and ready.is_complete(disp)

    assert [t.key for t in ready.candidates(disp, set())] == [t.key for t in everything]
    assert [t.key for t in ready.candidates(disp, {"p4", "p2"})] == [
        t.key for t in everything if t.project not in ("p4", "p2")]


def test_fifty_tasks_through_the_index_each_exactly_once_in_priority_order(
        disp: Dispatcher, settings: Settings, agent_log: Path, clock: Clock) -> None:
    """test_dispatch's fifty-task run, driven by assign_next alone (the index; scans only when it says so)."""
    expected = add_fifty_tasks(settings, clock() - 1000)
    drive_by_index(disp, settings, expected, timeout=240)
    assert_fifty_once_in_order(agent_log)
    assert indexed(disp) == set(), "every dispatched entry left the index"


def test_a_reported_file_joins_at_once_an_unreported_one_at_the_next_scan(
        disp: Dispatcher, settings: Settings, agent_log: Path) -> None:
    add_task(settings, "alpha", "T1")
    assert disp.assign_next("ccl-auto-0").task == "alpha:T1"  # no index yet: a scan builds it
    add_task(settings, "alpha", "T2")
    add_task(settings, "beta", "X", priority="critical")  # nobody reports it (no watcher here)
    disp.plan()  # the index now holds alpha:T2 and beta:X
    add_task(settings, "gamma", "Y", priority="critical")  # unreported
    path = add_task(settings, "delta", "Z", priority="high")
    assert ready.on_new_file(disp, "delta", str(path)) is Verdict.READY  # what inbox_event does
    assert indexed(disp) == {"alpha:T2", "beta:X", "delta:Z"}

    assert disp.assign_next("ccl-auto-1").task == "beta:X"
    assert disp.assign_next("ccl-auto-2").task == "delta:Z"  # gamma:Y (critical) is not known yet
    assert indexed(disp) == {"alpha:T2"}
    disp.plan()
    assert indexed(disp) == {"alpha:T2", "gamma:Y"}


def test_a_stale_entry_is_skipped_and_dropped_never_dispatched(
        disp: Dispatcher, settings: Settings, agent_log: Path, clock: Clock) -> None:
    base = clock() - 100
    for i, name in enumerate(("A", "B", "C", "D")):
        add_task(settings, "web", name, priority="critical" if name != "D" else "default", mtime=base + i)
    disp.plan()
    proj = aq.project(settings.projects_dir, "web")
    proj.task_path("A").unlink()  # deleted by hand
    os.rename(proj.task_path("B"), proj.done / "B.md")  # moved to done/ by hand
    proj.task_path("C").write_text("---\npriority: critical\n---\nRewritten after the scan, longer than before.\n")
    os.utime(proj.task_path("C"), (base + 50, base + 50))

    outcome = disp.assign_next("ccl-auto-0")
    assert (outcome.status, outcome.task) == ("dispatched", "web:D")
    assert indexed(disp) == set(), "the three stale entries were dropped on the way"
    disp.plan()  # the safety net: the rewritten C is back
    assert disp.assign_next("ccl-auto-1").task == "web:C"
    wait_for(lambda: any("Rewritten" in m["text"] for m in messages(agent_log)), what="C's new text delivered")
    assert sorted(tags_received(agent_log)) == ["web:C", "web:D"]


def test_a_scan_keeps_what_was_inserted_while_it_listed(disp: Dispatcher, settings: Settings) -> None:
    add_task(settings, "alpha", "T1")
    ticket = ready.begin(disp)
    result = run_scan(settings, now=disp.clock(), write=False)  # lists before T2 exists
    path = add_task(settings, "alpha", "T2")
    assert ready.on_new_file(disp, "alpha", str(path)) is Verdict.READY
    ready.publish(disp, result, ticket)
    assert indexed(disp) == {"alpha:T1", "alpha:T2"} and ready.is_complete(disp)


def test_a_done_dependency_sends_the_next_assign_to_a_full_scan(disp: Dispatcher, settings: Settings) -> None:
    add_task(settings, "alpha", "B", depends_on=("beta:A",))
    add_task(settings, "beta", "A", "@fake: hang")
    disp.plan()
    assert ready.is_complete(disp) and indexed(disp) == {"beta:A"}
    ready.on_done(disp, "beta", "other")
    assert ready.is_complete(disp)
    ready.on_done(disp, "beta", "A")
    assert not ready.is_complete(disp)


def test_a_dependency_moved_to_done_is_seen_by_the_next_assign_without_the_monitor(
        disp: Dispatcher, settings: Settings, agent_log: Path) -> None:
    add_task(settings, "alpha", "B", depends_on=("beta:A",), priority="high")
    add_task(settings, "beta", "A", "@fake: done")
    add_task(settings, "gamma", "C", "@fake: hang", priority="low")
    add_task(settings, "gamma", "D", depends_on=("beta:Z",))  # stays blocked
    assert disp.assign_next("ccl-auto-0").task == "beta:A"
    done = aq.project(settings.projects_dir, "beta").done
    wait_for(lambda: (done / "A.md").exists(), what="the agent moved A to done/")  # nobody runs the monitor
    assert ready.is_complete(disp) is False, "done/ changed where a blocked task waits"
    assert disp.assign_next("ccl-auto-1").task == "alpha:B"
    assert ready_index.awaited(disp.r) == {"beta": (done.stat().st_mtime_ns, ["Z"])}
    (done / "unrelated.md").write_text("x")  # a change there that releases nothing: no scan for it
    assert ready.is_complete(disp)
    assert ready_index.awaited(disp.r) == {"beta": (done.stat().st_mtime_ns, ["Z"])}


def test_after_a_flush_the_next_assign_rebuilds_the_index_nothing_lost_nothing_twice(
        disp: Dispatcher, settings: Settings, agent_log: Path) -> None:
    expected = {p: {f"{p.upper()}{i}" for i in range(3)} for p in ("ra", "rb", "rc")}
    for p, ids in expected.items():
        for task_id in sorted(ids):
            add_task(settings, p, task_id)
    assert disp.assign_next("ccl-auto-0").status == "dispatched"
    assert ready.is_complete(disp) and len(indexed(disp)) == 8
    disp.r.flushdb()  # FLUSHALL, for this test's DB
    assert not ready.is_complete(disp) and indexed(disp) == set()

    drive_by_index(disp, settings, expected)
    got = tags_received(agent_log)
    assert sorted(got) == sorted(f"{p}:{t}" for p, ids in expected.items() for t in ids), got
    assert indexed(disp) == set()
    disp.plan()
    assert ready.is_complete(disp) and ready.agrees(disp, disp.plan()) == (set(), set())


def _worker_config(settings: Settings, path: Path, **agent_env: str) -> Path:
    data = {
        "projects_dir": str(settings.projects_dir), "state_dir": str(settings.state_dir),
        "redis_url": settings.redis_url, "settle_time": 0, "max_parallel": settings.max_parallel,
        "pool": {"prefix": settings.pool.prefix, "max": settings.pool.max},
        "tmux": {"socket_name": settings.tmux.socket_name},
        "agent": {"command": settings.agent.command, "resume_dir": str(settings.agent.resume_dir),
                  "env": {**settings.agent.env, **agent_env}, "prompt_timeout": 60},
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_a_worker_killed_between_its_claim_and_the_index_update_loses_and_doubles_nothing(
        disp: Dispatcher, settings: Settings, agent_log: Path, tmp_path: Path, clock: Clock) -> None:
    """kill -9 of a real Celery worker while its claimed task is ``.launching`` (its agent hangs at boot)."""
    base = clock() - 100
    add_task(settings, "alpha", "A1", priority="critical", mtime=base)
    add_task(settings, "beta", "B1", mtime=base + 1)
    add_task(settings, "gamma", "G1", mtime=base + 2)
    disp.plan()
    url = settings.redis_url or ""
    app.conf.update(broker_url=url, result_backend=url)
    cfg = _worker_config(settings, tmp_path / "dispatcher.yaml", FAKE_AGENT_BOOT_MS="120000")
    env = {**os.environ, "DISPATCHER_CONFIG": str(cfg), "REDIS_URL": url}
    proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "dispatcher", "worker", "-P", "solo",
                             "-n", "killed@%h", "-l", "warning"], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "worker.log", "wb"), start_new_session=True)
    launching = aq.project(settings.projects_dir, "alpha").task_path("A1", ".launching")
    try:
        app.send_task("assign_next", args=["ccl-auto-0"], queue=host_queue(settings.host.name))
        wait_for(launching.exists, timeout=90, what="the worker claimed alpha:A1")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert "alpha:A1" in indexed(disp), "killed before its index update"

    outcome = disp.assign_next("ccl-auto-1")  # the in-flight entry is skipped, not dispatched again
    assert (outcome.status, outcome.task) == ("dispatched", "beta:B1")
    drive_by_index(disp, settings, {"alpha": {"A1"}, "beta": {"B1"}, "gamma": {"G1"}})  # recovery gives A1 back

    got = tags_received(agent_log)
    assert sorted(got) == ["alpha:A1", "beta:B1", "gamma:G1"], got
    assert indexed(disp) == set(), "index and files agree without a scan"
    assert ready.agrees(disp, disp.plan()) == (set(), set())
