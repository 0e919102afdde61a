"""The running count behind ``max_parallel`` (store/running.py) against crashes, flushes and racing claimers.

The count lives in Redis so that a claim need not list the project's inbox; the files stay the truth. These
tests kill real claimer processes (fresh interpreters, kill -9) between the claim's steps, empty Redis under
running tasks, and race real threads and processes over one project's slots: no more than ``max_parallel``
claims may ever hold a file, and no project may stay blocked once its files say a slot is free.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from system_fixtures import add_task, wait_for

from dispatcher.core import defaults as d
from dispatcher.core import keys
from dispatcher.core.config import Settings
from dispatcher.core.errors import ClaimError
from dispatcher.core.taskfile import Task
from dispatcher.flows import claim as cl
from dispatcher.flows.dispatch import Dispatcher
from dispatcher.flows.ports import Ports
from dispatcher.inbox import files as aq
from dispatcher.inbox.reader import load_task
from dispatcher.store import running

GRACE_S = 0.5  # a dead claimer's reservation is pruned after this (the default 5 s would only slow the test)

# A claimer that stops (and waits to be killed) right after one step of flows/claim.py's take().
CLAIMER = """
import sys, time
from pathlib import Path
import redis
from dispatcher.core.config import Settings
from dispatcher.flows import claim as cl
from dispatcher.flows.dispatch import Dispatcher
from dispatcher.flows.ports import Ports
from dispatcher.inbox.reader import load_task
projects, url, project, task_id, stop = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
s = Settings(projects_dir=projects, redis_url=url, max_parallel=1)
r = redis.Redis.from_url(url, decode_responses=True)
task = load_task(projects / project / ".agent-queue" / "inbox" / (task_id + ".md"), project)
owner = "h/dead"
if stop in ("reserved", "renamed"):
    assert cl._reserve(r, s, task, 1, owner), "no slot"
if stop == "renamed":
    cl.claim(task.path)
elif stop == "confirmed":
    cl.take(r, s, task, owner)
elif stop == "released":  # a give-back that moved the file and died before freeing the slot
    claimed = cl.take(r, s, task, owner)
    cl.release(claimed.path)
print("stopped", flush=True)
time.sleep(600)
"""


@pytest.fixture
def grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(d, "RUNNING_RESERVATION_GRACE_S", GRACE_S)


def task_of(settings: Settings, project: str, task_id: str) -> Task:
    return load_task(aq.project(settings.projects_dir, project).task_path(task_id), project)


def killed_at(settings: Settings, url: str, project: str, task_id: str, stop: str) -> None:
    """Run the claimer to ``stop`` and kill -9 it there."""
    proc = subprocess.Popen([sys.executable, "-c", CLAIMER, str(settings.projects_dir), url, project, task_id, stop],
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "stopped", "the claimer did not reach its stop"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


def one(settings: Settings, r: redis.Redis[str], project: str, task_id: str, owner: str = "h/s1") -> cl.Claim | None:
    claimed = cl.take(r, settings, task_of(settings, project, task_id), owner)
    if claimed is not None:
        claimed.close()
    return claimed


@pytest.mark.parametrize("stop", ["reserved", "renamed", "confirmed", "released"])
def test_a_claimer_killed_between_any_two_steps_neither_frees_a_slot_early_nor_blocks_the_project(
        settings: Settings, sys_redis: redis.Redis[str], sys_redis_url: str, grace: None, stop: str) -> None:
    s = settings.with_overrides(max_parallel=1)
    for t in ("A", "B"):
        add_task(s, "p", t)
    killed_at(s, sys_redis_url, "p", "A", stop)
    proj = aq.project(s.projects_dir, "p")
    if aq.runs(proj, "A"):
        # A's file runs (an abandoned launch, recovery's to give back): it holds the only slot, even long
        # after the dead claimer's reservation grew old.
        time.sleep(GRACE_S * 2)  # the grace must pass for the test to mean anything; nothing is polled here
        assert one(s, sys_redis, "p", "B") is None
        assert cl.running_count(sys_redis, s, "p") == 1
        cl.release(proj.task_path("A", d.LAUNCHING))  # as recovery does with an abandoned launch
    # Nothing of A runs any more: the slot comes free (at once for a confirmed entry, after the grace for a
    # reservation whose claimer may still have been about to rename).
    claimed = wait_for(lambda: one(s, sys_redis, "p", "B"), timeout=30, what="B claimed")
    assert claimed.path.name == "B.md.launching"
    assert running.entries(sys_redis, "p") == {"B": "c:h/s1"}


def test_after_a_flush_the_count_is_rebuilt_from_the_files(
        settings: Settings, sys_redis: redis.Redis[str]) -> None:
    s = settings.with_overrides(max_parallel=2)
    for t in ("A", "B", "C"):
        add_task(s, "p", t)
    assert one(s, sys_redis, "p", "A", "h/s1") is not None
    assert one(s, sys_redis, "p", "B", "h/s2") is not None
    cl.promote(aq.project(s.projects_dir, "p").task_path("B", d.LAUNCHING))  # one launching, one dispatched
    sys_redis.flushdb()
    assert one(s, sys_redis, "p", "C") is None, "two tasks run: the rebuilt count must say so"
    assert running.entries(sys_redis, "p") == {"A": "c:?", "B": "c:?"}
    # A finishes (the agent moves it to done/, the monitor frees the slot): C may go.
    proj = aq.project(s.projects_dir, "p")
    os.rename(proj.task_path("A", d.LAUNCHING), aq.done_path(proj, "A"))
    cl.finished(sys_redis, "p", "A", "h/s1")
    assert one(s, sys_redis, "p", "C") is not None


def test_a_flush_between_a_claims_count_and_its_confirm_cannot_give_a_second_slot(
        settings: Settings, sys_redis: redis.Redis[str]) -> None:
    s = settings.with_overrides(max_parallel=1)
    for t in ("A", "B"):
        add_task(s, "p", t)
    a = task_of(s, "p", "A")
    token = cl._reserve(sys_redis, s, a, 1, "h/s1")
    assert token
    sys_redis.flushdb()  # A's reservation is gone with everything else
    assert one(s, sys_redis, "p", "B", "h/s2") is not None  # rebuilt from files that do not show A yet
    launching = cl.claim(a.path)
    assert not cl._confirm(sys_redis, s, a, "h/s1", launching, token, 1), "A must see B's slot and give back"
    assert (s.projects_dir / "p" / ".agent-queue" / "inbox" / "A.md").exists()
    assert running.entries(sys_redis, "p") == {"B": "c:h/s2"}


def test_a_file_moved_by_hand_is_counted_again_by_the_scan(disp: Dispatcher, settings: Settings) -> None:
    s = settings.with_overrides(max_parallel=1)
    d1 = Dispatcher(Ports(s, disp.r, disp.tmux, disp.launch, clock=disp.clock))
    for t in ("A", "B"):
        add_task(s, "p", t)
    assert cl.running_count(disp.r, s, "p") == 0  # built (empty)
    proj = aq.project(s.projects_dir, "p")
    os.rename(proj.task_path("A"), proj.task_path("A", d.DISPATCHED))  # an operator's mv
    assert one(s, disp.r, "p", "B") is not None, "not counted yet: the claim does not list the inbox"
    cl.release(proj.task_path("B", d.LAUNCHING))
    cl.drop_slot(disp.r, "p", "B", "h/s1")
    d1.plan()  # the periodic scan: the safety net
    assert running.entries(disp.r, "p") == {"A": "c:?"}
    assert one(s, disp.r, "p", "B") is None


def test_a_prune_from_an_earlier_read_never_frees_a_later_claim_of_the_same_task(
        settings: Settings, sys_redis: redis.Redis[str]) -> None:
    """ABA: a claimer finds the project full and reads T's entry; T finishes and the same session claims a new T;
    the claimer, having seen T's file not running, prunes what it read. The new claim must keep its slot (with
    values that named only the owner, the prune removed it and a third task ran past the limit)."""
    s = settings.with_overrides(max_parallel=1)
    proj = aq.project(s.projects_dir, "p")
    add_task(s, "p", "T")
    first = one(s, sys_redis, "p", "T")
    assert first is not None
    full = running.reserve(sys_redis, "p", "X", 1, "h/s2")  # another claimer: full, with T's entry as read
    assert full.status == "full" and [t for t, _ in full.entries] == ["T"]
    os.rename(first.path, aq.done_path(proj, "T"))  # T finished, queued again, claimed again by the same session
    cl.finished(sys_redis, "p", "T", "h/s1")
    os.remove(aq.done_path(proj, "T"))
    add_task(s, "p", "T")
    assert one(s, sys_redis, "p", "T") is not None
    assert running.prune(sys_redis, "p", list(full.entries)) == 0
    assert running.entries(sys_redis, "p") == {"T": "c:h/s1"}
    add_task(s, "p", "U")
    assert one(s, sys_redis, "p", "U", owner="h/s3") is None  # still full


def test_a_late_drop_never_frees_another_claim_rebuilt_after_a_flush(
        settings: Settings, sys_redis: redis.Redis[str]) -> None:
    """A give-back moved T's file back and is slow to free the slot; meanwhile another session claims T, Redis is
    flushed and the count rebuilt (T's owner unknown). The late drop must not free the new claim's slot."""
    s = settings.with_overrides(max_parallel=1)
    add_task(s, "p", "T")
    first = one(s, sys_redis, "p", "T")
    assert first is not None
    cl.release(first.path)  # moved back; its drop comes late
    sys_redis.hdel(keys.running("p"), "T")  # (what the second claimer's prune does: T's file did not run)
    assert one(s, sys_redis, "p", "T", owner="h/s2") is not None
    sys_redis.flushdb()
    assert cl.running_count(sys_redis, s, "p") == 1  # rebuilt from the files: T runs, owner unknown
    cl.drop_slot(sys_redis, "p", "T", "h/s1")  # the late drop of the first claim
    assert running.entries(sys_redis, "p") == {"T": "c:?"}


@pytest.mark.parametrize("limit", [1, 2])
def test_racing_threads_with_flushes_never_hold_more_than_the_limit(
        settings: Settings, sys_redis: redis.Redis[str], sys_redis_url: str, limit: int) -> None:
    s = settings.with_overrides(max_parallel=limit)
    ids = [f"T{n:02d}" for n in range(12)]
    for t in ids:
        add_task(s, "p", t)
    proj = aq.project(s.projects_dir, "p")
    held: set[str] = set()
    peak = [0]
    guard = threading.Lock()
    stop = time.monotonic() + 6
    errors: list[BaseException] = []
    claims = [0]

    def worker(n: int) -> None:
        r = redis.Redis.from_url(sys_redis_url, decode_responses=True)
        rng = random.Random(n)
        try:
            while time.monotonic() < stop:
                task_id = rng.choice(ids)
                try:
                    task = task_of(s, "p", task_id)
                except Exception:
                    continue  # claimed or finished by another thread meanwhile
                try:
                    claimed = cl.take(r, s, task, f"h/s{n}")
                except ClaimError:
                    continue
                if claimed is None:
                    continue
                with guard:
                    held.add(task_id)
                    peak[0] = max(peak[0], len(held))
                    claims[0] += 1
                    assert len(held) <= limit, f"{sorted(held)} hold slots at once (limit {limit})"
                time.sleep(rng.uniform(0, 0.01))
                with guard:
                    held.discard(task_id)
                claimed.close()
                if rng.random() < 0.5:
                    claimed.release()  # back to pending
                else:  # the agent finished: done/, then the monitor frees the slot; a new file replaces it
                    os.rename(claimed.path, aq.done_path(proj, task_id))
                    cl.finished(r, "p", task_id, f"h/s{n}")
                    os.remove(aq.done_path(proj, task_id))
                    add_task(s, "p", task_id)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)
        finally:
            r.close()

    def flusher() -> None:
        r = redis.Redis.from_url(sys_redis_url, decode_responses=True)
        while time.monotonic() < stop:
            time.sleep(0.05)
            r.flushdb()
        r.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)] + [threading.Thread(target=flusher)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert claims[0] > 20, f"only {claims[0]} claims: the race was not exercised"
    assert peak[0] == limit, "the limit was reached (and never passed)"
    assert not aq.running_ids(proj)


RACER = """
import json, os, sys, time
from pathlib import Path
import redis
from dispatcher.core.config import Settings
from dispatcher.core.errors import ClaimError
from dispatcher.flows import claim as cl
from dispatcher.flows.dispatch import Dispatcher
from dispatcher.flows.ports import Ports
from dispatcher.inbox.reader import load_task
projects, url, go, n = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4]
s = Settings(projects_dir=projects, redis_url=url, max_parallel=2)
r = redis.Redis.from_url(url, decode_responses=True)
inbox = projects / "p" / ".agent-queue" / "inbox"
tasks = [load_task(p, "p") for p in sorted(inbox.glob("*.md"))]
(go.parent / f"ready-{os.getpid()}").touch()
deadline = time.monotonic() + 60
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.001)
won = []
for task in tasks:
    try:
        if cl.take(r, s, task, "h/s" + n) is not None:
            won.append(task.id)
    except ClaimError:
        pass
print(json.dumps(won))
"""


def test_racing_processes_claim_exactly_the_limit(settings: Settings, sys_redis: redis.Redis[str],
                                                  sys_redis_url: str, tmp_path: Path) -> None:
    s = settings.with_overrides(max_parallel=2)
    for n in range(40):
        add_task(s, "p", f"T{n:02d}")
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(s.projects_dir), sys_redis_url, str(go), str(n)],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
             for n in range(4)]
    wait_for(lambda: len(list(tmp_path.glob("ready-*"))) == 4, timeout=60, what="racers imported")
    go.touch()
    import json

    wins = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert sum(len(w) for w in wins) == 2, wins
    assert sorted(aq.running_ids(aq.project(s.projects_dir, "p"))) == sorted(t for w in wins for t in w)
    assert set(running.entries(sys_redis, "p") or {}) == {t for w in wins for t in w}


def test_the_scan_builds_lost_counts_but_not_from_a_listing_older_than_a_flush(disp: Dispatcher,
                                                                             settings: Settings) -> None:
    s = settings.with_overrides(max_parallel=1)
    d1 = Dispatcher(Ports(s, disp.r, disp.tmux, disp.launch, clock=disp.clock))
    for t in ("A", "B"):
        add_task(s, "p", t)
    add_task(s, "q", "C")
    proj = aq.project(s.projects_dir, "p")
    os.rename(proj.task_path("A"), proj.task_path("A", d.DISPATCHED))
    disp.r.flushdb()
    d1.plan()  # after a start or a flush: every project's count is built from the scan's own listing
    assert running.entries(disp.r, "p") == {"A": "c:?"} and running.entries(disp.r, "q") == {}
    disp.r.flushdb()
    token = running.begin_scan(disp.r)
    disp.r.flushdb()  # Redis lost everything while the scan listed: its listing may predate a claim
    running.after_scan(disp.r, token, {"p": ["A"], "q": []})
    assert running.entries(disp.r, "p") is None and running.entries(disp.r, "q") is None
