"""API limits end to end (fake agent, real tmux and Redis): 429/529 on screen or by hook pause the pool with
what the API said, for a backoff, not an hour; the interrupted task is resumed, never failed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import redis
from system_fixtures import Clock, add_task, done_ids, messages, wait_for

from dispatcher.agent.tmux import Tmux
from dispatcher.core.config import Settings
from dispatcher.flows import monitor, runtime
from dispatcher.flows.dispatch import Dispatcher
from dispatcher.flows.ports import Ports
from dispatcher.inbox import files as aq
from dispatcher.store import events, pause
from dispatcher.store.sessions import State


def _dispatcher(settings: Settings, r: redis.Redis[str], tmux: Tmux, clock: Clock, *, hooks: bool,
                version: str) -> tuple[Dispatcher, Settings]:
    env = {**settings.agent.env, "FAKE_AGENT_VERSION": version}
    s = settings.with_overrides(agent=replace(settings.agent, hooks=hooks, env=env))
    return Dispatcher(Ports(s, r, tmux, runtime.agent_launcher(s, r, tmux), clock=clock)), s


@pytest.mark.parametrize("hooks,version,status,kind,said", [
    (False, "2.1.197", "429", "rate_limit", "API rate limit (429: Fake rate limit for tests)"),
    (False, "2.1.332", "529", "overloaded", "API overloaded (529: Overloaded. This is a server-side issue"),
    (True, "2.1.332", "429", "rate_limit", "API rate limit (429: Fake rate limit for tests)"),
    (True, "2.1.197", "529", "overloaded", "API overloaded (529: Overloaded)"),
])
def test_api_error_pauses_the_pool_for_the_backoff_and_resumes_the_task(
        settings: Settings, sys_redis: redis.Redis[str], tmux_pool: Tmux, clock: Clock, agent_log: Path,
        hooks: bool, version: str, status: str, kind: str, said: str) -> None:
    d, s = _dispatcher(settings, sys_redis, tmux_pool, clock, hooks=hooks, version=version)
    add_task(s, "p", "API", f"@fake: error {status}")
    assert d.assign_next("ccl-auto-0").status == "dispatched"
    wait_for(lambda: d.session_info("ccl-auto-0").state is State.LIMITED, timeout=30, what="limited",
             step=lambda: monitor.monitor_all(d))
    held = pause.current(d.r, clock())
    assert held is not None and held.cause == kind and said in held.describe()
    assert held.until - clock() <= s.limits.rate_limit_pause + 5  # the backoff's first step, not an hour
    info = d.session_info("ccl-auto-0")
    assert said in info.detail and "usage limit" not in info.detail
    assert d.assign_next("ccl-auto-1").detail.startswith(said[:20])  # why nothing launches, in its own words
    assert aq.project(s.projects_dir, "p").task_path("API", ".dispatched").exists()  # still owned

    clock.advance(s.limits.rate_limit_pause + 1)
    wait_for(lambda: "API" in done_ids(s, "p"), timeout=60, step=lambda: monitor.monitor_all(d),
             what=lambda: f"API done; events {[e.line() for e in events.recent(d.r, 30)]}")
    assert messages(agent_log)[1]["text"].startswith("[API.md] You were interrupted")
    assert not aq.project(s.projects_dir, "p").task_path("API", ".failed").exists()
