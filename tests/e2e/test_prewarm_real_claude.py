"""End-to-end: pre-warmed agents (agent/launcher.start_warm + launch(warm=…)) with the real Claude Code CLI.

A warm agent boots in the project before its task exists and waits at its prompt; a launch
that fits it only pastes. Checked on the pinned and the newest CLI: the warm agent sends
no turn before its task, the task reaches the API from that same agent (its session id, its
cwd, its model), and a launch that does not fit (another model) replaces it with a cold start.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from dispatcher.agent.launcher import LaunchRequest, launch, redis_url_of, start_warm
from dispatcher.agent.warm import read_tag
from dispatcher.core import screen
from dispatcher.store.hook_log import HookLog
from tests.e2e.fake_api import FakeAnthropicAPI, Text
from tests.e2e.harness import model_family, unwrap_pasted, wait_until
from tests.e2e.test_launch_real_claude import make_agent, pool_session, rdb, redis_server, tmux  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def warm_request(project_dir: Path, priority: str = "default") -> LaunchRequest:
    return LaunchRequest(project_dir=project_dir, project="proj", task_id="", body="", priority=priority)


def task_request(project_dir: Path, task_id: str, session_uuid: str, priority: str = "default") -> LaunchRequest:
    return LaunchRequest(project_dir=project_dir, project="proj", task_id=task_id, body=f"Do {task_id}.",
                         priority=priority, session_uuid=session_uuid)


def test_warm_agent_takes_its_task_by_paste(tmux, rdb, make_agent, home, project_dir, fake_api: FakeAnthropicAPI,
                                            tmp_path):
    pool_session(tmux, "s", tmp_path)
    agent = make_agent(home)
    state = tmp_path / "state"
    tag = start_warm(tmux, "s", warm_request(project_dir), agent, rdb, state_dir=state)
    assert read_tag(tmux, "s") == tag and tag.model == "sonnet"
    assert screen.prompt_ready(tmux.capture("s"))
    wait_until(lambda: HookLog(rdb).latest("s", "SessionStart"), 20, what="warm agent's SessionStart")
    start = HookLog(rdb).latest("s", "SessionStart")
    assert start is not None and start.task == "" and start.payload["session_id"] == tag.uuid  # no task's
    assert not fake_api.turns()  # booted, never typed into: no turn
    fake_api.script(Text("On it."))
    result = launch(tmux, "s", task_request(project_dir, "T-1", tag.uuid), agent, rdb, state_dir=state, warm=tag)
    assert result.warm and result.confirmed_by == "hook" and result.agent_uuid == tag.uuid
    assert read_tag(tmux, "s") is None  # the agent belongs to the task now
    turn = fake_api.wait_for_request(lambda q: q.is_turn and "[T-1.md]" in q.last_user_text(), 20)
    assert unwrap_pasted(turn.user_texts()[-1]).startswith("[T-1.md] Do T-1.")
    assert len(fake_api.turns()) == 1  # the task was the warm agent's first and only input
    assert model_family(turn.model) == "sonnet", turn.model
    assert f"Primary working directory: {project_dir}" in turn.context_text
    submit = HookLog(rdb).latest("s", "UserPromptSubmit")
    assert submit is not None and submit.payload["session_id"] == tag.uuid


def test_warm_agent_of_another_model_is_replaced(tmux, rdb, make_agent, home, project_dir,
                                                 fake_api: FakeAnthropicAPI, tmp_path):
    pool_session(tmux, "s", tmp_path)
    agent = make_agent(home)
    state = tmp_path / "state"
    tag = start_warm(tmux, "s", warm_request(project_dir), agent, rdb, state_dir=state)
    fresh = str(uuid.uuid4())
    result = launch(tmux, "s", task_request(project_dir, "T-2", fresh, priority="critical"), agent, rdb,
                    state_dir=state, warm=tag)
    assert not result.warm and result.model == "opus" and result.agent_uuid == fresh
    turn = fake_api.wait_for_request(lambda q: q.is_turn and "[T-2.md]" in q.last_user_text(), 20)
    assert model_family(turn.model) == "opus", turn.model
    assert len(fake_api.turns()) == 1
    starts = [r for r in HookLog(rdb).read("s") if r.event == "SessionStart"]
    assert [s.payload["session_id"] for s in starts] == [tag.uuid, fresh]


def test_dispatch_with_prewarm_pastes_into_the_warm_agent(tmux, rdb, make_agent, home, project_dir,
                                                          fake_api: FakeAnthropicAPI, tmp_path):
    """The whole path: a warm pass boots the agent in a free session, a task file arrives, assign_next pastes."""
    from dataclasses import replace

    import redis

    from dispatcher.agent import pool
    from dispatcher.core.config import PoolSettings, Settings, TmuxSettings
    from dispatcher.core.taskfile import render_task
    from dispatcher.flows import runtime, warm
    from dispatcher.flows.dispatch import Dispatcher
    from dispatcher.flows.ports import Ports
    from dispatcher.inbox import files as aq

    projects = project_dir.parent  # the project's name is its directory's: hostile characters are refused
    proj_dir = projects / "proj"
    proj_dir.mkdir()
    home = harness_home(home, proj_dir)
    agent = replace(make_agent(home), prewarm=True)
    settings = Settings(projects_dir=projects, pool=PoolSettings(prefix="ccl-auto-", max=1),
                        tmux=TmuxSettings(socket_name=tmux.socket_name), agent=agent, state_dir=tmp_path / "state",
                        redis_url=redis_url_of(rdb), settle_time=0.0, finish_grace=600.0)
    pool.create(tmux, settings.pool, cwd=projects)
    r = redis.Redis.from_url(redis_url_of(rdb), decode_responses=True)  # the dispatcher reads strings
    disp = Dispatcher(Ports(settings, r, tmux, runtime.agent_launcher(settings, r, tmux)))
    proj = aq.project(projects, "proj")
    aq.ensure_dirs(proj)
    warm.remember(disp, "proj", "default")
    assert warm.warm_free(disp) == ["ccl-auto-0: warm for proj (sonnet)"]
    tag = read_tag(tmux, "ccl-auto-0")
    assert tag is not None and disp.session_info("ccl-auto-0").state.value == "idle"
    assert "ccl-auto-0" in disp.free_sessions() and not fake_api.turns()
    aq.write_task_atomically(proj, "W1", render_task(title="W1", priority="default", body="Say hi."))
    outcome = disp.assign_next("ccl-auto-0")
    assert outcome.status == "dispatched" and "warm agent" in outcome.detail, outcome
    turn = fake_api.wait_for_request(lambda q: q.is_turn and "[W1.md]" in q.last_user_text(), 20)
    assert len(fake_api.turns()) == 1 and f"Primary working directory: {proj_dir}" in turn.context_text
    submit = HookLog(rdb).latest(str(disp.ref("ccl-auto-0")), "UserPromptSubmit")  # hooks name HOST/NAME
    assert submit is not None and submit.payload["session_id"] == tag.uuid
    info = disp.session_info("ccl-auto-0")
    assert info.state.value == "working" and info.task == "W1" and info.agent_uuid == tag.uuid


def harness_home(home: Path, project: Path) -> Path:
    """``home`` with ``project`` trusted too (the fixture trusts only the awkwardly named project dir)."""
    import json

    cfg_path = home / ".claude.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.setdefault("projects", {})[str(project)] = {"hasTrustDialogAccepted": True, "allowedTools": []}
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return home
