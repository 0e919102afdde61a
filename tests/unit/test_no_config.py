"""Without a config file nothing talks to a Redis nobody chose: commands refuse with the fix.

Run from a directory without dispatcher.yaml (and no DISPATCHER_CONFIG / REDIS_URL), the old
behaviour was to fall back to redis://127.0.0.1:6379/0 — another deployment, or nobody.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import dispatcher.cli.commands  # noqa: F401  (registers the runtime subcommands)
from dispatcher.cli.main import EXIT_CONFIG, cli
from dispatcher.core import defaults as d
from dispatcher.core.errors import ConfigError
from dispatcher.store.config_file import load_config
from dispatcher.store.redis_conn import configured_url

FIX = ("--config", d.CONFIG_ENV, "cd ")


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty directory, the current one, with no dispatcher.yaml in it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _env_without_config() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in ("DISPATCHER_CONFIG", "REDIS_URL", "AQ_PROJECTS_DIR", "AQ_STATE_DIR")}


@pytest.mark.parametrize("args", [["status"], ["status", "--json"], ["events"], ["retry", "web:T1"], ["watch"],
                                  ["scan"], ["up"], ["pool", "list"], ["pool", "kill"]])
def test_commands_that_act_on_a_deployment_refuse_without_a_config(elsewhere, args):
    result = CliRunner().invoke(cli, args, catch_exceptions=False)

    assert result.exit_code == EXIT_CONFIG, result.output
    for hint in FIX:
        assert hint in result.output
    assert str(elsewhere) in result.output


def test_up_without_a_config_points_at_init_even_with_redis_url(elsewhere, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")

    result = CliRunner().invoke(cli, ["up"], catch_exceptions=False)

    assert result.exit_code == EXIT_CONFIG and "dispatcher init" in result.output
    assert not (elsewhere / ".state").exists() and not (elsewhere / "projects").exists()


@pytest.mark.parametrize("args", [["--help"], ["status", "--help"], ["scan", "--dry-run"], ["graph"]])
def test_offline_commands_still_work_without_a_config(elsewhere, args):
    result = CliRunner().invoke(cli, args, catch_exceptions=False)

    assert result.exit_code == 0, result.output


def test_init_then_validate_without_a_config(elsewhere):
    runner = CliRunner()
    assert runner.invoke(cli, ["init", "here"]).exit_code == 0
    task = elsewhere / "here" / "projects" / "example" / d.QUEUE_DIR / d.INBOX / "SETUP-1.md"

    result = runner.invoke(cli, ["validate", str(task)], catch_exceptions=False)

    assert result.exit_code == 0 and "example:SETUP-1" in result.output


def test_no_redis_is_guessed_without_a_config(elsewhere):
    with pytest.raises(ConfigError) as info:
        configured_url(load_config())

    message = str(info.value)
    assert all(hint in message for hint in FIX) and "127.0.0.1:6379" not in message


def test_a_config_without_redis_url_and_no_running_up_names_the_fix(tmp_path):
    cfg = tmp_path / d.CONFIG_FILE
    cfg.write_text("state_dir: st\n", encoding="utf-8")

    with pytest.raises(ConfigError) as info:
        configured_url(load_config(cfg))

    message = str(info.value)
    assert str(cfg) in message and "dispatcher up" in message and "redis_url" in message


def test_a_config_finds_the_running_up_or_its_redis_url(tmp_path, monkeypatch):
    cfg = tmp_path / d.CONFIG_FILE
    cfg.write_text("state_dir: st\n", encoding="utf-8")
    (tmp_path / "st").mkdir()
    (tmp_path / "st" / "redis.url").write_text("unix:///x/redis.sock\n")

    assert configured_url(load_config(cfg)) == "unix:///x/redis.sock"
    monkeypatch.setenv("REDIS_URL", "redis://h:1/2")
    assert configured_url(load_config(cfg)) == "redis://h:1/2"


@pytest.mark.timeout(60)
def test_celery_call_without_a_config_refuses_instead_of_using_localhost(tmp_path):
    """`celery -A dispatcher call` from a directory without a config: no task id, the fix on stderr."""
    out = subprocess.run([sys.executable, "-m", "celery", "-A", "dispatcher", "call", "assign_next",
                          "--args", '["ccl-auto-0"]'], cwd=tmp_path, env=_env_without_config(),
                         capture_output=True, text=True, timeout=50)

    assert out.returncode != 0, out.stdout
    assert out.stdout.strip() == ""
    assert "config error" in out.stderr and "Traceback" not in out.stderr
    assert "cd " in out.stderr and f"{d.CONFIG_ENV}=" in out.stderr and str(tmp_path) in out.stderr
