"""The fake agent imitates the Claude Code screens and hooks closely enough to test the driver."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from conftest_driver import read_log, wait_until

from dispatcher.agent.hook_settings import write_settings
from dispatcher.agent.launcher import LaunchRequest, launch, redis_url_of
from dispatcher.agent.tmux import Tmux
from dispatcher.core import screen
from dispatcher.core.config import AgentSettings
from dispatcher.store.hook_log import HookLog


def start(tmux: Tmux, cwd: Path, log: Path, *args: str, env: dict[str, str] | None = None) -> None:
    argv = [sys.executable, "-m", "dispatcher.testing.fake_agent", "--model", "sonnet",
            "--dangerously-skip-permissions", *args]
    tmux.new_session("s", width=200, height=50, cwd=cwd, command=argv, env={"FAKE_AGENT_LOG": str(log), **(env or {})})


def deliver(tmux: Tmux, rdb: redis.Redis, agent: AgentSettings, project: Path, body: str, tmp_path: Path,
            task_id: str = "T1") -> None:
    tmux.new_session("s", width=200, height=50, cwd=tmp_path)
    launch(tmux, "s", LaunchRequest(project_dir=project, project="proj", task_id=task_id, body=body), agent, rdb,
           state_dir=tmp_path / "state")


def test_screens_match_the_real_cli(tmux: Tmux, tmp_path: Path, fake_log: Path) -> None:
    # Busy long enough to be seen by a poll on a loaded machine.
    start(tmux, tmp_path, fake_log, env={"FAKE_AGENT_BUSY_MS": "1500"})
    ready = wait_until(lambda: s if screen.prompt_ready(s := tmux.capture("s")) else None, what="ready")
    assert screen.input_text(ready) == "" and "bypass permissions on" in ready
    tmux.paste("s", "\n".join(f"line {i}" for i in range(30)))
    pasted = wait_until(lambda: s if screen.has_paste_placeholder(s := tmux.capture("s")) else None, what="paste")
    assert screen.input_text(pasted) == "[Pasted text #1 +29 lines]"
    tmux.send_keys("s", "Enter")
    wait_until(lambda: screen.is_busy(tmux.capture("s")), what="busy")
    done = wait_until(lambda: s if screen.turn_finished(s := tmux.capture("s")) else None, what="finished")
    assert "❯ line 0" in done
    [msg] = read_log(fake_log)
    assert msg["text"] == "\n".join(f"line {i}" for i in range(30)) and msg["cwd"] == str(tmp_path)


@pytest.mark.parametrize("kind,name", [("trust", "trust folder"), ("apikey", "custom API key"),
                                       ("bypass", "bypass permissions")])
def test_dialogs(tmux: Tmux, tmp_path: Path, fake_log: Path, kind: str, name: str) -> None:
    start(tmux, tmp_path, fake_log, env={"FAKE_AGENT_DIALOG": kind})
    wait_until(lambda: screen.detect_dialog(tmux.capture("s")) == name, what="dialog")
    assert not screen.prompt_ready(tmux.capture("s"))


@pytest.mark.parametrize("version,line", [("2.1.197", "claude --resume "),
                                          ("2.1.332", "claude --model sonnet --resume ")])
def test_exit_prints_resume_id_and_fires_session_end(tmux: Tmux, rdb: redis.Redis, tmp_path: Path,
                                                     fake_log: Path, version: str, line: str) -> None:
    sid = str(uuid.uuid4())
    settings = write_settings(tmp_path / "state", "s")
    start(tmux, tmp_path, fake_log, "--session-id", sid, "--settings", str(settings),
          env={"AQ_SESSION": "s", "AQ_TASK": "p:T", "AQ_REDIS_URL": redis_url_of(rdb), "FAKE_AGENT_VERSION": version})
    wait_until(lambda: screen.prompt_ready(tmux.capture("s")), what="ready")
    tmux.send_literal("s", "/exit")
    tmux.send_keys("s", "Enter")
    wait_until(lambda: tmux.pane_info("s").dead, what="exit")
    assert line + sid in tmux.capture("s", history=100)
    assert screen.parse_resume_id(tmux.capture("s", history=100)) == sid
    log = HookLog(rdb)
    events = [r.event for r in log.read("s")]
    assert events == ["SessionStart", "SessionEnd"]
    end = log.latest("s", "SessionEnd")
    assert end is not None and end.payload["reason"] == "prompt_input_exit" and end.payload["session_id"] == sid


def test_done_moves_the_task(tmux: Tmux, rdb: redis.Redis, make_agent: Callable[..., AgentSettings], project: Path,
                             tmp_path: Path) -> None:
    (project / ".agent-queue" / "inbox" / "T1.md.dispatched").write_text("task")
    deliver(tmux, rdb, make_agent(), project, "work\n@fake: sleep 100\n@fake: done", tmp_path)
    wait_until(lambda: (project / ".agent-queue" / "done" / "T1.md").exists(), what="task done")
    stop = wait_until(lambda: HookLog(rdb).latest("s", "Stop"), what="Stop hook")
    assert "Moved T1.md" in stop.payload["last_assistant_message"]
    assert screen.turn_finished(tmux.capture("s"))


def test_fail_finishes_without_moving(tmux: Tmux, rdb: redis.Redis, make_agent: Callable[..., AgentSettings],
                                      project: Path, tmp_path: Path) -> None:
    (project / ".agent-queue" / "inbox" / "T1.md.dispatched").write_text("task")
    deliver(tmux, rdb, make_agent(), project, "@fake: fail", tmp_path)
    wait_until(lambda: HookLog(rdb).latest("s", "Stop"), what="Stop hook")
    assert (project / ".agent-queue" / "inbox" / "T1.md.dispatched").exists()
    assert screen.turn_finished(tmux.capture("s"))


def test_limit_prints_text_and_fires_stop_failure(tmux: Tmux, rdb: redis.Redis, project: Path, tmp_path: Path,
                                                  make_agent: Callable[..., AgentSettings]) -> None:
    deliver(tmux, rdb, make_agent(), project, "@fake: limit", tmp_path)
    failure = wait_until(lambda: HookLog(rdb).latest("s", "StopFailure"), what="StopFailure")
    assert failure.payload["error_type"] == "rate_limit"
    lim = screen.detect_limit(tmux.capture("s"))
    assert lim is not None and lim.kind == "usage_limit" and lim.resets == "2pm (America/Toronto)"
    assert HookLog(rdb).latest("s", "Stop") is None


def test_hang_stays_busy_until_escape(tmux: Tmux, rdb: redis.Redis, project: Path, tmp_path: Path,
                                      make_agent: Callable[..., AgentSettings]) -> None:
    deliver(tmux, rdb, make_agent(), project, "@fake: hang", tmp_path)
    # Submission is confirmed by the hook; tmux may draw the busy screen a moment later.
    wait_until(lambda: screen.is_busy(tmux.capture("s")), what="busy")
    tmux.send_keys("s", "Escape")
    wait_until(lambda: screen.prompt_ready(tmux.capture("s")), what="interrupted")
    assert "Interrupted" in tmux.capture("s")


def test_exit_directive_kills_the_process(tmux: Tmux, rdb: redis.Redis, project: Path, tmp_path: Path,
                                          make_agent: Callable[..., AgentSettings], fake_log: Path) -> None:
    deliver(tmux, rdb, make_agent(), project, "@fake: exit 4", tmp_path)
    wait_until(lambda: tmux.pane_info("s").dead, what="exit")
    assert len(read_log(fake_log)) == 1


def test_message_while_busy_is_queued(tmux: Tmux, tmp_path: Path, fake_log: Path) -> None:
    start(tmux, tmp_path, fake_log)
    wait_until(lambda: screen.prompt_ready(tmux.capture("s")), what="ready")
    tmux.send_literal("s", "first @fake: x")
    tmux.paste("s", "\n@fake: sleep 2000")  # busy long enough to type the second one on a loaded machine
    tmux.send_keys("s", "Enter")
    wait_until(lambda: screen.is_busy(tmux.capture("s")), what="busy")
    tmux.send_literal("s", "second")
    tmux.send_keys("s", "Enter")
    wait_until(lambda: len(read_log(fake_log)) == 2, what="second message")
    assert [m["text"] for m in read_log(fake_log)] == ["first @fake: x\n@fake: sleep 2000", "second"]
