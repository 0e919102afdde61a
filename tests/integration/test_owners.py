"""Ownership of claimed tasks across hosts: owner records, FLUSHALL, orphans, lost hosts, fencing (issue 12).

Inline Dispatcher (no Celery) with an injected clock; real Redis, tmux and fake agents.
"""

from __future__ import annotations

from pathlib import Path

import redis
from system_fixtures import Clock, add_task

from dispatcher.core import keys
from dispatcher.core.config import Settings
from dispatcher.flows import monitor, recovery
from dispatcher.flows.dispatch import Dispatcher
from dispatcher.inbox import files as aq
from dispatcher.inbox import markers
from dispatcher.store import events, hosts, owners
from dispatcher.store.sessions import State


def _inbox(settings: Settings, project: str = "alpha") -> Path:
    return aq.project(settings.projects_dir, project).inbox


def test_a_flush_loses_no_owner_the_working_host_reasserts_it(disp: Dispatcher, settings: Settings,
                                                              sys_redis: redis.Redis[str], clock: Clock) -> None:
    add_task(settings, "alpha", "F1", "@fake: hang")
    assert disp.assign_next("ccl-auto-0").status == "dispatched"
    ref = str(disp.ref("ccl-auto-0"))
    assert owners.get(sys_redis, "alpha", "F1") == ref
    sys_redis.flushdb()
    assert recovery.recover_cluster(disp.ports) == []  # no record: an orphan timer starts, nothing is taken yet
    recovery.reassert_owners(disp.ports)  # what every heartbeat does (states rebuilt from the tmux tags)
    assert owners.get(sys_redis, "alpha", "F1") == ref
    clock.advance(settings.host_lost_after + 1)
    assert recovery.recover_cluster(disp.ports) == []
    assert (_inbox(settings) / "F1.md.dispatched").exists()


def test_a_claim_no_live_host_reasserts_is_taken_back_after_host_lost_after(
        disp: Dispatcher, settings: Settings, sys_redis: redis.Redis[str], clock: Clock) -> None:
    path = add_task(settings, "alpha", "O1")
    path.rename(path.with_name("O1.md.dispatched"))  # dispatched by a deployment whose records are gone
    assert recovery.recover_cluster(disp.ports) == []
    clock.advance(settings.host_lost_after - 1)
    assert recovery.recover_cluster(disp.ports) == []
    clock.advance(2)
    (line,) = recovery.recover_cluster(disp.ports)
    assert "alpha:O1: back to pending" in line and "no live host owns it" in line
    assert (_inbox(settings) / "O1.md").exists()
    note = markers.read_marker(_inbox(settings) / "O1.md", markers.FAILURE_NOTE) or ""
    assert "no live host owns it" in note and "attempt 1/3" in note
    assert sys_redis.get(keys.attempts("alpha", "O1")) == "1"


def test_a_lost_host_s_claims_go_back_within_one_scan_and_it_is_fenced(
        disp: Dispatcher, settings: Settings, sys_redis: redis.Redis[str], clock: Clock) -> None:
    far = hosts.HostInfo(name="far", fingerprint="elsewhere", sessions=("ccl-auto-0",))
    hosts.publish(sys_redis, far, now=clock() - settings.host_lost_after - 1, lost_after=settings.host_lost_after)
    launching = add_task(settings, "alpha", "X1")
    launching = launching.rename(launching.with_name("X1.md.launching"))
    dispatched = add_task(settings, "alpha", "X2")
    dispatched = dispatched.rename(dispatched.with_name("X2.md.dispatched"))
    owners.take(sys_redis, "alpha", "X1", "far/ccl-auto-0")
    owners.take(sys_redis, "alpha", "X2", "far/ccl-auto-1")
    done = recovery.recover_cluster(disp.ports)
    assert sorted(line.split(":")[1] for line in done) == ["X1", "X2"]
    assert (_inbox(settings) / "X1.md").exists() and (_inbox(settings) / "X2.md").exists()
    assert "host far lost" in (markers.read_marker(_inbox(settings) / "X2.md", markers.FAILURE_NOTE) or "")
    for task, ref in (("X1", "far/ccl-auto-0"), ("X2", "far/ccl-auto-1")):
        record = owners.get(sys_redis, "alpha", task) or ""
        assert record.startswith(f"fenced:{ref}")
        assert owners.confirm(sys_redis, "alpha", task, ref) == record  # the returning host learns it lost it


def test_a_live_host_s_claims_are_left_alone(disp: Dispatcher, settings: Settings,
                                             sys_redis: redis.Redis[str], clock: Clock) -> None:
    near = hosts.HostInfo(name="near", fingerprint="elsewhere", sessions=("ccl-auto-0",))
    hosts.publish(sys_redis, near, now=clock(), lost_after=settings.host_lost_after)
    path = add_task(settings, "alpha", "N1")
    path.rename(path.with_name("N1.md.dispatched"))
    owners.take(sys_redis, "alpha", "N1", "near/ccl-auto-0")
    clock.advance(settings.host_lost_after * 0.9)
    assert recovery.recover_cluster(disp.ports) == []
    assert (_inbox(settings) / "N1.md.dispatched").exists()


def test_a_session_whose_task_was_given_away_stops_its_agent(disp: Dispatcher, settings: Settings,
                                                             sys_redis: redis.Redis[str]) -> None:
    add_task(settings, "alpha", "G1", "@fake: hang")
    assert disp.assign_next("ccl-auto-0").status == "dispatched"
    agent_pid = disp.tmux.pane_info("ccl-auto-0").pid
    sys_redis.set(keys.owner("alpha", "G1"), "other/ccl-auto-3")  # the cluster gave it to another host
    changes = monitor.monitor_all(disp)
    assert any("fenced off alpha:G1" in c for c in changes), changes
    assert disp.session_info("ccl-auto-0").state is State.IDLE
    assert disp.tmux.pane_info("ccl-auto-0").pid != agent_pid  # the agent's process was killed
    kinds = [e.kind for e in events.recent(sys_redis, 100)]
    assert "fenced" in kinds and "resumed" not in kinds
    assert (_inbox(settings) / "G1.md.dispatched").exists()  # not ours to touch: its owner runs it


def test_take_back_after_too_many_attempts_fails_the_task(disp: Dispatcher, settings: Settings,
                                                          sys_redis: redis.Redis[str], clock: Clock) -> None:
    path = add_task(settings, "alpha", "A1")
    path.rename(path.with_name("A1.md.dispatched"))
    sys_redis.set(keys.attempts("alpha", "A1"), settings.max_launch_attempts - 1)
    recovery.recover_cluster(disp.ports)
    clock.advance(settings.host_lost_after + 1)
    (line,) = recovery.recover_cluster(disp.ports)
    assert "failed" in line
    assert (_inbox(settings) / "A1.md.failed").exists()
