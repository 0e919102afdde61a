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


# A fresh interpreter per racer (fork would copy the locks other tests' threads hold): it waits for the go
# file, then asks for the credentials at once with the others.
RACER = """
import json, os, sys, time
from pathlib import Path
from dispatcher.store import credentials
state, go = Path(sys.argv[1]), Path(sys.argv[2])
(go.parent / f"{go.name}.ready.{os.getpid()}").touch()
deadline = time.monotonic() + 60
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.001)
try:
    print(json.dumps(["ok", list(credentials.load_or_create(state))]))
except Exception as exc:
    print(json.dumps(["error", repr(exc)]))
"""


def test_processes_starting_at_once_all_get_the_one_generated_password(tmp_path: Path) -> None:
    """`up --web` starts the fleet page and Flower together: whoever loses the race to create the file must
    read a complete one, never an empty or half-written file (then a ConfigError, or a page with no password)."""
    import json
    import subprocess
    import sys
    import time

    for round_no in range(8):
        state, go = tmp_path / f"state{round_no}", tmp_path / f"go{round_no}"
        procs = [subprocess.Popen([sys.executable, "-c", RACER, str(state), str(go)], stdout=subprocess.PIPE,
                                  text=True) for _ in range(6)]
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob(f"{go.name}.ready.*"))) < len(procs):  # every racer started and waiting
            assert time.monotonic() < deadline, "racers did not start"
            time.sleep(0.005)
        go.touch()
        results = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
        assert all(kind == "ok" for kind, _ in results), results
        assert len({tuple(value) for _, value in results}) == 1, results
        assert (state / "web-auth").read_text().strip() == ":".join(results[0][1])
