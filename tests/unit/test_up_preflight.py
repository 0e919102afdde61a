"""`dispatcher up` refuses to start what would be unsafe or pointless, with a reason."""

from __future__ import annotations

from pathlib import Path

from dispatcher.core.config import FlowerSettings, Settings
from dispatcher.flows.up import preflight


def test_flower_exposed_without_auth_is_refused(tmp_path: Path) -> None:
    s = Settings(projects_dir=tmp_path, flower=FlowerSettings(address="0.0.0.0", port=5555))
    assert any("basic auth" in p for p in preflight(s, flower=True))
    assert preflight(s, flower=False) == []
    ok = Settings(projects_dir=tmp_path, flower=FlowerSettings(address="0.0.0.0", basic_auth="a:b"))
    assert preflight(ok, flower=True) == []


def test_loopback_flower_needs_no_auth(tmp_path: Path) -> None:
    assert preflight(Settings(projects_dir=tmp_path), flower=True) == []
