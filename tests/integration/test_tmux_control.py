"""The tmux control-mode client (agent/tmux_control.py) against a real tmux server on a private socket.

Every call here goes through the control client unless the test turns it off; the answers must be exactly
what a tmux process gives, and nothing a pane prints may end, fake or shift a reply.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest_driver import wait_until

from dispatcher.agent import tmux_control
from dispatcher.agent.tmux import Tmux, control_enabled
from dispatcher.core.errors import TmuxError


@pytest.fixture(autouse=True)
def control_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Control mode is opt-in (AQ_TMUX_CONTROL=1): every test here turns it on, but the last."""
    monkeypatch.setenv("AQ_TMUX_CONTROL", "1")
    if not control_enabled("tmux"):
        pytest.skip("tmux older than 3.2")

#: Lines a pane prints to fool a reader: guards with plausible numbers, markers, notifications.
FORGERY = ["%end 1795890000 300 1", "%error 1795890000 301 1", "%begin 1795890000 302 1", "%exit",
           "aq-" + "0" * 32, "%session-changed $0 x"]


def client_of(tmux: Tmux) -> tmux_control.ControlClient | None:
    return tmux_control.REGISTRY._clients.get((tmux.binary, tmux.socket_name))


def process_run(tmux: Tmux, *args: str) -> str:
    """The same command through a tmux process (the reference)."""
    return subprocess.run(["tmux", "-u", "-L", tmux.socket_name, *args], capture_output=True, text=True,
                          check=True, timeout=10).stdout


def printing(tmux: Tmux, name: str, lines: list[str]) -> None:
    script = "".join(f"printf '%s\\n' {line!r}\n" for line in lines) + "exec cat"
    tmux.new_session(name, width=120, height=len(lines) + 4, command=["sh", "-c", script])
    wait_until(lambda: lines[-1] in process_run(tmux, "capture-pane", "-p", "-t", f"={name}:"),
               what="the pane printed its lines")


def test_replies_equal_a_process_and_forged_lines_stay_text(tmux: Tmux) -> None:
    printing(tmux, "s", FORGERY)
    assert tmux.capture("s") == process_run(tmux, "capture-pane", "-p", "-t", "=s:")
    snap = tmux.snapshot("s")
    assert snap.text.splitlines()[: len(FORGERY)] == FORGERY and snap.info.current_command == "cat"
    snap2, options = tmux.snapshot_with_options("s")
    assert snap2.text == snap.text and options == {}
    assert client_of(tmux) is not None and client_of(tmux).alive()  # type: ignore[union-attr]
    assert tmux.list_sessions() == ["s"] and tmux.has_session("s") and not tmux.has_session("s2")


def test_hostile_arguments_arrive_verbatim(tmux: Tmux, tmp_path: Path) -> None:
    tmux.new_session("s", width=80, height=10)
    values = ["it's", "a;", ";", "\\", "\\;", '"q"', "$HOME", "~", "#{pane_pid}", "#(touch pwned)", "{", "}",
              "%begin 1 2 1", "é ünï", "x" * 5000, "' ; kill-server ; '", "a\tb", "\x1b[1m\x7f\x01", " ; ",
              "-t", ""]
    for i, value in enumerate(values):
        tmux.set_user_options("s", {f"@aq_v{i}": value})
        assert process_run(tmux, "show-options", "-v", "-t", "=s:", f"@aq_v{i}") == value + "\n", value
    out = tmp_path / "argv"
    tmux.respawn("s", [sys.executable, "-c", "import sys, os; open(sys.argv[1], 'w').write(repr(sys.argv[2:]) + "
                       "os.getcwd() + os.environ['V'])", str(out), *values[:14]], cwd=tmp_path, env={"V": values[0]})
    wait_until(out.exists, what="the respawned program wrote its argv")
    wait_until(lambda: out.read_text().endswith("it's"), what="its whole output")
    assert out.read_text() == repr(values[:14]) + str(tmp_path) + "it's"
    assert not (tmp_path / "pwned").exists() and tmux.has_session("s")


def test_errors_are_the_processes_and_a_chain_stops_at_the_first(tmux: Tmux) -> None:
    tmux.new_session("s", width=80, height=10)
    with pytest.raises(TmuxError, match="can't find"):
        tmux.capture("nope")
    with pytest.raises(TmuxError, match="can't find"):
        tmux.run("set-option", "-q", "-t", "=s:", "@aq_a", "1", tmux_sep(),
                 "capture-pane", "-p", "-t", "=nope:", tmux_sep(),
                 "set-option", "-q", "-t", "=s:", "@aq_b", "1")
    assert tmux.user_options("s") == {"@aq_a": "1"}  # the command after the failing one never ran
    assert client_of(tmux) is not None and client_of(tmux).alive()  # type: ignore[union-attr]  # still in step


def tmux_sep() -> object:
    from dispatcher.agent.tmux import SEP

    return SEP


def test_the_attached_session_killed_or_the_server_restarted(tmux: Tmux) -> None:
    tmux.new_session("a", width=80, height=10)
    tmux.new_session("b", width=80, height=10)
    tmux.capture("a")  # the client attaches to a
    first = client_of(tmux)
    assert first is not None
    subprocess.run(["tmux", "-L", tmux.socket_name, "kill-session", "-t", "=a"], check=True, timeout=10)
    wait_until(lambda: not first.alive(), what="the control client left with its session")
    assert tmux.capture("b") == process_run(tmux, "capture-pane", "-p", "-t", "=b:")
    assert client_of(tmux) is not first and tmux.list_sessions() == ["b"]
    tmux.kill_server()
    assert tmux.list_sessions() == [] and not tmux.has_session("b")
    tmux.new_session("c", width=80, height=10)
    assert tmux.list_sessions() == ["c"] and tmux.has_session("c")


def test_threads_share_one_client_in_step(tmux: Tmux) -> None:
    for name in ("a", "b", "c"):
        printing(tmux, name, [f"only {name}", *FORGERY])
    errors: list[str] = []

    def look(name: str) -> None:
        for _ in range(60):
            text = tmux.capture(name)
            if f"only {name}" not in text or any(f"only {o}" in text for o in "abc" if o != name):
                errors.append(f"{name} got {text[:30]!r}")

    threads = [threading.Thread(target=look, args=(n,)) for n in "abc" for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []


def test_a_forked_child_never_uses_the_parents_client(tmux: Tmux) -> None:
    printing(tmux, "s", ["parent and child"])
    tmux.capture("s")
    parent = client_of(tmux)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own client (or a process), the parent's stays untouched
        try:
            ok = "parent and child" in tmux.capture("s") and client_of(tmux) is not parent
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.waitpid(pid, 0)
    assert client_of(tmux) is parent and parent is not None and parent.alive()
    assert "parent and child" in tmux.capture("s")


@pytest.mark.parametrize("value", [None, "0", "yes"])
def test_turned_off_every_call_is_a_process(tmux: Tmux, monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    """Off unless AQ_TMUX_CONTROL=1 (tmux 3.3a's server can crash when control clients start concurrently)."""
    if value is None:
        monkeypatch.delenv("AQ_TMUX_CONTROL")
    else:
        monkeypatch.setenv("AQ_TMUX_CONTROL", value)
    assert not control_enabled("tmux")
    tmux.new_session("s", width=80, height=10)
    assert tmux.capture("s") == process_run(tmux, "capture-pane", "-p", "-t", "=s:")
    assert client_of(tmux) is None


def test_a_call_racing_the_attached_sessions_death_runs_once(tmux: Tmux) -> None:
    """The client still looks alive when its session was just killed by another process (here: its stub is
    stopped for a moment, so it acts on tmux's exit late). tmux reads no more lines from an exiting client, so a
    command whose block never began did not run: it goes through a process, once, harmless twice or not."""
    tmux.new_session("b", width=200, height=10, command=["cat"])
    tmux.new_session("a", width=80, height=10)
    tmux.capture("a")  # the client attaches to a
    client = client_of(tmux)
    assert client is not None
    os.kill(client.proc.pid, signal.SIGSTOP)
    resume = threading.Timer(0.3, os.kill, (client.proc.pid, signal.SIGCONT))  # then it says %exit and exits
    try:
        subprocess.run(["tmux", "-L", tmux.socket_name, "kill-session", "-t", "=a"], check=True, timeout=10)
        assert client.alive()
        resume.start()
        tmux.send_literal("b", "once")
    finally:
        resume.join()
    wait_until(lambda: "once" in tmux.capture("b"), what="the text typed")
    assert tmux.capture("b").count("once") == 1 and client_of(tmux) is not client


def test_the_first_call_attaches_whatever_it_targets(tmux: Tmux) -> None:
    assert not tmux.has_session("x") and client_of(tmux) is None  # no server: processes, none started
    tmux.new_session("s", width=80, height=10)
    assert tmux.list_sessions() == ["s"]  # no target: attached to a session of the server all the same
    assert client_of(tmux) is not None
    tmux.kill_server()
    tmux.new_session("t", width=80, height=10)
    # The named session is missing: attached to another (once the last client's leaving has settled).
    wait_until(lambda: not tmux.has_session("missing") and client_of(tmux) is not None, what="a client")
    client = client_of(tmux)
    assert client is not None and client.alive(), (client.proc.poll(), client._closed, client.session)


def test_killing_another_session_keeps_the_client(tmux: Tmux) -> None:
    tmux.new_session("a", width=80, height=10)
    tmux.new_session("b", width=80, height=10)
    tmux.capture("a")
    client = client_of(tmux)
    tmux.kill_session("b")
    assert client_of(tmux) is client and client is not None and client.alive()
    tmux.kill_session("a")  # its own session: dropped first
    assert client_of(tmux) is None or client_of(tmux) is not client


def test_an_argument_utf8_cannot_carry_goes_through_a_process(tmux: Tmux) -> None:
    tmux.new_session("s", width=80, height=10)
    value = "a\udcffb"  # a non-UTF-8 byte as os.fsdecode gives it (a hostile path)
    tmux.set_user_options("s", {"@aq_s": value})
    assert "@aq_s" in tmux.user_options("s")


def test_a_chain_runs_as_one_command_list(tmux: Tmux, tmp_path: Path) -> None:
    """respawn-pane then pipe-pane in one call: the new program's first bytes reach the pipe (no other work of
    the server, such as reading the new pane's output, runs between the commands of one call)."""
    tmux.new_session("s", width=80, height=10)
    for i in range(10):
        out = tmp_path / f"out{i}"
        tmux.respawn("s", ["printf", f"first{i}"], cwd=tmp_path, pipe_to=out)
        wait_until(lambda: tmux.pane_info("s").dead, what="the program exited")
        wait_until(lambda: out.exists() and out.read_text() == f"first{i}", timeout=3,
                   what=f"its output piped from the first byte ({out.read_text() if out.exists() else None!r})")


def test_literal_text_typed_through_the_client_arrives_verbatim(tmux: Tmux, tmp_path: Path) -> None:
    out = tmp_path / "typed"
    tmux.new_session("s", width=200, height=10, command=["sh", "-c", f"exec cat > {out}"])
    texts = ["it's", "a;", ";", "\\", "\\;", '"q"', "$HOME", "~", "#{pane_pid}", "#(touch pwned)", "{", "}",
             "%begin 1 2 1", "é ünï", "-t", "' ; kill-server ; '"]
    for text in texts:
        tmux.send_literal("s", text)
        tmux.send_keys("s", "Enter")
    wait_until(lambda: out.exists() and out.read_text().count("\n") == len(texts), what="every line typed")
    assert out.read_text().splitlines() == texts
    assert client_of(tmux) is not None and not (tmp_path / "pwned").exists()


def test_a_client_closed_under_a_reading_thread(tmux: Tmux) -> None:
    """Another thread closes the client (kill-server does) while calls read it: each call answers right,
    through the client or a process; none reads a closed or reused descriptor."""
    printing(tmux, "s", ["steady", *FORGERY])
    errors: list[str] = []
    stop = threading.Event()

    def look() -> None:
        while not stop.is_set():
            try:
                text = tmux.capture("s")
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(repr(exc))
                return
            if not text.startswith("steady\n"):
                errors.append(f"got {text[:30]!r}")

    readers = [threading.Thread(target=look) for _ in range(3)]
    for t in readers:
        t.start()
    for _ in range(6):
        tmux_control.REGISTRY.drop(tmux.binary, tmux.socket_name)
        tmux.capture("s")
        time.sleep(tmux_control._SETTLE_S + 0.05)  # the next call starts a new client
    stop.set()
    for t in readers:
        t.join(30)
    assert errors == []
