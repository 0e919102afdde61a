"""`dispatcher up`: Flower's generated password (once, 0600) and Redis URLs shown without their password."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from dispatcher.core import defaults as d
from dispatcher.core.config import FlowerSettings, Settings
from dispatcher.flows.up import children, flower_credentials
from dispatcher.store.redis_conn import redacted


def test_flower_password_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    s = Settings(projects_dir=tmp_path, state_dir=tmp_path / "state")

    first, path = flower_credentials(s)
    assert path == tmp_path / "state" / d.FLOWER_AUTH_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    again, _ = flower_credentials(s)

    assert again == first and first.startswith("admin:") and len(first.partition(":")[2]) >= 16
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    flower = [k for k in children(s, flower=True, loglevel="info", workers=1, flower_auth=first) if k.name == "flower"]
    assert flower[0].env["FLOWER_BASIC_AUTH"] == first and first not in " ".join(flower[0].argv)


def test_a_chosen_flower_password_wins_and_nothing_is_written(tmp_path: Path) -> None:
    s = Settings(projects_dir=tmp_path, state_dir=tmp_path / "state",
                 flower=FlowerSettings(basic_auth="me:mine"))

    assert flower_credentials(s) == ("me:mine", None)
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("url,shown", [
    ("redis://agent:s3cret@h:1/0", "redis://agent:***@h:1/0"),
    ("redis://:s3cret@h/0", "redis://:***@h/0"),
    ("rediss://u:p%40ss@h:6379/2", "rediss://u:***@h:6379/2"),
    ("unix:///run/r.sock?db=0&password=s3cret", "unix:///run/r.sock?db=0&password=***"),
    ("redis://h:6379/0", "redis://h:6379/0"),
])
def test_redis_urls_are_shown_without_their_password(url: str, shown: str) -> None:
    assert redacted(url) == shown
