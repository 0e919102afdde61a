"""Fixtures for the end-to-end tier against the real Claude Code CLI.

The tier runs only with ``AQ_E2E=1``; otherwise every test under ``tests/e2e`` is
skipped with the reason.  With ``AQ_E2E=1`` a missing tmux, npm or a failed install
of the pinned CLI is an error, never a skip (CI must not pass without this tier).

Every test runs once per CLI version (the session fixture ``claude_cli``): the pinned
one (``v<pinned>``) and the newest release on the npm registry (``latest``; skipped
only when the registry does not answer).  ``AQ_CLAUDE_LATEST=<version>`` fixes what
"latest" means (e.g. offline with a filled cache).  Each version is installed once
per machine into its own cache dir (see install_claude.sh).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e import harness
from tests.e2e.fake_api import FakeAnthropicAPI

HOOK_EVENTS = ("SessionStart", "UserPromptSubmit", "Stop", "StopFailure", "Notification", "SessionEnd")
PINNED = harness.CLAUDE_VERSION
VERSION_IDS = (f"v{PINNED}", "latest")


def _skip_reason() -> str | None:
    if os.environ.get("AQ_E2E") != "1":
        return "end-to-end tier with the real Claude Code: set AQ_E2E=1 to run"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _skip_reason()
    here = Path(__file__).resolve().parent
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(here):
            item.add_marker(pytest.mark.e2e)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@dataclass(frozen=True)
class ClaudeCLI:
    """One installed Claude Code version under test."""

    version: str
    bin: str
    label: str  # "pinned" or "latest"

    @property
    def is_pinned(self) -> bool:
        return self.label == "pinned"


def _install(version: str) -> str:
    try:
        return harness.install_claude(version)
    except harness.InstallError as exc:
        # AQ_E2E=1 asked for this tier: a failed install must fail the run, not skip it.
        pytest.fail(f"could not install Claude Code {version} (npm: {shutil.which('npm') or 'missing'}): {exc}",
                    pytrace=False)


@pytest.fixture(scope="session", params=["pinned", "latest"], ids=VERSION_IDS)
def claude_cli(request: pytest.FixtureRequest) -> ClaudeCLI:
    """The CLI version under test: every e2e test runs on the pinned version and on the newest release."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    if shutil.which("tmux") is None:
        pytest.fail("AQ_E2E=1 but tmux is not installed", pytrace=False)
    if request.param == "pinned":
        return ClaudeCLI(PINNED, _install(PINNED), "pinned")
    version = os.environ.get("AQ_CLAUDE_LATEST", "").strip()
    if not version:
        try:
            version = harness.latest_version()
        except OSError as exc:
            pytest.skip(f"newest Claude Code release unknown, the npm registry did not answer: {exc}")
    if version == PINNED:
        pytest.skip(f"the newest release is the pinned version {PINNED}: already tested")
    return ClaudeCLI(version, _install(version), "latest")


@pytest.fixture(scope="session")
def claude_bin(claude_cli: ClaudeCLI) -> str:
    return claude_cli.bin


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
def home(tmp_path: Path, project_dir: Path, claude_cli: ClaudeCLI) -> Path:
    """Isolated HOME with every start-up dialog answered in advance."""
    return harness.seed_home(tmp_path / "home", [project_dir], preseed=True, version=claude_cli.version)


@pytest.fixture
def bare_home(tmp_path: Path, project_dir: Path, claude_cli: ClaudeCLI) -> Path:
    """Isolated HOME without pre-seeding: trust, API-key and bypass dialogs appear."""
    return harness.seed_home(tmp_path / "bare-home", [project_dir], preseed=False, version=claude_cli.version)


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
