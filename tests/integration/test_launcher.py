"""launch() against the fake agent in real tmux, with real Redis hooks."""

from __future__ import annotations

import json
import shlex
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest_driver import read_log, wait_until

from dispatcher.agent.hook_settings import HOOK_SCRIPT, settings_path
from dispatcher.agent.launcher import LaunchRequest, build_argv, config_dir_of, launch, redis_url_of, resume_path
from dispatcher.agent.tmux import Tmux
from dispatcher.core import keys
from dispatcher.core.config import AgentSettings
from dispatcher.core.errors import DialogError, LaunchError, PromptTimeout, SubmitError
from dispatcher.store.hook_log import HookLog

W, H = 200, 50


def new_session(tmux: Tmux, name: str, cwd: Path) -> None:
    tmux.new_session(name, width=W, height=H, cwd=cwd)


def startup_lock_key(agent: AgentSettings) -> str:
    """The start-up lock ``agent`` takes on this (unnamed) host: one per config dir."""
    return keys.startup_lock("", config_dir_of(dict(agent.env)))


def request(project: Path, body: str = "Do the thing.", task_id: str = "T1",
            priority: str = "default") -> LaunchRequest:
    return LaunchRequest(project_dir=project, project="proj", task_id=task_id, body=body, priority=priority)


def test_build_argv_fills_template() -> None:
    cmd = "claude --model {model} --dangerously-skip-permissions {resume}"
    assert build_argv(cmd, model="opus") == ["claude", "--model", "opus", "--dangerously-skip-permissions"]
    rid = str(uuid.uuid4())
    assert build_argv(cmd, model="sonnet", resume_id=rid, settings_file=Path("/s.json"), session_uuid="u")[-4:] == \
        ["--resume", rid, "--settings", "/s.json"]
    assert build_argv(cmd, model="sonnet", session_uuid="u")[-2:] == ["--session-id", "u"]
    with pytest.raises(LaunchError):
        build_argv(cmd, model="x; rm -rf /")


def test_launch_delivers_with_hook_and_model(tmux: Tmux, rdb: redis.Redis, make_agent: Callable[..., AgentSettings],
                                             project: Path, fake_log: Path, tmp_path: Path) -> None:
    new_session(tmux, "ccl-auto-0", tmp_path)
    req = request(project, priority="critical")
    result = launch(tmux, "ccl-auto-0", req, make_agent(), rdb, state_dir=tmp_path / "state")
    assert result.confirmed_by == "hook" and result.model == "opus" and result.enter_presses == 1
    assert result.agent_uuid == req.session_uuid and not result.resumed
    # Confirmed by the bash hook client: the settings name hook.sh for this redis:// URL.
    hooks = json.loads(settings_path(tmp_path / "state", "ccl-auto-0").read_text(encoding="utf-8"))["hooks"]
    assert shlex.split(hooks["UserPromptSubmit"][0]["hooks"][0]["command"])[1:4] == \
        ["-p", str(HOOK_SCRIPT), "UserPromptSubmit"]
    [msg] = read_log(fake_log)
    assert msg["text"].startswith("[T1.md] Do the thing.\n\nIMPORTANT")
    assert msg["model"] == "opus" and msg["cwd"] == str(project) and msg["session_id"] == req.session_uuid
    submit = HookLog(rdb).latest("ccl-auto-0", "UserPromptSubmit")
    assert submit is not None and submit.prompt.startswith("[T1.md]") and submit.task == "proj:T1"
    assert submit.payload["session_id"] == req.session_uuid and submit.payload["cwd"] == str(project)
    assert (tmp_path / "state" / "agents" / "ccl-auto-0" / "settings.json").is_file()
    # The Stop hook reports the end of the turn to the session monitor.
    wait_until(lambda: HookLog(rdb).latest("ccl-auto-0", "Stop"), what="Stop hook")


def test_launch_without_hooks_confirms_from_screen(tmux: Tmux, rdb: redis.Redis, project: Path, fake_log: Path,
                                                   make_agent: Callable[..., AgentSettings], tmp_path: Path) -> None:
    new_session(tmux, "s", tmp_path)
    result = launch(tmux, "s", request(project), make_agent(hooks=False, env={"FAKE_AGENT_BUSY_MS": "2000"}), rdb,
                    state_dir=tmp_path / "state")
    assert result.confirmed_by == "screen" and result.model == "sonnet" and result.agent_uuid == ""
    assert len(read_log(fake_log)) == 1
    assert rdb.exists(keys.session_hooks("s")) == 0
    assert "--session-id" not in result.argv and "--settings" not in result.argv


HOSTILE_BODY = "\n".join([
    "C-c", "Enter", "Escape", "\x1b[201~ injected end of paste", "\x1b[31mred\x1b[0m", "tab\there", "echo hi;",
    "$(touch pwned) `touch pwned2` \"quotes\" 'single'", "unicode → ✓ é 中文", "\r\nwindows line",
])


def test_hostile_body_arrives_literally(tmux: Tmux, rdb: redis.Redis, make_agent: Callable[..., AgentSettings],
                                        project: Path, fake_log: Path, tmp_path: Path) -> None:
    new_session(tmux, "s", tmp_path)
    launch(tmux, "s", request(project, body=HOSTILE_BODY), make_agent(), rdb, state_dir=tmp_path / "state")
    [msg] = read_log(fake_log)
    expected_body = ("C-c\nEnter\nEscape\n[201~ injected end of paste\n[31mred[0m\ntab\there\necho hi;\n"
                     "$(touch pwned) `touch pwned2` \"quotes\" 'single'\nunicode → ✓ é 中文\n\nwindows line")
    assert msg["text"].split("\n\nIMPORTANT")[0] == "[T1.md] " + expected_body
    assert not (project / "pwned").exists() and not (project / "pwned2").exists()


@pytest.mark.parametrize("dirname", ["with space", "quo'te\"d", "$(touch pwned)", "semi;colon;", "#(touch pwned)"])
def test_hostile_project_path(tmux: Tmux, rdb: redis.Redis, make_agent: Callable[..., AgentSettings],
                              fake_log: Path, tmp_path: Path, dirname: str) -> None:
    proj = tmp_path / "projects" / dirname
    proj.mkdir(parents=True)
    new_session(tmux, "s", tmp_path)
    launch(tmux, "s", request(proj), make_agent(), rdb, state_dir=tmp_path / "state")
    [msg] = read_log(fake_log)
    assert msg["cwd"] == str(proj)
    assert sorted(p.name for p in proj.parent.iterdir()) == [dirname]
    assert not Path("pwned").exists() and not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("dialog,name", [("trust", "trust folder"), ("apikey", "custom API key"),
                                         ("bypass", "bypass permissions")])
def test_dialog_raises_and_types_nothing(tmux: Tmux, rdb: redis.Redis, make_agent: Callable[..., AgentSettings],
                                         project: Path, fake_log: Path, tmp_path: Path, dialog: str, name: str) -> None:
    new_session(tmux, "s", tmp_path)
    agent = make_agent(env={"FAKE_AGENT_DIALOG": dialog})
    with pytest.raises(DialogError) as err:
        launch(tmux, "s", request(project), agent, rdb, state_dir=tmp_path / "state")
    assert err.value.dialog == name and name in str(err.value)
    log = read_log(fake_log, event=None)
    assert [e["event"] for e in log] == ["start"]  # no key reached the dialog, no message
    assert rdb.get(startup_lock_key(agent)) is None  # lock released


def test_slow_boot_waits(tmux: Tmux, rdb: redis.Redis, make_agent: Callable[..., AgentSettings], project: Path,
                         fake_log: Path, tmp_path: Path) -> None:
    new_session(tmux, "s", tmp_path)
    result = launch(tmux, "s", request(project), make_agent(env={"FAKE_AGENT_BOOT_MS": "1500"}), rdb,
                    state_dir=tmp_path / "state")
    assert result.ready_after >= 1.5
    assert len(read_log(fake_log)) == 1


def test_never_ready_times_out(tmux: Tmux, rdb: redis.Redis, make_agent: Callable[..., AgentSettings],
                               project: Path, fake_log: Path, tmp_path: Path) -> None:
    new_session(tmux, "s", tmp_path)
    started = time.monotonic()
    agent = make_agent(prompt_timeout=1.0, env={"FAKE_AGENT_BOOT_MS": "60000"})
    with pytest.raises(PromptTimeout):
        launch(tmux, "s", request(project), agent, rdb, state_dir=tmp_path / "state")
    assert 1.0 <= time.monotonic() - started < 30  # gave up at its timeout, long before the 60 s boot ends
    assert read_log(fake_log) == [] and rdb.get(startup_lock_key(agent)) is None


def test_agent_dying_at_start_is_a_launch_error(tmux: Tmux, rdb: redis.Redis, project: Path, tmp_path: Path,
                                                make_agent: Callable[..., AgentSettings]) -> None:
    new_session(tmux, "s", tmp_path)
    agent = make_agent(command="python3 -c 'import sys; print(\"boom: no such model\"); sys.exit(3)' {model}")
    with pytest.raises(LaunchError, match=r"exited \(status (3|unknown)\)") as err:
        launch(tmux, "s", request(project), agent, rdb, state_dir=tmp_path / "state")
    assert "boom: no such model" in str(err.value)


def test_resume_file_consumed_once_and_only_on_success(tmux: Tmux, rdb: redis.Redis, project: Path,
                                                       tmp_path: Path, make_agent: Callable[..., AgentSettings],
                                                       fake_log: Path) -> None:
    new_session(tmux, "s", tmp_path)
    rid = str(uuid.uuid4())
    failing = make_agent(prompt_timeout=1.0, env={"FAKE_AGENT_BOOT_MS": "60000"})
    path = resume_path(failing, "s")
    path.parent.mkdir(parents=True)
    path.write_text(rid + "\n")
    with pytest.raises(PromptTimeout):
        launch(tmux, "s", request(project), failing, rdb, state_dir=tmp_path / "state")
    assert path.read_text().strip() == rid  # kept after a failed launch
    agent = make_agent()
    first = launch(tmux, "s", request(project), agent, rdb, state_dir=tmp_path / "state")
    assert first.resumed and first.agent_uuid == rid and not path.exists()
    assert "--session-id" not in first.argv and first.argv[first.argv.index("--resume") + 1] == rid
    second = launch(tmux, "s", request(project, task_id="T2"), agent, rdb, state_dir=tmp_path / "state")
    assert not second.resumed and "--resume" not in second.argv
    msgs = read_log(fake_log)
    assert [m["resume"] for m in msgs] == [rid, None]
    start = HookLog(rdb).latest("s", "SessionStart")
    assert start is not None


def test_unsubmitted_message_raises_and_clears_input(tmux: Tmux, rdb: redis.Redis, project: Path, tmp_path: Path,
                                                     make_agent: Callable[..., AgentSettings]) -> None:
    # A program that shows a prompt but ignores Enter: the message is never submitted.
    script = tmp_path / "deaf_agent.py"
    script.write_text(
        "import os, tty\n"
        "tty.setraw(0)\n"
        "os.write(1, '\\x1b[?2004h───\\r\\n❯\\u00a0\\r\\n───'.encode())\n"
        "buf = b''\n"
        "while True:\n"
        "    d = os.read(0, 65536)\n"
        "    if b'\\x15' in d:\n"  # Escape and C-u may arrive in one read under load
        "        buf = b''\n"
        "    elif b'[200~' in d:\n"
        "        buf = d.replace(b'\\x1b[200~', b'').replace(b'\\x1b[201~', b'').split(b'\\r')[0]\n"
        "    os.write(1, b'\\x1b[2;1H\\x1b[K' + '❯\\u00a0'.encode() + buf)\n", encoding="utf-8")
    agent = make_agent(command=f"python3 {script} {{model}}", submit_timeout=0.6, submit_retries=3, hooks=False)
    new_session(tmux, "s", tmp_path)
    with pytest.raises(SubmitError, match="3 Enter presses"):
        launch(tmux, "s", request(project), agent, rdb, state_dir=tmp_path / "state")
    wait_until(lambda: "[T1.md]" not in tmux.capture("s"), what="input cleared")


def test_parallel_launches_are_serialised(tmux: Tmux, rdb: redis.Redis, project: Path, tmp_path: Path,
                                          make_agent: Callable[..., AgentSettings], fake_log: Path) -> None:
    agent = make_agent(env={"FAKE_AGENT_BOOT_MS": "400"})
    names = ["ccl-auto-1", "ccl-auto-2", "ccl-auto-3"]
    for name in names:
        new_session(tmux, name, tmp_path)
    results: dict[str, Any] = {}

    def run(name: str, i: int) -> None:
        client = redis.Redis.from_url(redis_url_of(rdb))
        try:
            results[name] = launch(Tmux(tmux.socket_name), name, request(project, task_id=f"T{i}"), agent, client,
                                   state_dir=tmp_path / "state")
        except Exception as exc:  # reported below
            results[name] = exc

    threads = [threading.Thread(target=run, args=(n, i)) for i, n in enumerate(names)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(not isinstance(r, Exception) for r in results.values()), results
    starts = sorted(e["time"] for e in read_log(fake_log, event="start"))
    assert len(starts) == 3
    # Each agent started only after the previous one finished booting (400 ms) and showed its prompt.
    assert all(b - a >= 0.4 for a, b in zip(starts, starts[1:])), starts
    assert sorted(m["text"].split("]")[0] for m in read_log(fake_log)) == ["[T0.md", "[T1.md", "[T2.md"]
    for name in names:
        assert HookLog(rdb).latest(name, "UserPromptSubmit") is not None


def test_startup_lock_is_per_config_dir_and_can_be_turned_off(tmux: Tmux, rdb: redis.Redis, project: Path,
                                                              tmp_path: Path, make_agent: Callable[..., AgentSettings],
                                                              fake_log: Path) -> None:
    """A start-up in progress (its lock held here) blocks only agents of the same config dir, unless the lock is off."""
    shared, own = tmp_path / "home-shared", tmp_path / "home-own"
    same = make_agent(prompt_timeout=1.0, env={"HOME": str(shared)})
    held = rdb.lock(startup_lock_key(same), timeout=60)
    assert held.acquire(blocking=False)
    try:
        for name in ("a", "b", "c"):
            new_session(tmux, name, tmp_path)
        with pytest.raises(LaunchError, match="startup lock .* stayed busy"):
            launch(tmux, "a", request(project, task_id="T0"), same, rdb, state_dir=tmp_path / "state")
        other = make_agent(env={"HOME": str(own)})
        assert startup_lock_key(other) != startup_lock_key(same)
        launch(tmux, "b", request(project, task_id="T1"), other, rdb, state_dir=tmp_path / "state")
        unlocked = make_agent(env={"HOME": str(shared)}, startup_lock=False)
        launch(tmux, "c", request(project, task_id="T2"), unlocked, rdb, state_dir=tmp_path / "state")
    finally:
        held.release()
    assert sorted(m["text"].split("]")[0] for m in read_log(fake_log)) == ["[T1.md", "[T2.md"]


def test_hook_entry_never_fails_and_reports(rdb: redis.Redis, tmp_path: Path) -> None:
    import io
    import subprocess
    import sys

    from dispatcher import hook

    assert hook._commands("redis://u:p%40ss@h:1/15") == [("AUTH", "u", "p@ss"), ("SELECT", "15")]
    assert hook._commands("unix:///tmp/r.sock?db=3") == [("SELECT", "3")]
    env = {"AQ_SESSION": "s", "AQ_TASK": "p:T1", "AQ_REDIS_URL": redis_url_of(rdb)}
    assert hook.main(["Notification"], io.StringIO('{"notification_type": "idle_prompt"}'), env) == 0
    note = HookLog(rdb).latest("s", "Notification")
    assert note is not None and note.task == "p:T1" and note.payload["notification_type"] == "idle_prompt"
    assert hook.main(["Stop"], io.StringIO("not json"), env) == 0
    assert HookLog(rdb).latest("s", "Stop").payload == {"raw": "not json"}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "dispatcher.hook", "Stop"], input=b"{}", capture_output=True,
                          env={"AQ_SESSION": "s", "AQ_REDIS_URL": "redis://127.0.0.1:1/0", "PATH": "/usr/bin:/bin"},
                          timeout=10)
    assert proc.returncode == 0 and proc.stdout == b"" and b"not reported" in proc.stderr
    assert time.monotonic() - started < 9  # never waits for the unreachable Redis (the run's timeout is 10 s)
