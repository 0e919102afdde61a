"""Fixtures for the Celery-system and lifecycle tests: real Redis (a free DB of SYSTEM_DBS, claimed per run),
real tmux, fake agent, files."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from dispatcher.agent import pool
from dispatcher.agent.tmux import Tmux
from dispatcher.core.config import AgentSettings, PoolSettings, Settings, TmuxSettings
from dispatcher.core.taskfile import render_task
from dispatcher.flows import runtime
from dispatcher.flows.dispatch import Dispatcher
from dispatcher.flows.ports import Ports
from dispatcher.inbox import files as aq
from dispatcher.testing import FAKE_AGENT_COMMAND

REDIS_BASE = "redis://127.0.0.1:6379/"
#: DBs the system tests may take; each run claims a free one so concurrent runs never share state.
SYSTEM_DBS = range(1, 14)


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str | Callable[[], str] = "condition",
             step: Callable[[], Any] | None = None, poll: float = 0.05) -> Any:
    """Poll (running ``step`` each round) until ``predicate`` is truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if step is not None:
            step()
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what() if callable(what) else what}")
        time.sleep(poll)


class Clock:
    """An injectable clock: real time plus an offset tests can advance (no sleeps)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def messages(log: Path) -> list[dict[str, Any]]:
    """Messages the fake agents received (one JSON line each)."""
    if not log.exists():
        return []
    rows = [json.loads(x) for x in log.read_text(encoding="utf-8").splitlines() if x.strip()]
    return [r for r in rows if r.get("event") == "message"]


def tags_received(log: Path) -> list[str]:
    """``project:id`` of each received task message, in order (from its cwd and tag)."""
    out = []
    for m in messages(log):
        text = m.get("text", "")
        if text.startswith("[") and ".md]" in text:
            out.append(f"{Path(m['cwd']).name}:{text[1:text.index('.md]')]}")
    return out


@pytest.fixture
def sys_redis_url() -> Iterator[str]:
    """A Redis DB no other test run is using (claimed in DB 0), released afterwards."""
    guard = redis.Redis.from_url(REDIS_BASE + "0", decode_responses=True)
    token = uuid.uuid4().hex
    for db in SYSTEM_DBS:
        if guard.set(f"aqtest:db:{db}", token, nx=True, ex=900):
            break
    else:
        raise RuntimeError("no free Redis test DB (1-13)")
    yield f"{REDIS_BASE}{db}"
    if guard.get(f"aqtest:db:{db}") == token:
        guard.delete(f"aqtest:db:{db}")
    guard.close()


def flushed_client(url: str, *, decode: bool) -> Iterator[redis.Redis]:
    """A client on ``url``, its DB flushed before and after (fails, not skips, when Redis is missing)."""
    r = redis.Redis.from_url(url, decode_responses=decode)
    r.flushdb()
    yield r
    r.flushdb()
    r.close()


@pytest.fixture
def sys_redis(sys_redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[redis.Redis]:
    """That DB, decoded strings; REDIS_URL points every component at it."""
    monkeypatch.setenv("REDIS_URL", sys_redis_url)
    yield from flushed_client(sys_redis_url, decode=True)


@pytest.fixture
def agent_log(tmp_path: Path) -> Path:
    return tmp_path / "agents.jsonl"


@pytest.fixture
def settings(tmp_path: Path, agent_log: Path, sys_redis_url: str) -> Settings:
    """Settings for a 3-session pool on a private tmux socket, running the fake agent."""
    projects = tmp_path / "projects"
    projects.mkdir()
    return Settings(
        projects_dir=projects,
        pool=PoolSettings(prefix="ccl-auto-", start_index=0, max=3, cooldown=300.0),
        tmux=TmuxSettings(socket_name=f"aqsys-{uuid.uuid4().hex[:10]}"),
        agent=AgentSettings(command=FAKE_AGENT_COMMAND, prompt_timeout=20.0, submit_timeout=6.0, submit_retries=3,
                            resume_dir=tmp_path / "resume", env={"FAKE_AGENT_LOG": str(agent_log),
                                                                 "FAKE_AGENT_BUSY_MS": "50"}),
        state_dir=tmp_path / "state",
        finish_grace=2.0,
        redis_url=sys_redis_url,
        # Tests write task files atomically and mostly drive the dispatcher without a watcher to see
        # them moved in: judge them at once. The settling tests (test_settle.py) set it themselves.
        settle_time=0.0,
        # These tests run several tasks of one project at once (written before max_parallel): allow the pool's size.
        max_parallel=3,
    )


@pytest.fixture
def tmux_pool(settings: Settings) -> Iterator[Tmux]:
    """The pool's sessions on the private tmux server, killed afterwards."""
    t = Tmux(settings.tmux.socket_name)
    pool.create(t, settings.pool, cwd=settings.projects_dir)
    yield t
    t.kill_server()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def disp(settings: Settings, sys_redis: redis.Redis[str], tmux_pool: Tmux, clock: Clock) -> Iterator[Dispatcher]:
    """A Dispatcher running the real launch path inline (no Celery)."""
    launch = runtime.agent_launcher(settings, sys_redis, tmux_pool)
    yield Dispatcher(Ports(settings, sys_redis, tmux_pool, launch, clock=clock))


def add_task(settings: Settings, project: str, task_id: str, body: str = "@fake: done", *,
             priority: str = "default", depends_on: tuple[str, ...] = (), mtime: float | None = None) -> Path:
    """Write a task file (atomically) into ``project``'s inbox."""
    proj = aq.project(settings.projects_dir, project)
    aq.ensure_dirs(proj)
    # Directives must start a line: the message's first line is "[<id>.md] <first body line>".
    text = render_task(title=task_id, priority=priority, depends_on=depends_on, body=f"Work on {task_id}.\n{body}")
    path = aq.write_task_atomically(proj, task_id, text)
    if mtime is not None:
        import os

        os.utime(path, (mtime, mtime))
    return path


def done_ids(settings: Settings, project: str) -> set[str]:
    done = aq.project(settings.projects_dir, project).done
    return {p.name[:-3] for p in done.glob("*.md")}


def add_fifty_tasks(settings: Settings, base: float) -> dict[str, set[str]]:
    """48 tasks over p1-p3 with every priority (older first), plus a chain C2 → C1 → p1:T0; ids by project."""
    expected: dict[str, set[str]] = {"p1": set(), "p2": set(), "p3": set()}
    prios = ["low", "default", "high", "critical"]
    n = 0
    for i in range(16):
        for proj in expected:
            if n == 48:
                break
            add_task(settings, proj, f"T{i}", priority=prios[i % 4], mtime=base + n)
            expected[proj].add(f"T{i}")
            n += 1
    # A chain across projects: C2 waits on C1, C1 on p1:T0.
    add_task(settings, "p2", "C1", depends_on=("p1:T0",), priority="critical")
    add_task(settings, "p3", "C2", depends_on=("p2:C1",), priority="critical")
    expected["p2"].add("C1")
    expected["p3"].add("C2")
    return expected


def assert_fifty_once_in_order(agent_log: Path) -> None:
    """Each of the fifty delivered once, the chain in order, and the first wave (3 sessions) all critical."""
    got = tags_received(agent_log)
    assert len(got) == len(set(got)) == 50, "every task exactly once"
    order = {t: i for i, t in enumerate(got)}
    assert order["p1:T0"] < order["p2:C1"] < order["p3:C2"]
    first = got[:3]
    assert all(t.split(":")[1] in {"T3", "T7", "T11", "T15"} for t in first), first
