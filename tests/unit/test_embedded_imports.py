"""Python that lives outside .py files (shell scripts, compose files, docs) imports names that exist.

mypy and the import contracts never see ``python -c "from dispatcher… import …"`` inside a healthcheck script,
so a moved module breaks it silently (it did once: the compose worker's healthcheck after the layer move).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUFFIXES = {".sh", ".yml", ".yaml", ".md", ".toml", ".cfg", ""}
FROM_IMPORT = re.compile(r"\bfrom\s+(dispatcher(?:\.\w+)*)\s+import\s+([\w, ]+)")
RUN_MODULE = re.compile(r"-m\s+(dispatcher(?:\.\w+)*)\b")


def _tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    files = [ROOT / name for name in out.splitlines()]
    return [f for f in files if f.suffix in SUFFIXES and f.is_file() and f.suffix != ".py"
            and not f.name.endswith(".svg")]


def _references() -> list[tuple[str, str, str]]:
    """(file, module, name or '') for every dispatcher import written outside Python files."""
    refs = []
    for path in _tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        rel = str(path.relative_to(ROOT))
        for m in FROM_IMPORT.finditer(text):
            for name in (n.strip() for n in m.group(2).split(",")):
                if name:
                    refs.append((rel, m.group(1), name.split()[0]))
        refs += [(rel, m.group(1), "") for m in RUN_MODULE.finditer(text)]
    return refs


def test_there_are_references_to_check() -> None:
    assert any(f.startswith("docker/") for f, _, _ in _references())  # the healthcheck's snippet is found


@pytest.mark.parametrize("where,module,name", _references())
def test_each_reference_resolves(where: str, module: str, name: str) -> None:
    mod = importlib.import_module(module)
    if name:
        assert hasattr(mod, name) or importlib.util.find_spec(f"{module}.{name}") is not None, (
            f"{where}: 'from {module} import {name}' no longer resolves")
