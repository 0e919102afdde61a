"""Parallel tasks in one project (issue 15): ``max_parallel`` per project, real tmux and the fake agent."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from system_fixtures import add_task, done_ids, wait_for

from dispatcher.core.config import ProjectSettings, Settings, WorktreeSettings
from dispatcher.flows import monitor
from dispatcher.flows.dispatch import Dispatcher
from dispatcher.flows.ports import Ports
from dispatcher.inbox import files as aq
from dispatcher.inbox import markers, worktree
from dispatcher.inbox.scanner import run_scan
from dispatcher.store import events

WORK = "@fake: sleep 300\n@fake: done"


def log_rows(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(x) for x in log.read_text(encoding="utf-8").splitlines() if x.strip()]


def spans(log: Path, project: str) -> dict[str, tuple[float, float]]:
    """task id → (message received, moved to done/) for one project's tasks, from the fake agents' log."""
    got: dict[str, float] = {}
    done: dict[str, float] = {}
    for row in log_rows(log):
        if Path(row.get("cwd", "")).name != project:
            continue
        text = row.get("text", "")
        if row["event"] == "message" and text.startswith("[") and ".md]" in text:
            got[text[1:text.index(".md]")]] = row["time"]
        elif row["event"] == "done":
            done[row["task"]] = row["time"]
    return {t: (got[t], done[t]) for t in got if t in done}


def capped(disp: Dispatcher, settings: Settings, **projects: ProjectSettings) -> tuple[Dispatcher, Settings]:
    s = settings.with_overrides(max_parallel=1, projects_config=projects)
    return Dispatcher(Ports(s, disp.r, disp.tmux, disp.launch, clock=disp.clock)), s


def received(log: Path, project: str) -> set[str]:
    """Task ids of ``project`` whose message an agent has received."""
    return set(spans_started(log, project))


def spans_started(log: Path, project: str) -> dict[str, float]:
    got: dict[str, float] = {}
    for row in log_rows(log):
        text = row.get("text", "")
        if (Path(row.get("cwd", "")).name == project and row.get("event") == "message"
                and text.startswith("[") and ".md]" in text):
            got[text[1:text.index(".md]")]] = row["time"]
    return got


def test_max_parallel_one_runs_a_shared_checkout_strictly_one_at_a_time_others_served(
        disp: Dispatcher, settings: Settings, agent_log: Path) -> None:
    d1, s = capped(disp, settings, api=ProjectSettings(max_parallel=2))
    # Every task stays busy until the test drops its project's go-file: what runs at once is decided by the
    # dispatcher alone, never by how fast a loaded machine happens to start or finish an agent.
    for n in range(3):
        add_task(s, "web", f"W{n}", "@fake: await go-web\n@fake: done", mtime=1000 + n)
    for n in range(2):
        add_task(s, "api", f"A{n}", "@fake: await go-api\n@fake: done", mtime=1100 + n)

    def step() -> None:
        monitor.monitor_all(d1)
        d1.fan_out()

    # The other project is served meanwhile: both api tasks run side by side while web's first one runs.
    wait_for(lambda: received(agent_log, "web") == {"W0"} and received(agent_log, "api") == {"A0", "A1"},
             timeout=60, what="W0, A0 and A1 running", step=step)
    for _ in range(3):  # a few more passes: web's cap holds while W0 is still busy
        step()
    assert received(agent_log, "web") == {"W0"}
    # The fake agent's "await NAME" looks in its queue dir: the project's .agent-queue/.
    (aq.project(s.projects_dir, "api").inbox.parent / "go-api").write_text("", encoding="utf-8")
    (aq.project(s.projects_dir, "web").inbox.parent / "go-web").write_text("", encoding="utf-8")
    wait_for(lambda: done_ids(s, "web") == {"W0", "W1", "W2"} and done_ids(s, "api") == {"A0", "A1"},
             timeout=120, what="all five done", step=step)
    web = sorted(spans(agent_log, "web").values())
    assert len(web) == 3
    for (_, done_before), (started, _) in zip(web, web[1:]):
        assert started >= done_before, f"web tasks overlapped: {web}"


def test_a_claim_rechecks_the_limit_when_two_workers_saw_the_same_free_slot(
        disp: Dispatcher, settings: Settings) -> None:
    d1, s = capped(disp, settings)
    add_task(s, "web", "W0", "@fake: hang", mtime=1000)
    add_task(s, "web", "W1", "@fake: hang", mtime=1001)
    # Both workers planned before either claimed: each sees web's one slot free (for W0 only) …
    stale = run_scan(s.with_overrides(max_parallel=2), now=disp.clock(), write=False)
    w0, w1 = stale.eligible

    assert d1.dispatch_one(w0, "ccl-auto-0").status == "dispatched"
    # … the second one's claim counts again under the project's lock and gives up.
    outcome = d1.dispatch_one(w1, "ccl-auto-1")
    assert outcome.status == "at-limit" and "web" in outcome.detail
    assert w1.path.exists()  # untouched: still pending
    assert d1._assign("ccl-auto-1", stale).status == "no-task"


# --- isolation: worktree --------------------------------------------------------------------------------

def git(cwd: Path, *args: str) -> str:
    res = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True, timeout=30)
    return res.stdout.strip()


def git_repo(settings: Settings, name: str) -> Path:
    """A project that is a git repository with one commit (and an ignored queue dir)."""
    root = settings.projects_dir / name
    aq.ensure_dirs(aq.project(settings.projects_dir, name))
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "t@example.invalid")
    git(root, "config", "user.name", "test")
    (root / ".gitignore").write_text(".agent-queue/\n")
    (root / "README").write_text("base\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "base")
    return root


def isolated(disp: Dispatcher, settings: Settings, name: str, **wt: Any) -> tuple[Dispatcher, Settings]:
    return capped(disp, settings, **{name: ProjectSettings(isolation="worktree", worktree=WorktreeSettings(**wt))})


def step_until(d1: Dispatcher, predicate: Any, what: str, timeout: float = 90) -> None:
    def step() -> None:
        monitor.monitor_all(d1)
        d1.fan_out()

    wait_for(predicate, timeout=timeout, what=what, step=step)


def test_three_tasks_of_one_repo_run_side_by_side_each_in_its_own_worktree_and_branch(
        disp: Dispatcher, settings: Settings, agent_log: Path) -> None:
    root = git_repo(settings, "repo")
    d1, s = isolated(disp, settings, "repo")
    ids = ["T0", "T1", "T2"]
    for n, task_id in enumerate(ids):
        add_task(s, "repo", task_id, f"@fake: await go\n@fake: write {task_id}.txt\n@fake: commit\n@fake: done",
                 mtime=1000 + n)
    head = git(root, "rev-parse", "HEAD")
    inbox = aq.project(s.projects_dir, "repo").inbox

    # Side by side (no cap with worktrees): all three dispatched at once, each agent waiting for "go".
    step_until(d1, lambda: len(list(inbox.glob("*.dispatched"))) == 3, "three tasks dispatched at once")
    (inbox.parent / "go").touch()
    step_until(d1, lambda: done_ids(s, "repo") == set(ids), "three tasks done")

    rows = [r for r in log_rows(agent_log) if r["event"] == "message"]
    cwds = {r["text"][1:3]: r["cwd"] for r in rows}
    assert cwds == {t: str(worktree.path_for(root, t)) for t in ids}  # each agent's cwd: its own worktree
    for task_id in ids:  # each commit on its own branch, on top of the base
        assert git(root, "log", "--format=%s", "-1", f"aq/{task_id}") == f"work on {task_id}"
        assert git(root, "rev-parse", f"aq/{task_id}~1") == head
        assert git(root, "show", "--name-only", "--format=", f"aq/{task_id}") == f"{task_id}.txt"
    # The main checkout is untouched: same branch, same commit, nothing changed.
    assert git(root, "rev-parse", "--abbrev-ref", "HEAD") == "main" and git(root, "rev-parse", "HEAD") == head
    assert git(root, "status", "--porcelain") == ""
    # Cleaned after finish: only the main worktree is left; the branches stay for review.
    wait_for(lambda: git(root, "worktree", "list", "--porcelain").count("worktree ") == 1, what="worktrees removed",
             step=lambda: monitor.monitor_all(d1))
    assert sorted(git(root, "branch", "--format=%(refname:short)").split()) == ["aq/T0", "aq/T1", "aq/T2", "main"]
    finished = [e.detail for e in events.recent(d1.r, 200) if e.kind == "finished"]
    assert len(finished) == 3 and all("worktree removed" in x and "branch aq/T" in x for x in finished)


def test_a_project_that_is_not_a_repository_fails_its_task_with_the_reason(
        disp: Dispatcher, settings: Settings) -> None:
    d1, s = isolated(disp, settings, "plain")
    add_task(s, "plain", "T1")

    d1.fan_out()

    proj = aq.project(s.projects_dir, "plain")
    assert proj.task_path("T1", ".failed").exists()
    assert "needs a git repository" in (markers.read_marker(proj.task_path("T1"), markers.FAILURE_NOTE) or "")
    assert d1.free_sessions() == ["ccl-auto-0", "ccl-auto-1", "ccl-auto-2"]  # no session was used or cooled
