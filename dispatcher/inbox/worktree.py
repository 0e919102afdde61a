"""One git worktree per task (``isolation: worktree``): create before launch, tidy up on finish.

Layout: ``<project>/.agent-queue/worktrees/<task id>`` on branch ``aq/<task id>``. The task
file, markers and done/ stay in the project's main ``.agent-queue/``. Git runs with argv lists
(no shell) and ``-C <dir>``; task ids are already safe path segments (taskfile.is_safe_segment).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dispatcher.core import defaults as d
from dispatcher.core.config import WorktreeSettings
from dispatcher.core.errors import WorktreeError
from dispatcher.core.taskfile import check_segment

logger = logging.getLogger(__name__)


def path_for(project_dir: Path, task_id: str) -> Path:
    """Where the task's worktree lives."""
    return Path(project_dir) / d.QUEUE_DIR / d.WORKTREES_DIR / check_segment(task_id, "task id")


def branch_for(task_id: str) -> str:
    return d.WORKTREE_BRANCH_PREFIX + check_segment(task_id, "task id")


def _git(cwd: Path, *args: str, timeout: float = d.GIT_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=timeout,
                              check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WorktreeError(f"git {' '.join(args[:2])} in {cwd} failed: {exc}") from None


def _ok(cwd: Path, *args: str) -> str:
    res = _git(cwd, *args)
    if res.returncode != 0:
        raise WorktreeError(f"git {' '.join(args)} in {cwd} failed: {(res.stderr or res.stdout).strip()[:500]}")
    return res.stdout.strip()


def _commit(cwd: Path, rev: str) -> str | None:
    res = _git(cwd, "rev-parse", "--verify", "--quiet", rev + "^{commit}")
    return res.stdout.strip() if res.returncode == 0 else None


def _registered(project_dir: Path) -> tuple[dict[Path, str], set[Path]]:
    """Registered worktrees of the repository: path → branch ref ('' when detached), and those locked."""
    out: dict[Path, str] = {}
    locked: set[Path] = set()
    current: Path | None = None
    for line in _ok(project_dir, "worktree", "list", "--porcelain").splitlines():
        if line.startswith("worktree "):
            current = Path(line[len("worktree "):]).resolve()
            out[current] = ""
        elif line.startswith("branch ") and current is not None:
            out[current] = line[len("branch "):]
        elif line.startswith("locked") and current is not None:
            locked.add(current)
    return out, locked


def create(project_dir: Path, task_id: str, cfg: WorktreeSettings) -> Path:
    """The task's worktree, made (or recovered) from ``cfg.base`` or HEAD; WorktreeError says why not."""
    project_dir = Path(project_dir)
    top = _git(project_dir, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise WorktreeError(f"isolation: worktree needs a git repository, and {project_dir} is not one "
                            f"({top.stderr.strip()[:200]})")
    path, branch = path_for(project_dir, task_id), branch_for(task_id)
    _ok(project_dir, "worktree", "prune")  # forget worktrees whose directory is gone (a worker killed mid-creation)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise WorktreeError(f"worktree path {path} is taken by a file: move it away, then retry the task")
    registered, locked = _registered(project_dir)
    if path.resolve() in locked and registered.get(path.resolve()) == "refs/heads/" + branch:
        # "git worktree add" locks a worktree while it checks it out: still locked, it was killed half-way.
        logger.warning("removing the half-made worktree %s (its creator was killed)", path)
        _ok(project_dir, "worktree", "remove", "--force", "--force", str(path))
        registered, locked = _registered(project_dir)
    if path.is_dir():
        if registered.get(path.resolve()) == "refs/heads/" + branch:
            logger.info("reusing worktree %s (an earlier attempt of %s)", path, task_id)
            return path  # the task was requeued (agent died): its work so far is there
        if path.resolve() in registered or not (path / ".git").is_file() or any(
                p.name != ".git" for p in path.iterdir()):
            raise WorktreeError(f"worktree path {path} is taken by something else: move it away, then retry the task")
        shutil.rmtree(path)  # only a ".git" file: what a "git worktree add" killed before its checkout leaves
    base = cfg.base or "HEAD"
    base_commit = _commit(project_dir, base)
    if base_commit is None:
        raise WorktreeError(f"worktree base {base!r} is not a commit in {project_dir} (an empty repository?)")
    tip = _commit(project_dir, "refs/heads/" + branch)
    if tip is not None and "refs/heads/" + branch in registered.values():
        raise WorktreeError(f"branch {branch} already exists and is checked out elsewhere: rename the task or "
                            f"remove that worktree")
    if tip is not None and tip != base_commit:
        raise WorktreeError(f"branch {branch} already exists (with commits not on {base}): delete or rename it, "
                            f"then retry the task")
    path.parent.mkdir(parents=True, exist_ok=True)
    if tip is not None:  # left by a worker killed between creating the branch and checking it out: no work on it
        _ok(project_dir, "worktree", "add", str(path), branch)
    else:
        _ok(project_dir, "worktree", "add", "-b", branch, str(path), base_commit)
    logger.info("worktree %s on %s from %s", path, branch, base)
    return path


@dataclass(frozen=True)
class Finished:
    """What happened to a finished task's worktree."""

    ok: bool  # False: the merge command failed (the task is to fail with ``detail``)
    detail: str


def _fill(argv: Sequence[str], fields: dict[str, str]) -> list[str]:
    out = []
    for word in argv:
        for key, value in fields.items():
            word = word.replace("{" + key + "}", value)
        out.append(word)
    return out


def finish(project_dir: Path, task_id: str, cfg: WorktreeSettings) -> Finished:
    """Run the merge command (if any), then remove the worktree unless it holds uncommitted work."""
    project_dir = Path(project_dir)
    path, branch = path_for(project_dir, task_id), branch_for(task_id)
    notes = [f"branch {branch} kept"]
    if cfg.merge_command:
        argv = _fill(cfg.merge_command, {"branch": branch, "task_id": task_id, "worktree": str(path)})
        try:
            res = subprocess.run(argv, cwd=project_dir, capture_output=True, text=True, timeout=d.MERGE_TIMEOUT_S,
                                 check=False, stdin=subprocess.DEVNULL)
            out, code = (res.stdout + res.stderr).strip(), res.returncode
        except (OSError, subprocess.TimeoutExpired) as exc:
            out, code = str(exc), -1
        if code != 0:
            return Finished(False, f"merge command {' '.join(argv)} failed (exit {code}); worktree kept at {path}\n"
                                   f"{out[-4000:]}")
        notes = [f"branch {branch} merged by {argv[0]}"]
    if not path.is_dir():
        return Finished(True, "; ".join(notes))
    dirty = _git(path, "status", "--porcelain")
    if dirty.returncode != 0 or dirty.stdout.strip():
        return Finished(True, "; ".join(notes + [f"worktree kept at {path}: uncommitted changes"]))
    res = _git(project_dir, "worktree", "remove", str(path))
    if res.returncode != 0:
        return Finished(True, "; ".join(notes + [f"worktree kept at {path}: {res.stderr.strip()[:200]}"]))
    return Finished(True, "; ".join(notes + ["worktree removed"]))


def kept(project_dir: Path) -> list[Path]:
    """Worktrees still present under the project's queue (failed or dirty tasks, for status)."""
    base = Path(project_dir) / d.QUEUE_DIR / d.WORKTREES_DIR
    try:
        return sorted(p for p in base.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return []
