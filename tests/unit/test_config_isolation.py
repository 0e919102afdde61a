"""Defaults never shared between two deployments on one machine (resume ids live under state_dir)."""

from __future__ import annotations

from pathlib import Path

from dispatcher.cli.examples import write_example
from dispatcher.core import defaults as d
from dispatcher.core.config import AgentSettings, Settings
from dispatcher.store.config_file import load_config


def test_default_resume_dir_is_under_state_dir(tmp_path: Path) -> None:
    one, two = tmp_path / "one" / d.CONFIG_FILE, tmp_path / "two" / d.CONFIG_FILE
    for path in (one, two):
        path.parent.mkdir()
        path.write_text("state_dir: st\n", encoding="utf-8")

    a, b = load_config(one, env={}), load_config(two, env={})

    assert a.agent.resume_dir == a.state_dir / d.RESUME_DIR and a.state_dir == one.parent.resolve() / "st"
    assert a.agent.resume_dir != b.agent.resume_dir


def test_default_resume_dir_follows_an_env_state_dir(tmp_path: Path) -> None:
    path = tmp_path / d.CONFIG_FILE
    path.write_text("", encoding="utf-8")

    s = load_config(path, env={"AQ_STATE_DIR": str(tmp_path / "elsewhere")})

    assert s.agent.resume_dir == tmp_path / "elsewhere" / d.RESUME_DIR


def test_the_reference_layout_is_still_available(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = tmp_path / d.CONFIG_FILE
    path.write_text("agent: {resume_dir: ~/.claude-context}\n", encoding="utf-8")

    assert load_config(path, env={}).agent.resume_dir == tmp_path / "home" / ".claude-context"


def test_settings_built_in_code_default_under_their_state_dir(tmp_path: Path) -> None:
    s = Settings(projects_dir=tmp_path, state_dir=tmp_path / "st", agent=AgentSettings(command="x {model}"))

    assert s.agent.resume_dir == tmp_path / "st" / d.RESUME_DIR and s.agent.command == "x {model}"
    kept = Settings(projects_dir=tmp_path, agent=AgentSettings(resume_dir=tmp_path / "mine"))
    assert kept.agent.resume_dir == tmp_path / "mine"


def test_init_writes_no_shared_resume_dir(tmp_path: Path) -> None:
    write_example(tmp_path)

    s = load_config(tmp_path / d.CONFIG_FILE, env={})

    assert s.agent.resume_dir == tmp_path.resolve() / ".state" / d.RESUME_DIR
