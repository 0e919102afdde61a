"""A calm `dispatcher up`: component logs in rotated files, one line per event without a TTY, a live view in one.

Run for real: `dispatcher up` with an embedded Redis and fake agents, once piped (no TTY) and once in a
real terminal (a tmux pane on a private socket, read back with capture-pane).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from system_fixtures import wait_for

from dispatcher.agent.tmux import Tmux
from dispatcher.core.taskfile import render_task
from dispatcher.flows import upview
from dispatcher.inbox import files as aq
from dispatcher.store.config_file import load_config
from dispatcher.testing import FAKE_AGENT_COMMAND

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _task(root: Path, project: str, task_id: str, body: str = "@fake: done", depends_on: tuple[str, ...] = ()) -> None:
    proj = aq.project(root / "projects", project)
    aq.ensure_dirs(proj)
    aq.write_task_atomically(proj, task_id, render_task(title=task_id, depends_on=depends_on,
                                                        body=f"Work on {task_id}.\n{body}"))


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], str]]:
    socket = f"aqview-{uuid.uuid4().hex[:10]}"
    cfg = {"projects_dir": "projects", "state_dir": "state", "scan_interval": 3, "monitor_interval": 1,
           "finish_grace": 2, "pool": {"max": 2, "cooldown": 1}, "tmux": {"socket_name": socket},
           "agent": {"command": FAKE_AGENT_COMMAND, "resume_dir": str(tmp_path / "resume"), "prompt_timeout": 30,
                     "env": {"FAKE_AGENT_BUSY_MS": "50"}}}
    (tmp_path / "dispatcher.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "AQ_PROJECTS_DIR", "AQ_STATE_DIR")}
    env["DISPATCHER_CONFIG"] = str(tmp_path / "dispatcher.yaml")
    yield tmp_path, env, socket
    Tmux(socket).kill_server()


def test_up_without_a_tty_prints_one_line_per_event_and_logs_to_files(
        fleet: tuple[Path, dict[str, str], str]) -> None:
    root, env, _ = fleet
    _task(root, "alpha", "A1")
    _task(root, "alpha", "A2", depends_on=("alpha:A1",))
    up = subprocess.Popen([sys.executable, "-m", "dispatcher", "up"], cwd=root, env=env, stdout=subprocess.PIPE,
                          stderr=open(root / "up.err", "wb"), start_new_session=True, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(up.stdout or []), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any(" finished " in x and "alpha:A2" in x for x in lines), timeout=180,
                 what=lambda: f"A2 finished in up's output: {lines[-20:]}; err {(root / 'up.err').read_text()[-800:]}")
        assert lines[0].startswith("logs: ") and "dispatcher logs -f worker-0" in lines[0]
        events = [x for x in lines[1:] if x[:4].isdigit()]  # "2026-…  kind  task  session  detail"
        kinds = [x.split()[2] for x in events]
        assert {"launched", "finished", "unblocked"} <= set(kinds), events
        # The components' chatter is in their files, not in front of the operator.
        assert not [x for x in lines if "celery" in x.lower() or "INFO" in x]
        logs = root / "state" / "logs"
        wait_for(lambda: "ready" in (logs / "worker-0.log").read_text(errors="replace"), timeout=30,
                 what="worker-0's banner in its log")
        assert {"worker-0.log", "beat.log", "watcher.log"} <= {p.name for p in logs.iterdir()}
        shown = subprocess.run([sys.executable, "-m", "dispatcher", "logs", "worker-0", "-n", "500"], cwd=root,
                               env=env, capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0 and "ready" in shown.stdout
        every = subprocess.run([sys.executable, "-m", "dispatcher", "logs"], cwd=root, env=env,
                               capture_output=True, text=True, timeout=60).stdout
        assert "==> beat <==" in every and "==> worker-0 <==" in every
        bad = subprocess.run([sys.executable, "-m", "dispatcher", "logs", "../../etc/passwd"], cwd=root, env=env,
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and "root:" not in bad.stdout
    finally:
        os.killpg(up.pid, signal.SIGINT)
        assert up.wait(timeout=60) == 0


def test_up_live_view_in_a_terminal_says_why_nothing_runs(fleet: tuple[Path, dict[str, str], str],
                                                          tmp_path: Path) -> None:
    root, env, socket = fleet
    cfg = yaml.safe_load((root / "dispatcher.yaml").read_text())
    cfg["agent"]["command"] = "claude-not-installed --model {model} {resume}"
    (root / "dispatcher.yaml").write_text(yaml.safe_dump(cfg))
    _task(root, "alpha", "SETUP-1")
    _task(root, "alpha", "FEAT-2", depends_on=("alpha:SETUP-1",))
    _task(root, "beta", "DOCS-1")
    term = Tmux(f"{socket}-term")
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items() if k in ("DISPATCHER_CONFIG", "PATH", "HOME"))
    cmd = f"cd {shlex.quote(str(root))} && env -i {exports} TERM=xterm-256color {sys.executable} -m dispatcher up"
    term.new_session("term", width=120, height=40, command=["sh", "-c", cmd + "; sleep 600"])
    try:
        def screen() -> str:
            return term.capture("term")

        wait_for(lambda: "POOL PAUSED" in screen() and "last events" in screen(), timeout=120,
                 what=lambda: f"the pause and its event on screen:\n{screen()}")
        text = screen()
        (tmp_path / "screen.txt").write_text(text)
        assert "'claude-not-installed' not found on PATH" in text
        assert "ccl-auto-0" in text and "ccl-auto-1" in text and "alpha" in text and "beta" in text
        assert "last events" in text and "paused" in text
        assert "INFO" not in text and "celery@" not in text
        if os.environ.get("AQ_UPDATE_SCREENSHOTS") == "1":
            _save_svg(term.run("capture-pane", "-p", "-e", "-t", "=term:"), DOCS / "up-view.svg")
        term.send_keys("term", "C-c")
        wait_for(lambda: not _up_running(root), timeout=60, what="up stopped after Ctrl-C")
        assert "Traceback" not in screen()
    finally:
        term.kill_server()


def _up_running(root: Path) -> bool:
    return (root / "state" / "redis.url").exists()


def _save_svg(ansi: str, path: Path) -> None:
    """The terminal as a picture (rich turns the captured ANSI text into SVG)."""
    from rich.console import Console
    from rich.text import Text

    console = Console(record=True, width=120, file=open(os.devnull, "w"), force_terminal=True)
    console.print(Text.from_ansi(ansi.rstrip()))
    console.save_svg(str(path), title="dispatcher up")


def test_rotate_copy_truncates_and_the_writer_goes_on(tmp_path: Path) -> None:
    log = tmp_path / "worker-0.log"
    with open(log, "ab") as writer:  # like a child's O_APPEND stdout
        writer.write(b"x" * 2000 + b"\n")
        writer.flush()
        assert upview.rotate(log, max_bytes=1000, backups=2)
        writer.write(b"after\n")
        writer.flush()
    assert log.read_bytes() == b"after\n" and (tmp_path / "worker-0.log.1").stat().st_size == 2001
    assert not upview.rotate(log, max_bytes=1000, backups=2)
    log.write_bytes(b"y" * 1500)
    assert upview.rotate(log, max_bytes=1000, backups=2)
    assert ((tmp_path / "worker-0.log.2").stat().st_size == 2001
            and (tmp_path / "worker-0.log.1").read_bytes()[:1] == b"y")


def test_log_names_are_validated(tmp_path: Path) -> None:
    settings = load_config(None, env={"AQ_STATE_DIR": str(tmp_path)})
    for bad in ("../x", "a/b", "", ".", "..", "x" * 65, "a\nb"):
        with pytest.raises(ValueError):
            upview.log_path(settings, bad)
    assert upview.log_path(settings, "worker-0") == tmp_path / "logs" / "worker-0.log"
