"""agent.env values expand ``$VAR`` / ``${VAR}`` from the dispatcher's environment, like a shell would."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from conftest_driver import read_log

from dispatcher.agent.launcher import LaunchRequest, agent_env, launch
from dispatcher.agent.tmux import Tmux
from dispatcher.core.config import AgentSettings


def _request(project: Path) -> LaunchRequest:
    return LaunchRequest(project_dir=project, project="proj", task_id="T1", body="Do it.", priority="default")


def test_env_values_expand_variables_of_the_dispatcher(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("AQ_TEST_HOME", "/home/x")
    monkeypatch.delenv("AQ_TEST_UNSET", raising=False)
    agent = AgentSettings(env={"PATH": "$PATH:/opt/x/bin", "CFG": "${AQ_TEST_HOME}/.cfg", "PRICE": "$$5",
                               "GONE": "a${AQ_TEST_UNSET}b", "PLAIN": "no dollars"})

    with caplog.at_level(logging.WARNING, logger="dispatcher.agent.launcher"):
        env = agent_env("s", _request(tmp_path), agent, "redis://r/0")

    assert env["PATH"] == "/usr/bin:/bin:/opt/x/bin" and env["CFG"] == "/home/x/.cfg"
    assert env["PRICE"] == "$5" and env["PLAIN"] == "no dollars"
    assert env["GONE"] == "ab" and "AQ_TEST_UNSET" in caplog.text  # unset → empty, as in a shell, and said
    assert env["AQ_SESSION"] == "s"


def test_an_expanded_value_reaches_the_agent(tmux: Tmux, rdb: redis.Redis, make_agent: Callable[..., AgentSettings],
                                             project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AQ_TEST_LOGDIR", str(tmp_path / "logs"))
    (tmp_path / "logs").mkdir()
    tmux.new_session("s", width=200, height=50, cwd=tmp_path)

    launch(tmux, "s", _request(project), make_agent(env={"FAKE_AGENT_LOG": "${AQ_TEST_LOGDIR}/agent.jsonl",
                                                         "PATH": "$PATH"}, hooks=False), rdb,
           state_dir=tmp_path / "state")

    [msg] = read_log(tmp_path / "logs" / "agent.jsonl")
    assert msg["text"].startswith("[T1.md] Do it.")
    assert not any("$" in p.name for p in project.rglob("*"))  # no literal "${AQ_TEST_LOGDIR}" directory
    assert os.environ["PATH"]
