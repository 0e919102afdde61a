"""Shared helpers for the unit tests of the pure core and the on-disk protocol.

Everything works on real files under ``tmp_path``; nothing is mocked. Helpers
are exposed as fixtures returning plain functions (importing ``conftest`` by
name is fragile when several test directories each have one).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from dispatcher.core.config import Settings
from dispatcher.core.plan import Plan
from dispatcher.core.taskfile import render_task
from dispatcher.inbox import files as aq
from dispatcher.inbox.scanner import run_scan

#: Environment variables the config layer reads: never let the developer's shell leak in.
CONFIG_ENV_VARS = ("DISPATCHER_CONFIG", "REDIS_URL", "AQ_PROJECTS_DIR", "AQ_STATE_DIR", "FLOWER_BASIC_AUTH")

TaskSpec = str | bytes | Mapping[str, Any]


def task_text(spec: TaskSpec) -> bytes:
    """Bytes of a task file: raw text/bytes as given, or a mapping of render_task fields."""
    if isinstance(spec, bytes):
        return spec
    if isinstance(spec, str):
        return spec.encode("utf-8")
    return render_task(**spec).encode("utf-8")


def _make_project(projects_dir: Path, name: str, tasks: Mapping[str, TaskSpec] | None = None,
                  done: Iterable[str] = (), mtimes: Mapping[str, float] | None = None) -> aq.Project:
    """Create ``projects_dir/<name>/.agent-queue/{inbox,done}`` with task files and done/ entries.

    ``tasks`` maps a task ID to its content; ``done`` lists file names for done/
    (``"T1.md"``, ``"T1-20260101.md"``…); ``mtimes`` sets task mtimes (oldest first ordering).
    """
    proj = aq.project(projects_dir, name)
    aq.ensure_dirs(proj)
    for task_id, spec in (tasks or {}).items():
        path = proj.inbox / f"{task_id}.md"
        path.write_bytes(task_text(spec))
        if mtimes and task_id in mtimes:
            os.utime(path, (mtimes[task_id], mtimes[task_id]))
    for name_ in done:
        (proj.done / name_).write_text("done\n", encoding="utf-8")
    return proj


@pytest.fixture
def projects_dir(tmp_path: Path) -> Path:
    """An empty projects directory."""
    path = tmp_path / "projects"
    path.mkdir()
    return path


@pytest.fixture
def make_project(projects_dir: Path) -> Callable[..., aq.Project]:
    """Factory: ``make_project("web", tasks={"T1": {...}}, done=["T0.md"])`` under projects_dir."""

    def factory(name: str, tasks: Mapping[str, TaskSpec] | None = None, done: Iterable[str] = (),
                mtimes: Mapping[str, float] | None = None) -> aq.Project:
        return _make_project(projects_dir, name, tasks, done, mtimes)

    return factory


@pytest.fixture
def settings(projects_dir: Path) -> Settings:
    """Settings pointing at projects_dir, everything else default but ``settle_time``.

    Files written here are complete at once, so they are judged at once (settle_time 0);
    the tests of settling (test_settle.py) set it themselves.
    """
    # No per-project cap (max_parallel) either: these tests are about order; test_scan tests the cap.
    return Settings(projects_dir=projects_dir, settle_time=0.0, max_parallel=500)


@pytest.fixture
def scan(settings: Settings) -> Callable[..., Plan]:
    """Run one real pass: ``scan()`` writes markers like the running system; ``scan(write=False)`` is a dry run."""

    def run(*, now: float | None = None, write: bool = True, **overrides: Any) -> Plan:
        s = settings.with_overrides(**overrides) if overrides else settings
        return run_scan(s, now=time.time() if now is None else now, write=write)

    return run


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in CONFIG_ENV_VARS:
        monkeypatch.delenv(var, raising=False)


def ids(tasks: Iterable[Any]) -> list[str]:
    """``project:id`` of tasks (or of ``(task, reason)`` pairs)."""
    out = []
    for t in tasks:
        task = t[0] if isinstance(t, tuple) else t
        out.append(f"{task.project}:{task.id}")
    return out


@pytest.fixture
def keys() -> Callable[[Iterable[Any]], list[str]]:
    """``keys(plan.eligible)`` → ``["web:T1", …]``."""
    return ids
