"""The import contracts of pyproject.toml (``[tool.importlinter]``): layers, a pure core, thin workers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept() -> None:
    # lint-imports in a fresh interpreter: it builds the import graph from the source, so nothing this
    # test process imported matters; --no-cache leaves no .import_linter_cache behind.
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                               "sys.exit(lint_imports_command())", "--no-cache"],
        cwd=ROOT, capture_output=True, text=True, timeout=110)
    report = out.stdout + out.stderr
    broken = report.split("Broken contracts", 1)[-1] if "Broken contracts" in report else report
    assert out.returncode == 0, f"import contracts broken:\n{broken}"
    assert "0 broken" in report
