"""The package type-checks (style: type hints everywhere, mypy-clean)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_mypy_is_clean() -> None:
    out = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary",
                          "dispatcher", "workers", "celeryconfig.py"],
                         cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stdout + out.stderr
