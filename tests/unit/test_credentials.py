"""Credentials of the web views: generated once, private, reused; configured ones win; headers checked exactly."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from dispatcher.core.errors import ConfigError
from dispatcher.store import credentials


def test_generated_once_private_and_reused(tmp_path: Path) -> None:
    user, password = credentials.load_or_create(tmp_path / "state")
    target = tmp_path / "state" / "web-auth"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert credentials.load_or_create(tmp_path / "state") == (user, password) and len(password) >= 20
    os.chmod(target, 0o644)
    assert credentials.load_or_create(tmp_path / "state") == (user, password)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600


def test_configured_wins_and_is_validated(tmp_path: Path) -> None:
    assert credentials.load_or_create(tmp_path, "ops:pw:with:colons") == ("ops", "pw:with:colons")
    assert not (tmp_path / "web-auth").exists()
    for bad in ("nocolon", ":pw", "user:"):
        with pytest.raises(ConfigError):
            credentials.load_or_create(tmp_path, bad)


def test_a_symlinked_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").write_text("a:b\n")
    (tmp_path / "web-auth").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError):
        credentials.load_or_create(tmp_path)


def test_check_header() -> None:
    good = "Basic " + base64.b64encode(b"u:p w").decode()
    assert credentials.check_header(good, "u", "p w")
    for bad in (None, "", "Basic", "basic " + good[6:], "Basic " + base64.b64encode(b"u:p").decode(),
                "Basic " + base64.b64encode(b"up w").decode(), "Basic ===",
                "Basic " + base64.b64encode(b"\xff:\xfe").decode()):
        assert not credentials.check_header(bad, "u", "p w")
