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

from dispatcher.agent.launcher import LaunchRequest, launch, start_warm
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
