"""``dispatcher doctor`` against real components: tmux, the fake agent, its config file, Redis, the hook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from dispatcher.core import keys
from dispatcher.flows import doctor
from dispatcher.store.config_file import load_config
from dispatcher.testing import FAKE_AGENT_COMMAND


def _setup(tmp_path: Path, redis_url: str, *, trust: bool = True, onboarding: bool = True,
           command: str = FAKE_AGENT_COMMAND) -> tuple[Path, dict[str, str]]:
    for name in ("web", "api"):
        (tmp_path / "projects" / name / ".agent-queue" / "inbox").mkdir(parents=True)
    claude_dir = tmp_path / "claude"
    claude_dir.mkdir()
    cfg_json: dict[str, Any] = {"hasCompletedOnboarding": onboarding, "projects": {}}
    if trust:
        cfg_json["projects"] = {str((tmp_path / "projects" / n).resolve()): {"hasTrustDialogAccepted": True}
                                for n in ("web", "api")}
    (claude_dir / ".claude.json").write_text(json.dumps(cfg_json), encoding="utf-8")
    cfg = {"projects_dir": "projects", "state_dir": "state", "redis_url": redis_url,
           "agent": {"command": command, "env": {"CLAUDE_CONFIG_DIR": str(claude_dir)}}}
    path = tmp_path / "dispatcher.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "AQ_PROJECTS_DIR", "AQ_STATE_DIR")}
    env.update({"DISPATCHER_CONFIG": str(path), "FLOWER_BASIC_AUTH": "ops:secret"})
    return path, env


def _doctor(tmp_path: Path, env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run([sys.executable, "-m", "dispatcher", "doctor", "--json"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    return proc.returncode, json.loads(proc.stdout)


def _by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


def test_all_pass_exit_zero(tmp_path: Path, sys_redis_url: str) -> None:
    _, env = _setup(tmp_path, sys_redis_url)
    code, report = _doctor(tmp_path, env)
    checks = _by_name(report)
    assert code == 0 and report["ok"], report
    assert checks["tmux"]["detail"].startswith("tmux ")
    assert checks["agent"]["status"] == "ok" and "2.1.197 (Claude Code)" in checks["agent"]["detail"]
    assert checks["onboarding"]["status"] == "ok"
    assert checks["trust web"]["status"] == checks["trust api"]["status"] == "ok"
    assert checks["redis"]["detail"].startswith("Redis ")
    assert checks["redis persistence"]["status"] in ("ok", "warn")
    assert checks["hook round trip"]["status"] == "ok"
    assert checks["web auth"]["status"] == "ok" and checks["clock"]["status"] == "ok"
    assert checks["disk state_dir"]["status"] == "ok"
    # The round trip cleans up after itself.
    r = redis.Redis.from_url(sys_redis_url, decode_responses=True)
    assert not [k for k in r.scan_iter("aq:hooks:doctor-*")]


def test_each_problem_fails_with_its_fix(tmp_path: Path, sys_redis_url: str) -> None:
    _, env = _setup(tmp_path, sys_redis_url, trust=False, onboarding=False, command="no-such-agent --model {model}")
    env.pop("FLOWER_BASIC_AUTH")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "web-auth").write_text("admin:pw\n")
    os.chmod(tmp_path / "state" / "web-auth", 0o644)
    code, report = _doctor(tmp_path, env)
    checks = _by_name(report)
    assert code == 1 and not report["ok"]
    assert checks["agent"]["status"] == "fail" and "npm install" in checks["agent"]["fix"]
    assert checks["onboarding"]["status"] == "fail" and "hasCompletedOnboarding" in checks["onboarding"]["fix"]
    web = str((tmp_path / "projects" / "web").resolve())
    assert checks["trust web"]["status"] == "fail" and web in checks["trust web"]["fix"]
    assert "hasTrustDialogAccepted" in checks["trust web"]["fix"]
    assert checks["web auth"]["status"] == "fail" and checks["web auth"]["fix"].startswith("chmod 600")
    human = subprocess.run([sys.executable, "-m", "dispatcher", "doctor"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert human.returncode == 1 and "fix: npm install" in human.stdout and "problem(s) to fix" in human.stdout


def test_unreachable_redis(tmp_path: Path) -> None:
    _, env = _setup(tmp_path, "redis://127.0.0.1:1/0")
    code, report = _doctor(tmp_path, env)
    checks = _by_name(report)
    assert code == 1 and checks["redis"]["status"] == "fail" and "REDIS_URL" in checks["redis"]["fix"]
    assert "hook round trip" not in checks


def test_hook_round_trip_fails_when_agents_cannot_reach_redis(sys_redis: redis.Redis[str]) -> None:
    check = doctor.check_hook(sys_redis, "redis://127.0.0.1:1/0")
    assert check.status == "fail" and "REDIS_URL" in check.fix


def test_host_heartbeats_and_skew(sys_redis: redis.Redis[str]) -> None:
    now = time.time()
    sys_redis.hset(keys.HOSTS, mapping={"alpha": json.dumps({"last_seen": now - 3}),
                                        "beta": json.dumps({"last_seen": now - 900}),
                                        "gamma": json.dumps({"last_seen": now, "skew_s": 42.0}),
                                        "delta": "not json"})
    checks = {c.name: c for c in doctor.check_hosts(sys_redis)}
    assert checks["clock"].status == "ok"
    assert checks["host alpha"].status == "ok"
    assert checks["host beta"].status == "fail" and "dispatcher up" in checks["host beta"].fix
    assert checks["host gamma"].status == "fail" and "time sync" in checks["host gamma"].fix
    assert checks["host delta"].status == "warn"
    skewed = {c.name: c for c in doctor.check_hosts(sys_redis, now=time.time() + 60)}
    assert skewed["clock"].status == "fail"


def test_low_disk_fails(tmp_path: Path, sys_redis_url: str) -> None:
    path, _ = _setup(tmp_path, sys_redis_url)
    settings = load_config(path, env={})
    checks = doctor.check_disk(settings, min_free=1 << 62)
    assert [c.status for c in checks] == ["fail", "fail"] and "free space" in checks[0].fix


@pytest.mark.parametrize("command", ["claude --model {model}", "/usr/bin/env LANG=C claude --model {model} {resume}",
                                     "python -m x.y --model {model}"])
def test_agent_argv(command: str) -> None:
    assert doctor.agent_argv(command)[-1] in ("claude", "x.y")
