"""flows/claim.py: the rename, the flock and the owner record are taken and given back together."""

from __future__ import annotations

import json

import pytest
import redis
from system_fixtures import add_task

from dispatcher.core import defaults as d
from dispatcher.core.config import Settings
from dispatcher.core.errors import ClaimError
from dispatcher.core.taskfile import Task
from dispatcher.flows import claim as cl
from dispatcher.flows.dispatch import Outcome, Status
from dispatcher.inbox import markers
from dispatcher.store import attempts, owners

REF = "h1/ccl-auto-0"


def _task(settings: Settings, task_id: str) -> Task:
    path = add_task(settings, "alpha", task_id)
    return Task(id=task_id, project="alpha", path=path)


def test_take_renames_records_and_locks(settings: Settings, sys_redis: redis.Redis[str]) -> None:
    task = _task(settings, "T1")
    claim = cl.take(sys_redis, settings, task, REF)
    assert claim is not None
    try:
        assert claim.path.name == "T1.md" + d.LAUNCHING and not task.path.exists()
        assert owners.get(sys_redis, "alpha", "T1") == REF
        assert cl.claim_is_live(claim.path)  # the flock: recovery leaves a live launch alone
        with pytest.raises(ClaimError):
            cl.take(sys_redis, settings, task, "h2/ccl-auto-1")  # a second claimer loses
        assert owners.get(sys_redis, "alpha", "T1") == REF
    finally:
        claim.close()
    assert not cl.claim_is_live(claim.path)


def test_release_moves_the_file_then_drops_the_record(settings: Settings, sys_redis: redis.Redis[str]) -> None:
    task = _task(settings, "T2")
    claim = cl.take(sys_redis, settings, task, REF)
    assert claim is not None
    claim.release()
    claim.close()
    assert task.path.exists()
    record = owners.get(sys_redis, "alpha", "T2")
    assert owners.is_stone(record) and owners.host_of(record) is None


def test_fail_keeps_the_reason_and_drops_the_record(settings: Settings, sys_redis: redis.Redis[str]) -> None:
    task = _task(settings, "T3")
    claim = cl.take(sys_redis, settings, task, REF)
    assert claim is not None
    failed = claim.fail("prompt never appeared")
    claim.close()
    assert failed.name == "T3.md" + d.FAILED
    assert markers.read_failure(task.path) == "prompt never appeared"
    assert owners.is_stone(owners.get(sys_redis, "alpha", "T3"))
    assert cl.retry(failed) == task.path and markers.read_failure(task.path) == ""


def test_project_at_its_limit_is_not_claimed(settings: Settings, sys_redis: redis.Redis[str]) -> None:
    one = settings.with_overrides(max_parallel=1)
    first = cl.take(sys_redis, one, _task(one, "A"), REF)
    assert first is not None
    try:
        second = _task(one, "B")
        assert cl.take(sys_redis, one, second, "h1/ccl-auto-1") is None
        assert second.path.exists() and owners.get(sys_redis, "alpha", "B") is None
    finally:
        first.close()


def test_attempts_count_and_forget(sys_redis: redis.Redis[str]) -> None:
    assert [attempts.count(sys_redis, "alpha", "T1") for _ in range(3)] == [1, 2, 3]
    assert attempts.count(sys_redis, "alpha", "T2") == 1  # per task
    attempts.forget(sys_redis, "alpha", "T1")
    assert attempts.count(sys_redis, "alpha", "T1") == 1


def test_outcome_status_is_printed_and_serialised_as_before() -> None:
    outcome = Outcome(Status.NO_TASK, session="ccl-auto-0")
    assert outcome.status == "no-task" and str(outcome.status) == "no-task" and f"{outcome.status}" == "no-task"
    assert json.loads(json.dumps(outcome.as_dict()))["status"] == "no-task"
    assert type(outcome.as_dict()["status"]) is str
