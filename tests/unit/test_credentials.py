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


def _race(state_dir: str, go, out) -> None:  # type: ignore[no-untyped-def]
    go.wait()
    try:
        out.put(("ok", credentials.load_or_create(Path(state_dir))))
    except Exception as exc:  # reported to the test, which fails on it
        out.put(("error", repr(exc)))


def test_processes_starting_at_once_all_get_the_one_generated_password(tmp_path: Path) -> None:
    """`up --web` starts the fleet page and Flower together: whoever loses the race to create the file must
    read a complete one, never an empty or half-written file (then a ConfigError, or a page with no password)."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    for round_no in range(12):
        state = tmp_path / f"state{round_no}"
        go, out = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_race, args=(str(state), go, out)) for _ in range(6)]
        for p in procs:
            p.start()
        go.set()
        results = [out.get(timeout=30) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        assert all(kind == "ok" for kind, _ in results), results
        assert len({tuple(value) for _, value in results}) == 1, results
        assert (state / "web-auth").read_text().strip() == ":".join(results[0][1])
