"""Worktree isolation against real git repositories in tmp dirs: creation, every error, recovery, finish."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dispatcher.core.config import WorktreeSettings
from dispatcher.core.errors import WorktreeError
from dispatcher.inbox import worktree


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True,
                          timeout=30).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "t@example.invalid")
    git(root, "config", "user.name", "test")
    (root / ".gitignore").write_text(".agent-queue/\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    return root


def worktrees(root: Path) -> list[str]:
    return [x[len("worktree "):] for x in git(root, "worktree", "list", "--porcelain").splitlines()
            if x.startswith("worktree ")]


def test_not_a_git_repository_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WorktreeError, match="needs a git repository"):
        worktree.create(tmp_path, "T1", WorktreeSettings())
    assert not (tmp_path / ".agent-queue").exists()


def test_a_path_squatted_by_a_file_is_refused_and_left_alone(repo: Path) -> None:
    path = worktree.path_for(repo, "T1")
    path.parent.mkdir(parents=True)
    path.write_text("mine")
    with pytest.raises(WorktreeError, match="taken by a file"):
        worktree.create(repo, "T1", WorktreeSettings())
    assert path.read_text() == "mine"


def test_an_existing_branch_with_other_work_is_refused(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "aq/T1")
    git(repo, "commit", "-q", "--allow-empty", "-m", "someone's work")
    git(repo, "checkout", "-q", "main")
    with pytest.raises(WorktreeError, match="branch aq/T1 already exists"):
        worktree.create(repo, "T1", WorktreeSettings())
    assert git(repo, "log", "--format=%s", "-1", "aq/T1") == "someone's work"


def test_an_unknown_base_is_a_clear_error(repo: Path) -> None:
    with pytest.raises(WorktreeError, match="base 'release' is not a commit"):
        worktree.create(repo, "T1", WorktreeSettings(base="release"))


def test_a_configured_base_branch_is_where_the_worktree_starts(repo: Path) -> None:
    git(repo, "branch", "dev")
    git(repo, "commit", "-q", "--allow-empty", "-m", "main moves on")
    path = worktree.create(repo, "T1", WorktreeSettings(base="dev"))
    assert git(path, "rev-parse", "HEAD") == git(repo, "rev-parse", "dev")
    assert git(path, "rev-parse", "--abbrev-ref", "HEAD") == "aq/T1"


def test_a_half_made_worktree_of_a_killed_worker_is_cleaned_on_the_next_attempt(repo: Path) -> None:
    # What "git worktree add" leaves when killed -9 during its checkout: locked "initializing".
    path = worktree.path_for(repo, "T1")
    git(repo, "worktree", "add", "-q", "-b", "aq/T1", str(path))
    git(repo, "worktree", "lock", "--reason", "initializing", str(path))
    (path / ".gitignore").unlink()  # its checkout was cut short

    again = worktree.create(repo, "T1", WorktreeSettings())

    assert again == path and worktrees(repo) == [str(repo), str(path)]
    assert "locked" not in git(repo, "worktree", "list", "--porcelain")


def test_a_worktree_removed_by_hand_is_pruned_and_made_again(repo: Path) -> None:
    path = worktree.create(repo, "T1", WorktreeSettings())
    import shutil

    shutil.rmtree(path)
    assert worktree.create(repo, "T1", WorktreeSettings()) == path and path.joinpath(".gitignore").exists()
    assert worktrees(repo) == [str(repo), str(path)]


def test_a_requeued_task_gets_its_worktree_back_with_the_work_in_it(repo: Path) -> None:
    path = worktree.create(repo, "T1", WorktreeSettings())
    (path / "half.txt").write_text("work so far")
    assert worktree.create(repo, "T1", WorktreeSettings()) == path
    assert (path / "half.txt").read_text() == "work so far"


def test_finish_removes_a_clean_worktree_and_keeps_a_dirty_one(repo: Path) -> None:
    clean = worktree.create(repo, "T1", WorktreeSettings())
    dirty = worktree.create(repo, "T2", WorktreeSettings())
    (dirty / "left.txt").write_text("uncommitted")

    a = worktree.finish(repo, "T1", WorktreeSettings())
    b = worktree.finish(repo, "T2", WorktreeSettings())

    assert a.ok and "worktree removed" in a.detail and not clean.exists()
    assert b.ok and f"worktree kept at {dirty}: uncommitted changes" in b.detail and dirty.exists()
    assert "aq/T1" in git(repo, "branch")


def test_merge_command_runs_in_the_project_and_its_failure_is_reported(repo: Path) -> None:
    path = worktree.create(repo, "T1", WorktreeSettings())
    (path / "f.txt").write_text("x")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "work")
    merge = WorktreeSettings(merge_command=("git", "merge", "--no-edit", "{branch}"))

    ok = worktree.finish(repo, "T1", merge)

    assert ok.ok and "merged" in ok.detail and (repo / "f.txt").exists()
    worktree.create(repo, "T2", WorktreeSettings())
    bad = worktree.finish(repo, "T2", WorktreeSettings(merge_command=("git", "merge", "no-such-branch")))
    assert not bad.ok and "failed (exit" in bad.detail and "no-such-branch" in bad.detail
    assert worktree.path_for(repo, "T2").exists()  # kept for inspection
