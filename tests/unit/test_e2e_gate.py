"""The real-Claude-Code tier is never skipped silently: with AQ_E2E=1 a failed CLI install fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ONE_TEST = "tests/e2e/test_real_claude.py::test_resume_and_session_id_need_fork_session"


def run_e2e(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AQ_")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", ONE_TEST],
        cwd=ROOT, env={**base, "AQ_CLAUDE_CACHE": str(tmp_path / "cache"), **env},
        capture_output=True, text=True, timeout=120,
    )


@pytest.mark.timeout(150)
def test_without_aq_e2e_the_tier_is_skipped_with_the_reason(tmp_path: Path) -> None:
    out = run_e2e(tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 skipped" in out.stdout and "set AQ_E2E=1 to run" in out.stdout


@pytest.mark.timeout(150)
def test_with_aq_e2e_a_failed_install_of_the_pinned_cli_fails(tmp_path: Path) -> None:
    # A version install_claude.sh refuses: the install fails at once, without the network.
    out = run_e2e(tmp_path, AQ_E2E="1", AQ_CLAUDE_VERSION="not-a-version", AQ_CLAUDE_LATEST="not-a-version")
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "1 error" in text and "could not install Claude Code not-a-version" in text, text
    # "latest" here is the pinned version: that case alone is skipped, with the reason.
    assert "1 skipped" in text and "the newest release is the pinned version" in text, text


@pytest.mark.timeout(150)
def test_registry_down_skips_only_the_latest_cases(tmp_path: Path) -> None:
    # The pinned CLI comes from the cache (a stub here, so no npm is needed for it) and runs;
    # "latest" cannot be resolved and is skipped with the registry's answer.
    pinned = os.environ.get("AQ_CLAUDE_VERSION", "2.1.197")
    prefix = tmp_path / "cache" / f"claude-code-{pinned}"
    stub = prefix / "node_modules" / ".bin" / "claude"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\necho 'Error: --session-id with --continue or --resume also needs --fork-session.' >&2\n"
                    "exit 1\n")
    stub.chmod(0o755)
    (prefix / f".installed-{pinned}").touch()
    out = run_e2e(tmp_path, AQ_E2E="1", AQ_CLAUDE_VERSION=pinned,
                  npm_config_registry="http://127.0.0.1:9/", npm_config_fetch_retries="0")
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert f"PASSED {ONE_TEST}[v{pinned}]" in text, text
    assert "1 passed, 1 skipped" in text and "the npm registry did not answer" in text, text
    assert "ECONNREFUSED" in text, text
