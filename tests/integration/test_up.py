"""`dispatcher up` as a user runs it: embedded Redis, 3 fake-agent sessions, 30 tasks, unattended.

Some tasks are chained, two fail (their dependent becomes stuck), one hits a usage limit and is
resumed. Everything that can finish does; `dispatcher status` shows it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from system_fixtures import wait_for

from dispatcher.agent.tmux import Tmux
from dispatcher.core.taskfile import render_task
from dispatcher.inbox import files as aq
from dispatcher.store import pause
from dispatcher.testing import FAKE_AGENT_COMMAND


def _task(root: Path, project: str, task_id: str, body: str, depends_on: tuple[str, ...] = (),
          priority: str = "default") -> None:
    proj = aq.project(root / "projects", project)
    aq.ensure_dirs(proj)
    aq.write_task_atomically(proj, task_id, render_task(title=task_id, priority=priority, depends_on=depends_on,
                                                        body=f"Work on {task_id}.\n{body}"))


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    socket = f"aqup-{uuid.uuid4().hex[:10]}"
    cfg = {
        "projects_dir": "projects", "state_dir": "state", "scan_interval": 3, "monitor_interval": 1,
        "finish_grace": 2, "pool": {"max": 3, "cooldown": 1}, "tmux": {"socket_name": socket},
        "agent": {"command": FAKE_AGENT_COMMAND, "resume_dir": str(tmp_path / "resume"), "prompt_timeout": 30,
                  "env": {"FAKE_AGENT_LOG": str(tmp_path / "agents.jsonl"), "FAKE_AGENT_BUSY_MS": "50"}},
    }
    (tmp_path / "dispatcher.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "AQ_PROJECTS_DIR", "AQ_STATE_DIR")}
    env["DISPATCHER_CONFIG"] = str(tmp_path / "dispatcher.yaml")
    yield tmp_path, env
    Tmux(socket).kill_server()


def test_up_runs_thirty_tasks_unattended(fleet: tuple[Path, dict[str, str]]) -> None:
    root, env = fleet
    for i in range(1, 11):
        _task(root, "alpha", f"A{i}", "@fake: done")
    for i in range(1, 5):
        _task(root, "beta", f"B{i}", "@fake: done", depends_on=(f"beta:B{i - 1}",) if i > 1 else ())
    for i in range(5, 10):
        _task(root, "beta", f"B{i}", "@fake: done", priority="low")
    for i in range(1, 8):
        _task(root, "gamma", f"G{i}", "@fake: done", priority="high")
    _task(root, "gamma", "GF1", "@fake: fail")
    _task(root, "gamma", "GF2", "@fake: fail")
    _task(root, "gamma", "GD", "@fake: done", depends_on=("gamma:GF1",))
    _task(root, "gamma", "LIM", "@fake: limit", priority="critical")

    up = subprocess.Popen([sys.executable, "-m", "dispatcher", "up"], cwd=root, env=env,
                          stdout=subprocess.DEVNULL, stderr=open(root / "up.log", "wb"), start_new_session=True)
    try:
        url_file = root / "state" / "redis.url"
        wait_for(url_file.exists, timeout=60, what="embedded Redis")
        r = redis.Redis.from_url(url_file.read_text().strip(), decode_responses=True)
        # The limit pauses the whole pool until "2pm (America/Toronto)": make that moment now.
        held = wait_for(lambda: pause.stored(r), timeout=90, what="the usage limit")
        pause.pause(r, time.time(), held.reason, held.cause)

        def done(project: str) -> set[str]:
            return {p.stem for p in (root / "projects" / project / ".agent-queue" / "done").glob("*.md")}

        expected = ({f"A{i}" for i in range(1, 11)}, {f"B{i}" for i in range(1, 10)},
                    {f"G{i}" for i in range(1, 8)} | {"LIM"})
        wait_for(lambda: (done("alpha"), done("beta"), done("gamma")) == expected, timeout=240,
                 what=lambda: f"all finishable tasks done; log tail {(root / 'up.log').read_text()[-1500:]}")
        gamma = root / "projects" / "gamma" / ".agent-queue" / "inbox"
        wait_for(lambda: (gamma / "GF1.md.failed").exists() and (gamma / "GF2.md.failed").exists(),
                 timeout=60, what="GF1, GF2 failed")
        assert (gamma / "GD.md.stuck").read_text().startswith("upstream failed: gamma:GF1")

        status = subprocess.run([sys.executable, "-m", "dispatcher", "status"], cwd=root, env=env,
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stderr
        (root / "status.txt").write_text(status.stdout)
        print("\n" + status.stdout)
        rows = {line.split()[0]: line.split()[1:] for line in status.stdout.splitlines() if line.split()
                and line.split()[0] in ("alpha", "beta", "gamma")}
        # pending blocked stuck invalid launching dispatched failed done
        assert rows["alpha"][-1] == "10" and rows["beta"][-1] == "9" and rows["gamma"][-1] == "8"
        assert rows["gamma"][2] == "1" and rows["gamma"][6] == "2"
        events = subprocess.run([sys.executable, "-m", "dispatcher", "events", "-n", "500"], cwd=root, env=env,
                                capture_output=True, text=True, timeout=60).stdout
        for kind in ("launched", "finished", "failed", "stuck", "limited", "resumed"):
            assert f" {kind} " in events, kind
        launched = [line.split()[3] for line in events.splitlines() if line.split()[2:3] == ["launched"]]
        assert len(launched) == len(set(launched)) == 30 - 1  # GD never ran; each other task launched once
    finally:
        os.killpg(up.pid, signal.SIGINT)
        assert up.wait(timeout=60) == 0
