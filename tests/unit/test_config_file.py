"""Loading the config (store/config_file.py) around the pure validation (core/config.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from dispatcher.core.config import HostSettings, from_mapping, host_name_from
from dispatcher.store.config_file import default_host_name, load_config


def test_the_pure_validation_takes_the_environment_and_the_host_name_as_given(tmp_path: Path) -> None:
    s = from_mapping({"host": {"account": "a"}}, base=tmp_path, where="x.yaml", env={}, host_name="box-1")
    assert (s.host.name, s.host.account, s.redis_url) == ("box-1", "a", None)
    s = from_mapping({}, base=tmp_path, where="x.yaml", env={"AQ_HOST": "box-2", "REDIS_URL": "redis://r:1/0"},
                     host_name="box-1")
    assert (s.host.name, s.redis_url) == ("box-2", "redis://r:1/0")


def test_the_loader_names_this_machine_as_settings_built_in_code_do(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no dispatcher.yaml here
    assert default_host_name() == host_name_from(socket.gethostname())
    assert load_config(None, env={}).host.name == default_host_name() == HostSettings().name


def test_host_names_keep_only_safe_characters() -> None:
    assert host_name_from("build box.example.com") == "build-box"
    assert host_name_from(".") == "localhost"
