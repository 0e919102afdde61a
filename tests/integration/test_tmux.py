"""The tmux adapter and the pool against a real tmux server on a private socket."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest_driver import wait_until

from dispatcher.agent import pool
from dispatcher.agent.tmux import Tmux
from dispatcher.core.config import PoolSettings
from dispatcher.core.errors import SessionError, TmuxError

CAT = ["cat"]


def test_exact_targets_never_prefix_match(tmux: Tmux) -> None:
    tmux.new_session("ccl-auto-10", width=100, height=20, command=CAT)
    assert not tmux.has_session("ccl-auto-1")
    with pytest.raises(TmuxError):
        tmux.send_literal("ccl-auto-1", "x")
    with pytest.raises(TmuxError):
        tmux.capture("ccl-auto-1")
    with pytest.raises(TmuxError):
        tmux.kill_session("ccl-auto-1")
    tmux.new_session("ccl-auto-1", width=100, height=20, command=CAT)
    tmux.send_literal("ccl-auto-1", "only-one")
    wait_until(lambda: "only-one" in tmux.capture("ccl-auto-1"), what="text in ccl-auto-1")
    assert "only-one" not in tmux.capture("ccl-auto-10")
    tmux.kill_session("ccl-auto-1")
    assert tmux.list_sessions() == ["ccl-auto-10"]


def test_literal_text_and_trailing_semicolon(tmux: Tmux) -> None:
    # Echo off: with it, the tty's echo of the next line can land before cat's copy of the previous one.
    tmux.new_session("s", width=120, height=20, command=["sh", "-c", "stty -echo && echo READY && exec cat"])
    wait_until(lambda: "READY" in tmux.capture("s"), what="cat ready with echo off")
    texts = ["C-c", "Enter", "echo hi;", ";", "a\\;"]
    for text in texts:
        tmux.send_literal("s", text)
        tmux.send_keys("s", "Enter")
    lines = wait_until(lambda: (rows := [x for x in tmux.capture("s").splitlines() if x])[-1:] == [texts[-1]] and rows,
                       what="all lines")
    assert lines == ["READY", *texts]  # cat's output only: each text arrived literally, as one line
    assert tmux.pane_info("s").dead is False


def test_send_keys_refuses_text(tmux: Tmux) -> None:
    tmux.new_session("s", width=100, height=20, command=CAT)
    with pytest.raises(TmuxError):
        tmux.send_keys("s", "echo hi;")


def test_paste_is_bracketed_and_buffer_removed(tmux: Tmux, tmp_path: Path) -> None:
    out = tmp_path / "raw.bin"
    # A raw-mode reader records exactly the bytes the pane receives.
    prog = ("import os,sys,tty;tty.setraw(0);os.write(1,b'\\x1b[?2004hREADY\\r\\n');d=b''\n"
            "while b'\\x1b[201~' not in d: d+=os.read(0,4096)\n"
            f"open({str(out)!r},'wb').write(d)")
    tmux.new_session("s", width=100, height=20, command=[sys.executable, "-c", prog])
    wait_until(lambda: "READY" in tmux.capture("s"), what="reader ready")
    tmux.paste("s", "line1\nC-c;\n$(x)")
    data = wait_until(lambda: out.exists() and out.read_bytes(), what="pasted bytes")
    assert data == b"\x1b[200~line1\rC-c;\r$(x)\x1b[201~"
    assert tmux.run("list-buffers", "-F", "#{buffer_name}").strip() == ""


HOSTILE = ["with space", "quo'te\"d", "$(touch pwned)", "semi;colon;", "#(touch pwned)#{session_name}", "back\\slash"]


@pytest.mark.parametrize("name", HOSTILE)
def test_respawn_hostile_dir_runs_nothing(tmux: Tmux, tmp_path: Path, name: str) -> None:
    work = tmp_path / "w"
    work.mkdir()
    target = work / name
    target.mkdir()
    out = tmp_path / "cwd.txt"
    tmux.new_session("s", width=100, height=20, cwd=work)
    prog = f"import os; open({str(out)!r},'w').write(os.getcwd() + '|' + os.environ['V'])"
    tmux.respawn("s", [sys.executable, "-c", prog], cwd=target, env={"V": name})
    wait_until(lambda: tmux.pane_info("s").dead, what="program exit")
    assert out.read_text() == f"{target}|{name}"
    assert sorted(p.name for p in work.iterdir()) == [name]
    assert not Path("pwned").exists() and not (tmp_path / "pwned").exists()


def test_respawn_sets_user_options_first_in_the_same_call(tmux: Tmux, tmp_path: Path) -> None:
    tmux.new_session("s", width=100, height=20, cwd=tmp_path)
    hostile = "x; kill-server ;#{pane_pid}#(touch pwned);"
    tmux.respawn("s", [sys.executable, "-c", "pass"], cwd=tmp_path, options={"@aq_a": hostile, "@aq_b": ""})
    assert tmux.user_options("s")["@aq_a"] == hostile
    assert not (tmp_path / "pwned").exists() and tmux.has_session("s")
    with pytest.raises(TmuxError):
        tmux.respawn("s", ["true"], cwd=tmp_path, options={"aq_no_at": "v"})


def test_single_word_command_is_not_shell_parsed(tmux: Tmux, tmp_path: Path) -> None:
    tmux.new_session("s", width=100, height=20, cwd=tmp_path)
    tmux.respawn("s", ["true; touch pwned"], cwd=tmp_path)
    wait_until(lambda: tmux.pane_info("s").dead, what="exit")
    assert not (tmp_path / "pwned").exists()


def test_dead_pane_keeps_last_screen(tmux: Tmux) -> None:
    tmux.new_session("s", width=100, height=20, command=[sys.executable, "-c", "print('last words')"])
    wait_until(lambda: tmux.pane_info("s").dead, what="exit")
    snap = tmux.snapshot("s")
    # tmux 3.3a sometimes never learns the exit status of a very short-lived process.
    assert snap.info.dead and snap.info.dead_status in (0, None)
    assert "last words" in tmux.capture("s", history=50)


def test_errors_carry_stderr(tmux: Tmux) -> None:
    with pytest.raises(TmuxError, match="can't find|no server|error connecting"):
        tmux.capture("nope")
    assert tmux.list_sessions() == []


def test_pool_create_list_kill_leaves_others_alone(tmux: Tmux) -> None:
    settings = PoolSettings(prefix="ccl-auto-", start_index=1, max=2, width=120, height=30)
    tmux.new_session("ccl-auto-10", width=80, height=20)
    tmux.new_session("operator", width=80, height=20)
    assert pool.create(tmux, settings) == ["ccl-auto-1", "ccl-auto-2"]
    assert pool.create(tmux, settings) == []
    info = tmux.pane_info("ccl-auto-1")
    assert (info.width, info.height) == (120, 30)
    rows = pool.status(tmux, settings)
    assert [r.name for r in rows] == ["ccl-auto-1", "ccl-auto-2"] and all(r.exists and not r.dead for r in rows)
    with pytest.raises(SessionError):
        pool.kill(tmux, settings, ["operator"])
    assert pool.kill(tmux, settings) == ["ccl-auto-1", "ccl-auto-2"]
    assert sorted(tmux.list_sessions()) == ["ccl-auto-10", "operator"]
    assert [r.exists for r in pool.status(tmux, settings)] == [False, False]


def test_kill_server_returns_only_when_a_new_server_can_start(tmux: Tmux) -> None:
    """`up` restarting right after tmux died: kill_server waits for the old server, new-session never meets it."""
    for _ in range(10):
        for i in range(3):
            tmux.new_session(f"s{i}", width=100, height=20)
        tmux.kill_server()
        assert tmux.list_sessions() == []
        tmux.new_session("s0", width=100, height=20)  # was: "server exited unexpectedly"
        tmux.kill_server()


def test_new_session_retries_while_a_killed_server_is_still_exiting(tmux: Tmux) -> None:
    """Killed by someone else (not our kill_server): the transient error is retried, bounded."""
    import subprocess

    for _ in range(10):
        for i in range(3):
            tmux.new_session(f"s{i}", width=100, height=20)
        subprocess.run(["tmux", "-L", tmux.socket_name, "kill-server"], check=True, capture_output=True)
        tmux.new_session("s0", width=100, height=20)
        assert tmux.list_sessions() == ["s0"]
        tmux.kill_server()


def test_user_options_are_set_and_read_on_the_exact_session_only(tmux: Tmux) -> None:
    tmux.new_session("ccl-auto-1", width=80, height=20, command=CAT)
    tmux.new_session("ccl-auto-10", width=80, height=20, command=CAT)
    values = {"@aq_a": "x y", "@aq_b": "", "@aq_c": "1.500", "@aq_d": "semi;", "@aq_e": "#{pane_pid}"}
    tmux.set_user_options("ccl-auto-1", values)
    assert tmux.user_options("ccl-auto-1") == values  # literal: no separator, no format expanded
    assert tmux.user_options("ccl-auto-10") == {}
    with pytest.raises(TmuxError):
        tmux.set_user_options("ccl-auto-1", {"remain-on-exit": "off"})  # user options only
    assert tmux.user_options("ccl-auto-2") == {}  # no such session: nothing set (tmux's -q hides the error)


def test_global_user_option_round_trip(tmux: Tmux) -> None:
    tmux.new_session("s", width=80, height=20, command=CAT)
    assert tmux.global_option("@aq_state_dir") == ""
    tmux.set_global_option("@aq_state_dir", "/srv/state dir")
    assert tmux.global_option("@aq_state_dir") == "/srv/state dir"
    with pytest.raises(TmuxError):
        tmux.set_global_option("default-shell", "/bin/sh")
