"""The bash hook client (dispatcher/hook.sh) against real Redis, run as Claude Code runs it.

Claude Code runs the settings file's command through a shell with the payload on stdin and the agent's
environment; so do these tests (``sh -c <command>``), with the command hook_settings writes.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from dispatcher.agent.hook_settings import HOOK_PY, HOOK_SCRIPT, bash_for_hooks, hook_command, write_settings
from dispatcher.core import keys
from dispatcher.core.hook_report import HookReport
from dispatcher.store import redis_conn
from dispatcher.store.hook_log import HookLog

BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="no bash on this machine")
#: hook.sh's own deadline for a whole call (WATCHDOG_S), and Claude Code's (defaults.HOOK_TIMEOUT_S).
WATCHDOG_S = 3.0
CLAUDE_KILLS_AFTER_S = 10.0


def run_hook(event: str, stdin: bytes, env: dict[str, str], *, client: str = "bash",
             timeout: float = CLAUDE_KILLS_AFTER_S) -> subprocess.CompletedProcess[bytes]:
    """One hook call as Claude Code makes it: the settings' command through a shell, payload on stdin."""
    command = hook_command(event, sys.executable, BASH if client == "bash" else None)
    return subprocess.run(["/bin/sh", "-c", command], input=stdin, env=env, capture_output=True, timeout=timeout,
                          check=False)


def hook_env(url: str, session: str = "s", task: str = "p:T1", **extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "AQ_SESSION": session, "AQ_TASK": task,
            "AQ_REDIS_URL": url, **extra}


def only_report(rdb: redis.Redis, session: str) -> HookReport:
    reports = HookLog(rdb).read(session)
    assert len(reports) == 1, reports
    return reports[0]


def raw_payload(rdb: redis.Redis, session: str) -> bytes:
    rows = rdb.xrange(keys.session_hooks(session))
    assert len(rows) == 1
    return rows[0][1][b"payload"]  # type: ignore[no-any-return]


def test_settings_choose_the_bash_client_for_tcp_urls_only(tmp_path: Path) -> None:
    assert HOOK_SCRIPT.is_file()
    for url, client in (("redis://h:1/0", [BASH, "-p", str(HOOK_SCRIPT), "Stop", sys.executable]),
                        ("unix:///r.sock", [sys.executable, "-S", "-I", str(HOOK_PY), "Stop"])):
        settings = json.loads(write_settings(tmp_path, "s", redis_url=url).read_text(encoding="utf-8"))
        assert shlex.split(settings["hooks"]["Stop"][0]["hooks"][0]["command"]) == client
    assert bash_for_hooks("redis://127.0.0.1:6379/0") == BASH
    assert bash_for_hooks(None) == BASH  # hook.sh decides at run time
    assert bash_for_hooks("unix:///tmp/redis.sock?db=2") is None
    assert bash_for_hooks("rediss://h:6380/0") is None
    command = hook_command("Stop", "/opt/my venv/bin/python", "/bin/bash")
    assert shlex.split(command) == ["/bin/bash", "-p", str(HOOK_SCRIPT), "Stop", "/opt/my venv/bin/python"]
    assert shlex.split(hook_command("Stop", "/py")) == ["/py", "-S", "-I", str(HOOK_PY), "Stop"]


PAYLOADS = {
    "prompt": json.dumps({"session_id": str(uuid.uuid4()), "transcript_path": "/root/.claude/x.jsonl",
                          "cwd": "/tmp", "hook_event_name": "UserPromptSubmit",
                          "prompt": "[T1.md] do the thing\n\"quoted\" \\ back $(touch /tmp/x) %s ünï 😀\n"}),
    "empty": "",
    "not json": "not json",
    "a list": "[1, 2, 3]",
    "long prompt (cut by the reader)": json.dumps({"prompt": "[T9.md] " + "x" * 100_000, "cwd": "/tmp"}),
    "over the byte cap": json.dumps({"prompt": "y" * 300_000}),
    "nested deeper than json can": "[" * 100_000,
    "payload over the cap after the prompt is cut": json.dumps({"prompt": "p", "other": "z" * 70_000}),
}


@pytest.mark.parametrize("name", list(PAYLOADS))
def test_bash_and_python_clients_write_the_same_report(rdb: redis.Redis, sys_redis_url: str, name: str) -> None:
    payload = PAYLOADS[name].encode()
    reports = {}
    for client in ("bash", "python"):
        session = f"{client}-{name}"
        before = time.time()
        proc = run_hook("UserPromptSubmit", payload, hook_env(sys_redis_url, session), client=client)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
        report = only_report(rdb, session)
        assert before - 1 <= report.time <= time.time() + 1
        reports[client] = report
    bash, python = reports["bash"], reports["python"]
    assert (bash.event, bash.task, bash.session) == ("UserPromptSubmit", "p:T1", f"bash-{name}")
    assert (python.event, python.task, python.session) == ("UserPromptSubmit", "p:T1", f"python-{name}")
    assert bash.payload == python.payload


def test_delivery_tag_of_a_long_prompt_survives(rdb: redis.Redis, sys_redis_url: str) -> None:
    run_hook("UserPromptSubmit", PAYLOADS["long prompt (cut by the reader)"].encode(), hook_env(sys_redis_url))
    report = only_report(rdb, "s")
    assert report.prompt.startswith("[T9.md] ") and report.payload["prompt_truncated"] is True
    assert report.payload["cwd"] == "/tmp"


HOSTILE = {
    "nul bytes": b'{"prompt": "a\x00b"}\x00\x00',
    "newlines and carriage returns": b'\r\n\r\n{"prompt":\r\n"x"}\n\n\n',
    "resp injection": b"\r\n*3\r\n$3\r\nSET\r\n$4\r\npwnd\r\n$1\r\n1\r\n*1\r\n$8\r\nFLUSHALL\r\n",
    "quotes and shell": b"'\"`$(touch pwnd)`;${HOME}%s%n\\x41\\",
    "invalid utf-8": b'{"prompt": "\xff\xfe\xc3("}',
    "binary": bytes(range(1, 256)) * 64,
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_payload_is_stored_as_it_came(rdb: redis.Redis, sys_redis_url: str, tmp_path: Path,
                                              name: str) -> None:
    payload = HOSTILE[name]
    proc = subprocess.run(["/bin/sh", "-c", hook_command("Stop", sys.executable, BASH)], input=payload,
                          env=hook_env(sys_redis_url), capture_output=True, timeout=CLAUDE_KILLS_AFTER_S,
                          cwd=tmp_path, check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
    assert raw_payload(rdb, "s") == payload.replace(b"\x00", b"")  # bash strings hold no NUL
    assert rdb.keys("*") == [keys.session_hooks("s").encode()]  # nothing else ran
    assert not (tmp_path / "pwnd").exists()
    # Read back through the dispatcher's own client (decoded strings): never raises, always a dict.
    decoded = redis_conn.client(sys_redis_url)
    try:
        report = HookLog(decoded).latest("s", "Stop")
    finally:
        decoded.close()
    assert report is not None and isinstance(report.payload, dict)


def test_a_cut_at_the_byte_cap_never_splits_a_character(rdb: redis.Redis, sys_redis_url: str) -> None:
    for shift in range(4):  # put the cap on each byte of a 4-byte character
        session = f"cut-{shift}"
        payload = b"x" * (262_144 - 2 - shift) + "😀".encode() * 4
        assert run_hook("Stop", payload, hook_env(sys_redis_url, session)).returncode == 0
        stored = raw_payload(rdb, session)
        assert len(stored) <= 262_144 and payload.startswith(stored)
        stored.decode("utf-8")  # strict: a whole number of characters


HOSTILE_ENV = {
    "BASH_ENV": {"BASH_ENV": "{script}"},
    "exported functions": {"BASH_FUNC_printf%%": "() {{ sh {script}; }}", "BASH_FUNC_read%%": "() {{ sh {script}; }}",
                           "BASH_FUNC_exec%%": "() {{ sh {script}; }}"},
    "shell options": {"POSIXLY_CORRECT": "1", "SHELLOPTS": "xtrace:errexit", "BASHOPTS": "xpg_echo",
                      "TMOUT": "0.001", "LC_ALL": "tr_TR.UTF-8", "LANG": "C.UTF-8", "IFS": "x", "EPOCHREALTIME": "1,5"},
}


@pytest.mark.parametrize("name", list(HOSTILE_ENV))
@pytest.mark.parametrize("shell", ["/bin/sh", BASH])  # Claude Code's shell; bash as sh, where /bin/sh is bash
def test_hostile_environment(rdb: redis.Redis, sys_redis_url: str, tmp_path: Path, name: str, shell: str) -> None:
    marker = tmp_path / "sourced"
    script = tmp_path / "evil.sh"
    script.write_text(f"touch {marker}\n", encoding="utf-8")
    session = "s\r\n*1\r\n$8\r\nFLUSHALL\r\n $(touch pwnd) *"
    task = "p:T\n'\"`x`"
    extra = {k: v.format(script=script) for k, v in HOSTILE_ENV[name].items()}
    proc = subprocess.run(["sh", "-c", hook_command("Notification", sys.executable, BASH)], executable=shell,
                          input=b'{"message": "hi"}', env=hook_env(sys_redis_url, session, task, **extra),
                          capture_output=True, timeout=CLAUDE_KILLS_AFTER_S, cwd=tmp_path, check=False)
    assert (proc.returncode, proc.stdout) == (0, b"")  # stderr: bash may warn of a missing locale
    assert not marker.exists() and not (tmp_path / "pwnd").exists()
    report = only_report(rdb, session)
    assert (report.session, report.task, report.payload) == (session, task, {"message": "hi"})


def test_auth_and_select_from_the_url(rdb: redis.Redis, sys_redis_url: str) -> None:
    user, password = f"aqtest-{uuid.uuid4().hex[:8]}", "p@ss:w%rd/ü"
    rdb.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all"])
    try:
        from urllib.parse import quote

        base = sys_redis_url.removeprefix("redis://")
        url = f"redis://{quote(user, safe='')}:{quote(password, safe='')}@{base}"
        assert run_hook("Stop", b"{}", hook_env(url)).stderr == b""
        assert only_report(rdb, "s").event == "Stop"
        bad = f"redis://{user}:wrong@{base}"
        proc = run_hook("Stop", b"{}", hook_env(bad, "bad"))
        assert proc.returncode == 0 and b"WRONGPASS" in proc.stderr  # reported, as the Python hook does
    finally:
        rdb.acl_deluser(user)


def test_unix_socket_url_hands_over_to_the_python_hook(tmp_path: Path) -> None:
    proc = run_hook("Stop", b"{}", hook_env(f"unix://{tmp_path}/none.sock?db=2"))
    assert proc.returncode == 0 and proc.stdout == b""
    assert b"dispatcher.hook: dispatcher hook Stop: not reported" in proc.stderr  # the Python hook's words


def test_refused_connection_hands_over_and_never_fails() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    proc = run_hook("Stop", b"{}", hook_env(f"redis://127.0.0.1:{port}/0"))
    assert proc.returncode == 0 and proc.stdout == b"" and b"Connection refused" in proc.stderr
    without_python = subprocess.run([BASH or "bash", "-p", str(HOOK_SCRIPT), "Stop"], input=b"{}",
                                    env=hook_env(f"redis://127.0.0.1:{port}/0"), capture_output=True, timeout=10,
                                    check=False)
    assert (without_python.returncode, without_python.stdout) == (0, b"")
    assert b"not reported: cannot connect" in without_python.stderr


@pytest.fixture
def silent_server() -> Iterator[tuple[int, int]]:
    """Two TCP ports on loopback: one accepts and never answers, one never accepts (its backlog is full)."""
    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen(8)
    stop = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        mute.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(mute.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    fillers = []
    for _ in range(4):  # more than the backlog: later SYNs are dropped, a connect() then hangs
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(full.getsockname())
        fillers.append(f)
    try:
        yield mute.getsockname()[1], full.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for s in [mute, full, *fillers, *held]:
            s.close()


def test_a_silent_redis_never_blocks_the_agent(silent_server: tuple[int, int]) -> None:
    mute, full = silent_server
    for port, said in ((mute, b"no reply from Redis"), (full, b"")):
        started = time.monotonic()
        proc = run_hook("Stop", b"{}", hook_env(f"redis://127.0.0.1:{port}/0"))
        # A bound, not a speed claim: the call ends by its own deadline, before Claude Code would kill it.
        assert time.monotonic() - started < CLAUDE_KILLS_AFTER_S - 1
        assert (proc.returncode, proc.stdout) == (0, b"")
        assert said in proc.stderr


def test_stdin_never_closed_never_blocks_the_agent(sys_redis_url: str) -> None:
    command = hook_command("Stop", sys.executable, BASH)
    started = time.monotonic()
    with subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=hook_env(sys_redis_url)) as proc:
        assert proc.wait(timeout=CLAUDE_KILLS_AFTER_S) == 0  # stdin still open: the watchdog ended the call
        assert proc.stdout is not None and proc.stdout.read() == b""
    assert time.monotonic() - started < CLAUDE_KILLS_AFTER_S - 1


def test_a_shell_that_is_not_bash_hands_over_to_the_python_hook(rdb: redis.Redis, sys_redis_url: str) -> None:
    # The part before the version check must parse in any sh (or an old bash), then leave it to Python.
    proc = subprocess.run(["/bin/sh", str(HOOK_SCRIPT), "Stop", sys.executable], input=b'{"a":1}',
                          env=hook_env(sys_redis_url), capture_output=True, timeout=CLAUDE_KILLS_AFTER_S, check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b"")
    assert only_report(rdb, "s").event == "Stop"
    # sh cannot open /dev/tcp: the report is the Python hook's, which stores the payload as it came, as bash does.
    assert raw_payload(rdb, "s") == b'{"a":1}'
