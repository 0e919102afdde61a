"""Fixtures for the end-to-end tier against the real Claude Code CLI.

The tier runs only with ``AQ_E2E=1`` and ``npm`` available; otherwise every test
under ``tests/e2e`` is skipped with the reason.  The pinned CLI is installed once
per machine into ``$AQ_CLAUDE_CACHE`` (see install_claude.sh).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from tests.e2e import harness
from tests.e2e.fake_api import FakeAnthropicAPI

HOOK_EVENTS = ("SessionStart", "UserPromptSubmit", "Stop", "StopFailure", "Notification", "SessionEnd")


def _skip_reason() -> str | None:
    if os.environ.get("AQ_E2E") != "1":
        return "end-to-end tier with the real Claude Code: set AQ_E2E=1 to run"
    if shutil.which("npm") is None:
        return "end-to-end tier needs npm to install @anthropic-ai/claude-code"
    if shutil.which("tmux") is None:
        return "end-to-end tier needs tmux"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _skip_reason()
    here = Path(__file__).resolve().parent
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(here):
            item.add_marker(pytest.mark.e2e)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def claude_bin() -> str:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    try:
        return harness.install_claude()
    except Exception as exc:  # npm present but install failed (offline registry, ...)
        pytest.skip(f"could not install Claude Code {harness.CLAUDE_VERSION}: {exc}")


@pytest.fixture
def fake_api() -> Iterator[FakeAnthropicAPI]:
    with FakeAnthropicAPI() as api:
        yield api


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    """A project dir with an awkward name and an agent-queue layout."""
    d = tmp_path / "proj with 'quotes' $(x) ;"
    for sub in ("tasks", ".agent-queue/done"):
        (d / sub).mkdir(parents=True)
    return d


@pytest.fixture
def home(tmp_path: Path, project_dir: Path) -> Path:
    """Isolated HOME with every start-up dialog answered in advance."""
    return harness.seed_home(tmp_path / "home", [project_dir], preseed=True)


@pytest.fixture
def bare_home(tmp_path: Path, project_dir: Path) -> Path:
    """Isolated HOME without pre-seeding: trust, API-key and bypass dialogs appear."""
    return harness.seed_home(tmp_path / "bare-home", [project_dir], preseed=False)


@pytest.fixture
def claude_env(home: Path, fake_api: FakeAnthropicAPI) -> dict[str, str]:
    return harness.claude_env(home, fake_api.base_url)


@pytest.fixture
def tmux_socket() -> Iterator[str]:
    """Name of a private tmux server for this test; the server is killed in teardown."""
    name = f"aqe2e-{uuid.uuid4().hex[:12]}"
    yield name
    harness.RawTmux(name).kill_server()
    # tmux 3.3a leaves the socket file behind after kill-server.
    sock_dir = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}"
    (sock_dir / name).unlink(missing_ok=True)


@pytest.fixture
def raw_tmux(tmux_socket: str) -> harness.RawTmux:
    return harness.RawTmux(tmux_socket)


@dataclass
class HookLog:
    """A settings file whose hooks append each payload (plus a few env vars) to a JSONL log."""

    settings: Path
    log: Path
    env_keys: tuple[str, ...] = field(default=("TMUX_PANE", "AQ_SESSION", "AQ_TASK"))

    def events(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def named(self, event: str) -> list[dict]:
        return [e for e in self.events() if e.get("hook_event_name") == event]


@pytest.fixture
def hook_log(tmp_path: Path) -> HookLog:
    log = tmp_path / "hooks.jsonl"
    script = tmp_path / "hook.py"
    script.write_text(
        "import json, os, sys\n"
        "d = json.load(sys.stdin)\n"
        f"d['_env'] = {{k: os.environ.get(k) for k in {HookLog.env_keys!r} if k}}\n"
        f"with open({str(log)!r}, 'a') as f:\n"
        "    f.write(json.dumps(d) + '\\n')\n"
    )
    import shlex
    import sys

    cmd = f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}"
    settings = tmp_path / "aq-settings.json"
    settings.write_text(
        json.dumps(
            {"hooks": {e: [{"hooks": [{"type": "command", "command": cmd, "timeout": 10}]}] for e in HOOK_EVENTS}},
            indent=2,
        )
    )
    return HookLog(settings, log)
