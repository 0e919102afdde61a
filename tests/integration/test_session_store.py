"""The session store (pool_state over store/sessions): both copies written together, the caller's time only."""

from __future__ import annotations

import pytest
import redis

from dispatcher.agent import pool_state
from dispatcher.agent.tmux import Tmux
from dispatcher.core.session_ref import SessionRef
from dispatcher.store import locks
from dispatcher.store import sessions as ss
from dispatcher.store.sessions import SessionInfo, State

HOST = "h1"
NAME = "ccl-auto-0"


@pytest.fixture
def session(tmux: Tmux) -> SessionInfo:
    tmux.new_session(NAME, width=80, height=20, command=["cat"])
    return SessionInfo(NAME, host=HOST)


def test_transition_writes_both_copies_with_the_callers_since(sys_redis: redis.Redis, tmux: Tmux,
                                                               session: SessionInfo) -> None:
    new = pool_state.transition(sys_redis, tmux, session, State.LAUNCHING, since=1000.0, project="p", task="T1",
                                model="sonnet", agent_uuid="u-1", detail="x")
    assert ss.get(sys_redis, SessionRef(HOST, NAME)) == new
    assert new.since == 1000.0 and new.state is State.LAUNCHING
    assert pool_state.read_tmux_copy(tmux, NAME) == {"state": "launching", "project": "p", "task": "T1",
                                                     "model": "sonnet", "agent_uuid": "u-1", "since": "1000.000"}
    kept = pool_state.transition(sys_redis, tmux, new, State.WORKING, since=new.since)
    assert kept.since == 1000.0 and pool_state.read_tmux_copy(tmux, NAME)["state"] == "working"


def test_set_idle_frees_both_copies_at_now(sys_redis: redis.Redis, tmux: Tmux, session: SessionInfo) -> None:
    busy = pool_state.transition(sys_redis, tmux, session, State.WORKING, since=1000.0, project="p", task="T1",
                                 agent_uuid="u-1", idle_since=1005.0, hooks_after="7-0")
    free = pool_state.set_idle(sys_redis, tmux, busy, now=1010.0, detail="done")
    assert (free.state, free.since, free.task, free.agent_uuid, free.idle_since, free.hooks_after) == \
        (State.IDLE, 1010.0, "", "", 0.0, "0-0")
    assert free.last_failure == 0.0 and not free.in_cooldown(1011.0, 60)
    assert pool_state.read_tmux_copy(tmux, NAME)["state"] == "idle"
    failed = pool_state.set_idle(sys_redis, tmux, busy, now=1020.0, failed=True)
    assert failed.last_failure == 1020.0 and failed.in_cooldown(1021.0, 60)
    assert ss.get(sys_redis, SessionRef(HOST, NAME)) == failed


def test_idle_grace_changes_only_the_timer(sys_redis: redis.Redis, tmux: Tmux, session: SessionInfo) -> None:
    busy = pool_state.transition(sys_redis, tmux, session, State.WORKING, since=1000.0, project="p", task="T1")
    copy = pool_state.read_tmux_copy(tmux, NAME)
    started = pool_state.start_idle_grace(sys_redis, busy, 1050.0)
    assert ss.get(sys_redis, SessionRef(HOST, NAME)) == started
    assert (started.state, started.since, started.idle_since) == (State.WORKING, 1000.0, 1050.0)
    cleared = pool_state.clear_idle_grace(sys_redis, started)
    assert ss.get(sys_redis, SessionRef(HOST, NAME)) == cleared and cleared.idle_since == 0.0
    assert pool_state.read_tmux_copy(tmux, NAME) == copy  # the timer is not part of the tmux copy
    with pytest.raises(ValueError):
        ss.update(sys_redis, busy, state=State.IDLE)


def test_read_rebuilds_the_record_from_the_tmux_copy(sys_redis: redis.Redis, tmux: Tmux,
                                                      session: SessionInfo) -> None:
    pool_state.transition(sys_redis, tmux, session, State.LIMITED, since=1000.0, project="p", task="T1",
                          model="opus", agent_uuid="u-1")
    sys_redis.flushdb()
    info = pool_state.read(sys_redis, tmux, HOST, NAME)
    assert (info.state, info.project, info.task, info.model, info.agent_uuid, info.since) == \
        (State.LIMITED, "p", "T1", "opus", "u-1", 1000.0)
    assert ss.get(sys_redis, SessionRef(HOST, NAME)) == info  # stored back: the copies agree again
    assert pool_state.read_all(sys_redis, tmux, HOST, [NAME, "ccl-auto-1"])["ccl-auto-1"].state is State.MISSING


def test_a_vanished_tmux_session_leaves_redis_the_only_copy(sys_redis: redis.Redis, tmux: Tmux,
                                                            session: SessionInfo) -> None:
    tmux.kill_session(NAME)
    new = pool_state.transition(sys_redis, tmux, session, State.WORKING, since=1000.0, task="T1")  # logged, no raise
    assert ss.get(sys_redis, SessionRef(HOST, NAME)) == new
    assert pool_state.read_tmux_copy(tmux, NAME) == {}


def test_the_session_lock_excludes_a_second_holder_and_is_seen_by_readers(sys_redis: redis.Redis) -> None:
    held = locks.try_lock_session(sys_redis, "h1/ccl-auto-0", 30, "worker-a")
    assert held is not None
    try:
        assert locks.try_lock_session(sys_redis, "h1/ccl-auto-0", 30) is None
        assert locks.session_locked(sys_redis, "h1/ccl-auto-0")
        assert locks.sessions_locked(sys_redis, ["h1/ccl-auto-0", "h1/ccl-auto-1"]) == [True, False]
    finally:
        held.release()
    assert not locks.session_locked(sys_redis, "h1/ccl-auto-0")
