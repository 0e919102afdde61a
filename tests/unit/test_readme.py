"""README examples run as written on a fresh machine (those that need no running system)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dispatcher.core import defaults as d
from dispatcher.core.message import sanitize

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")

#: Subcommands whose README examples run offline (no `up`, no Redis) and change nothing outside the deployment.
OFFLINE = ("validate", "submit", "scan", "graph", "status")
PLACEHOLDERS = {"PROJECT", "FILE", "ID", "DIR", "N", "NAMES", "PROJECT:ID", "project:id"}


def _dispatcher() -> list[str]:
    exe = Path(sys.executable).with_name("dispatcher")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "dispatcher"]


def _quick_start() -> str:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    return next(line for block in blocks for line in block.splitlines() if "dispatcher init" in line)


def _inline_examples() -> list[str]:
    spans = re.findall(r"`((?:echo [^`|]*\| )?dispatcher [^`]+)`", README)
    out = []
    for span in spans:
        words = shlex.split(span.split("| ", 1)[-1])
        if words[1] not in OFFLINE or any(w in PLACEHOLDERS or "[" in w or "…" in w or "\\|" in w for w in words):
            continue
        if words[1] == "scan" and "--dry-run" not in words:
            continue
        if words[1] in ("submit", "validate") and len(words) == 2:
            continue  # the command named in a sentence, not an example
        out.append(span)
    return out


@pytest.fixture
def newcomer(tmp_path: Path) -> dict[str, str]:
    """A fresh user's environment: its own HOME, none of the dispatcher's variables."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in
           ("DISPATCHER_CONFIG", "REDIS_URL", "AQ_PROJECTS_DIR", "AQ_STATE_DIR", "FLOWER_BASIC_AUTH")}
    env["HOME"] = str(home)
    return env


def _run(line: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    stdin = None
    if " | " in line:
        left, line = line.split(" | ", 1)
        stdin = " ".join(shlex.split(left)[1:]) + "\n"  # echo's output
    words = [os.path.expanduser(w).replace(os.path.expanduser("~"), env["HOME"], 1) if w.startswith("~") else w
             for w in shlex.split(line)]
    assert words[0] == "dispatcher", line
    return subprocess.run([*_dispatcher(), *words[1:]], cwd=cwd, env=env, input=stdin, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.timeout(120)
def test_readme_examples_run_as_written(tmp_path: Path, newcomer: dict[str, str]) -> None:
    cwd = tmp_path / "clone"
    cwd.mkdir()
    for part in (p.strip() for p in _quick_start().split("&&")):
        if part.startswith("pip ") or part.startswith("dispatcher up"):
            continue  # installing is done; `up` runs until Ctrl-C (tests/integration/test_up.py runs it)
        if part.startswith("cd "):
            target = shlex.split(part)[1]
            cwd = Path(newcomer["HOME"]) / target[2:] if target.startswith("~/") else cwd / target
            continue
        out = _run(part, cwd, newcomer)
        assert out.returncode == 0, f"{part}: {out.stderr}"
    assert (cwd / d.CONFIG_FILE).is_file()

    examples = _inline_examples()
    assert any(" submit " in e for e in examples) and any("scan --dry-run" in e for e in examples), examples
    for line in examples:
        out = _run(line, cwd, newcomer)
        assert out.returncode == 0, f"{line}: {out.stdout}{out.stderr}"

    plan = json.loads(_run("dispatcher scan --dry-run --json", cwd, newcomer).stdout)
    projects = cwd / "projects"
    for task in plan["blocked"] + plan["stuck"]:
        for dep in task["depends_on"]:
            project, task_id = dep.split(":")
            queue = projects / project / d.QUEUE_DIR
            known = list((queue / d.INBOX).glob(f"{task_id}.md*")) + list((queue / d.DONE).glob(f"{task_id}*.md"))
            assert known, f"{task['project']}:{task['id']} waits on {dep}, which does not exist"


def test_the_quick_start_leaves_nothing_untracked_in_the_clone() -> None:
    """`dispatcher init <dir>` run inside the clone writes a directory git ignores (or one outside it)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    target = shlex.split(_quick_start().split("dispatcher init", 1)[1].split("&&")[0])[0]
    if target.startswith(("~", "/")):
        return
    for written in ("dispatcher.yaml", "projects/example/.agent-queue/inbox/SETUP-1.md"):
        ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", f"{target}/{written}"],
                                 capture_output=True, text=True)
        assert ignored.returncode == 0, f"{target}/{written} would show up as untracked: {ignored.stderr}"


def test_readme_says_control_characters_are_removed_from_task_bodies() -> None:
    section = README[README.index("## Task files"):README.index("## Configuration")]
    assert re.search(r"control characters[^.]*removed", section, flags=re.I) and "tabs" in section
    assert sanitize("a\x1b[31mb\x07c\td") == "a[31mbc\td"  # ESC and BEL go; tab stays (Claude Code makes spaces)
