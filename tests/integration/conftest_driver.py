"""Fixtures for the agent driver tests: a private tmux server, a claimed Redis DB (sys_redis_url), the fake agent."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from system_fixtures import flushed_client, wait_for

from dispatcher.agent.tmux import Tmux
from dispatcher.core.config import AgentSettings
from dispatcher.testing import FAKE_AGENT_COMMAND


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``predicate`` every 10 ms until truthy; fail after ``timeout`` seconds."""
    return wait_for(predicate, timeout=timeout, what=what, poll=0.01)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    """A tmux server on a private socket, killed afterwards."""
    server = Tmux(f"aqtest-{uuid.uuid4().hex[:12]}")
    yield server
    server.kill_server()


@pytest.fixture
def rdb(sys_redis_url: str) -> Iterator[redis.Redis]:
    """A Redis DB claimed for this test (bytes replies), flushed before and after."""
    yield from flushed_client(sys_redis_url, decode=False)


@pytest.fixture
def fake_log(tmp_path: Path) -> Path:
    """The file the fake agent appends its JSON lines to."""
    return tmp_path / "fake-agent.jsonl"


def read_log(path: Path, event: str | None = "message") -> list[dict[str, Any]]:
    """Entries of the fake agent's log (only ``event`` ones when given)."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if event is None or r.get("event") == event]


@pytest.fixture
def make_agent(tmp_path: Path, fake_log: Path) -> Callable[..., AgentSettings]:
    """AgentSettings running the fake agent; keyword overrides for env, hooks, timeouts."""

    def make(*, env: dict[str, str] | None = None, **overrides: Any) -> AgentSettings:
        full_env = {"FAKE_AGENT_LOG": str(fake_log), **(env or {})}
        base: dict[str, Any] = dict(command=FAKE_AGENT_COMMAND, prompt_timeout=15.0, submit_timeout=6.0,
                                    submit_retries=3, resume_dir=tmp_path / "resume", env=full_env, hooks=True)
        base.update(overrides)
        return AgentSettings(**base)

    return make


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project directory with an agent-queue inbox."""
    root = tmp_path / "proj"
    (root / ".agent-queue" / "inbox").mkdir(parents=True)
    (root / ".agent-queue" / "done").mkdir(parents=True)
    return root
