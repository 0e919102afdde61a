"""The tree is ruff-clean (rules and line length from pyproject.toml's [tool.ruff])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
def test_ruff_is_clean() -> None:
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)],
                         cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert out.returncode == 0, out.stdout + out.stderr


def test_test_modules_have_unique_names() -> None:
    """tests/unit and tests/integration are not packages: two test files of one name there stop the whole
    collection of `python -m pytest` ("import file mismatch"), though each tier alone runs fine."""
    from collections import Counter
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    names = Counter(p.name for tier in ("unit", "integration") for p in (root / tier).glob("test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []
