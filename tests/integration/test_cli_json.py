"""`--json` on the runtime commands (events, pool list) and the documented shell completion, for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
import yaml
from click.testing import CliRunner

from dispatcher.agent.tmux import Tmux
from dispatcher.cli.main import cli
from dispatcher.core.config import Settings
from dispatcher.store import events


@pytest.fixture
def config(settings: Settings, tmp_path: Path) -> Path:
    path = tmp_path / "dispatcher.yaml"
    path.write_text(yaml.safe_dump({"projects_dir": str(settings.projects_dir), "redis_url": settings.redis_url,
                                    "tmux": {"socket_name": settings.tmux.socket_name}}), encoding="utf-8")
    return path


def test_events_json(config: Path, sys_redis: redis.Redis[str]) -> None:
    events.emit(sys_redis, "failed", task="web:T1", session="ccl-auto-0", detail="idle, not done")
    out = CliRunner().invoke(cli, ["--config", str(config), "events", "--json"])
    assert out.exit_code == 0, out.output
    rows = [json.loads(x) for x in out.output.splitlines()]
    assert rows[-1]["kind"] == "failed" and rows[-1]["task"] == "web:T1" and rows[-1]["detail"] == "idle, not done"


def test_pool_list_json(config: Path, tmux_pool: Tmux) -> None:
    out = CliRunner().invoke(cli, ["--config", str(config), "pool", "list", "--json"])
    rows = json.loads(out.output)
    assert [r["session"] for r in rows] == ["ccl-auto-0", "ccl-auto-1", "ccl-auto-2"] and all(r["exists"] for r in rows)


def test_bash_completion_as_documented() -> None:
    env = {**os.environ, "_DISPATCHER_COMPLETE": "bash_source"}
    script = subprocess.run([sys.executable, "-m", "dispatcher"], env=env, capture_output=True, text=True,
                            timeout=60).stdout
    assert "complete" in script and "_DISPATCHER_COMPLETE" in script
    words = subprocess.run([sys.executable, "-m", "dispatcher"], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "_DISPATCHER_COMPLETE": "bash_complete", "COMP_WORDS": "dispatcher do",
                                "COMP_CWORD": "1"}).stdout
    assert "doctor" in words
