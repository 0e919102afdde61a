"""The pool pause and project holds on real Redis: causes, the rate-limit backoff, and the operator's
``dispatcher pause`` / ``dispatcher resume`` (no Redis editing by hand)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from system_fixtures import Clock

from dispatcher.agent.tmux import Tmux
from dispatcher.cli.main import cli
from dispatcher.core import limits
from dispatcher.core.config import LimitSettings, Settings
from dispatcher.flows.dispatch import Dispatcher
from dispatcher.flows.ports import Ports
from dispatcher.store import pause

RATE = limits.classify("API Error: Request rejected (429) · Slow down")
OVER = limits.classify("API Error: 529 Overloaded.")
LIMITS = LimitSettings(rate_limit_pause=60, rate_limit_max_pause=200)


def test_rate_limits_back_off_doubling_to_the_cap_and_start_over_after_a_finish(sys_redis: redis.Redis[str]) -> None:
    assert RATE is not None and OVER is not None
    now = 1_000_000.0
    waits = []
    for limit in (RATE, OVER, RATE, RATE, RATE):
        held = pause.for_limit(sys_redis, limit, now, LIMITS)
        waits.append(held.until - now)
        assert held.cause == limit.kind
        # The same burst seen by another session while paused: no extra step of backoff.
        assert pause.for_limit(sys_redis, RATE, now + 1, LIMITS) == held
        now = held.until + 1
    assert waits == [60, 120, 200, 200, 200]
    assert pause.backoff_step(sys_redis) == 5  # one step per limit after the last pause ended
    pause.reset_backoff(sys_redis)
    assert pause.backoff_step(sys_redis) == 0
    assert pause.for_limit(sys_redis, RATE, now, LIMITS).until - now == 60


def test_a_wait_the_api_names_is_used_and_a_limit_never_shortens_a_longer_pause(
        sys_redis: redis.Redis[str]) -> None:
    now = 1_000_000.0
    told = limits.classify("API Error: Request rejected (429) · retry after 15 seconds")
    assert told is not None and pause.for_limit(sys_redis, told, now, LIMITS).until == now + 15
    assert pause.backoff_step(sys_redis) == 0  # the API said how long: no backoff step
    pause.pause(sys_redis, now + 5000, "", pause.OPERATOR)
    assert RATE is not None
    kept = pause.for_limit(sys_redis, RATE, now + 20, LIMITS)
    assert kept.cause == pause.OPERATOR and kept.until == now + 5000


def test_a_usage_limit_keeps_its_reset_time(sys_redis: redis.Redis[str]) -> None:
    usage = limits.classify("You've hit your limit · resets 2pm (UTC)")
    assert usage is not None
    now = 1_000_000.0  # 1970-01-12 13:46:40 UTC
    held = pause.for_limit(sys_redis, usage, now, LIMITS)
    assert held.cause == "usage_limit" and time.gmtime(held.until)[3:5] == (14, 0)
    assert held.describe().startswith("usage limit (resets 2pm (UTC)) until ")


def test_describe_says_what_paused_the_pool() -> None:
    at = 2_000_000_000.0
    assert pause.Pause(at, "", pause.OPERATOR).describe() == f"paused by operator until {time.ctime(at)}"
    assert pause.Pause(math.inf, "upgrade", pause.OPERATOR).describe() == \
        "paused by operator until `dispatcher resume`: upgrade"
    assert RATE is not None
    assert pause.Pause(at, RATE.describe(), RATE.kind).describe() == \
        f"API rate limit (429: Slow down) until {time.ctime(at)}"
    assert pause.Pause(at, "agent command 'claude' not found on PATH", pause.AGENT_MISSING).describe() \
        .startswith("agent command 'claude' not found")


@pytest.mark.parametrize("text,expected", [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400)])
def test_until_durations(text: str, expected: int) -> None:
    assert pause.parse_until(text, 1000.0) == 1000.0 + expected


@pytest.mark.parametrize("text", ["soon", "25:00", "2001-01-01T00:00", "-5m", "5 weeks"])
def test_until_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(ValueError):
        pause.parse_until(text, time.time())


def test_until_a_clock_time_is_the_next_one() -> None:
    now = time.time()
    at = pause.parse_until("03:15", now)
    assert now < at <= now + 86400 and time.localtime(at)[3:5] == (3, 15)


@pytest.fixture
def config(settings: Settings, tmp_path: Path) -> Path:
    path = tmp_path / "dispatcher.yaml"
    path.write_text(f"projects_dir: {settings.projects_dir}\npool: {{max: 3}}\n"
                    f"tmux: {{socket_name: {settings.tmux.socket_name}}}\n", encoding="utf-8")
    return path


def test_operator_pause_and_resume_from_the_cli(config: Path, settings: Settings, sys_redis: redis.Redis[str],
                                                tmux_pool: Tmux, clock: Clock) -> None:
    runner = CliRunner()
    d = Dispatcher(Ports(settings, sys_redis, tmux_pool, lambda spec: None, clock=clock))

    out = runner.invoke(cli, ["--config", str(config), "pause", "--until", "2h", "--reason", "API maintenance"])
    assert out.exit_code == 0, out.output
    assert "paused by operator until" in out.output and "API maintenance" in out.output
    outcome = d.assign_next("ccl-auto-0")
    assert outcome.status == "paused" and outcome.detail.startswith("paused by operator until")
    status = runner.invoke(cli, ["--config", str(config), "status"])
    assert "POOL PAUSED: paused by operator until" in status.output
    data = json.loads(runner.invoke(cli, ["--config", str(config), "status", "--json"]).output)
    assert data["paused"] and data["pause_cause"] == "operator" and data["paused_until"] > time.time() + 7000

    pause.hold(sys_redis, "web", "folder not trusted", time.time() + 600)
    out = runner.invoke(cli, ["--config", str(config), "resume"])
    assert out.exit_code == 0 and "holds lifted: web" in out.output
    assert pause.current(sys_redis, time.time()) is None and pause.holds(sys_redis, time.time()) == {}
    assert d.assign_next("ccl-auto-0").status == "no-task"

    out = runner.invoke(cli, ["--config", str(config), "pause"])  # open-ended
    assert "until `dispatcher resume`" in out.output
    data = json.loads(runner.invoke(cli, ["--config", str(config), "status", "--json"]).output)
    assert data["paused"] and data["paused_until"] is None
    bad = runner.invoke(cli, ["--config", str(config), "pause", "--until", "someday"])
    assert bad.exit_code != 0 and "--until" in bad.output


def test_stored_shows_a_pause_whatever_its_age_current_only_one_in_force(sys_redis: redis.Redis[str]) -> None:
    assert pause.stored(sys_redis) is None and pause.stored(sys_redis, "work") is None
    pause.pause(sys_redis, 1_000.0, "lunch", pause.OPERATOR, account="work")
    assert pause.stored(sys_redis) is None  # per account
    assert pause.stored(sys_redis, "work") == pause.Pause(1_000.0, "lunch", pause.OPERATOR)
    assert pause.current(sys_redis, 999.0, "work") is not None and pause.current(sys_redis, 1_000.0, "work") is None
    assert pause.resume(sys_redis, "work")[0] == pause.Pause(1_000.0, "lunch", pause.OPERATOR)
    assert pause.stored(sys_redis, "work") is None
