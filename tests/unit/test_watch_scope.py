"""The watcher watches the queue directories only, never the projects' own trees (real inotify, real files).

Agents build inside their projects: a recursive watch over a tree of ~10,000 directories overflowed inotify's
queue for ever, and no task file was reported again (bench/watcher.py, before watch_scope.py).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_settle import wait_until
from watchdog.observers.api import BaseObserver

from dispatcher.inbox import files as aq
from dispatcher.inbox.watch_scope import LEAF, PROJECT, QUEUE, ROOT, depth_of
from dispatcher.inbox.watcher import InboxHandler, run, start_observer


def test_depth_of_names_only_the_queue_directories() -> None:
    root = "/p"
    assert depth_of(root, "/p") == ROOT
    assert depth_of(root, "/p/web") == PROJECT
    assert depth_of(root, "/p/web/.agent-queue") == QUEUE
    assert depth_of(root, "/p/web/.agent-queue/inbox") == LEAF
    assert depth_of(root, "/p/web/.agent-queue/done") == LEAF
    for other in ("/p/web/src", "/p/web/.agent-queue/inbox/x", "/p/web/.agent-queue/logs", "/q/web",
                  "/pp/web", "/p/web/node_modules/.agent-queue/inbox", "/p/bad name", "/"):
        assert depth_of(root, other) is None, other


class Watched:
    """A started observer over ``projects`` with the calls its handler made."""

    def __init__(self, projects: Path, polling: bool = False) -> None:
        self.projects = projects
        self.calls: list[str] = []
        self.handler = InboxHandler(lambda path, closed: self.calls.append(os.path.relpath(path, projects)))
        self.observer = start_observer(projects, self.handler, polling=polling)

    def watched(self) -> set[str]:
        assert self.handler.scope is not None
        return {os.path.relpath(p, self.projects) for p in self.handler.scope.watched()}

    def sync(self, proj: aq.Project, tag: str) -> None:
        """A sentinel task written and seen: every earlier event was handled by then."""
        aq.write_task_atomically(proj, tag, "sentinel\n")
        wait_until(lambda: any(c.endswith(f"/{tag}.md") for c in self.calls), what=f"sentinel {tag}", timeout=30)


@pytest.fixture(params=["inotify", "polling"])
def watched(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Watched]:
    projects = tmp_path / "projects"
    aq.ensure_dirs(aq.project(projects, "web"))
    w = Watched(projects, polling=request.param == "polling")
    try:
        yield w
    finally:
        w.observer.stop()
        w.observer.join(timeout=5)


def queue_dirs(name: str) -> set[str]:
    return {name, f"{name}/.agent-queue", f"{name}/.agent-queue/inbox", f"{name}/.agent-queue/done"}


def test_a_task_is_reported_beside_a_project_tree_of_ten_thousand_directories(tmp_path: Path) -> None:
    """One checkout with a node_modules: the watch stays on the queue directories, so listing and building
    in the tree makes no events, and the task dropped next to it is reported at once."""
    projects = tmp_path / "projects"
    proj = aq.project(projects, "big")
    aq.ensure_dirs(proj)
    for i in range(10_000):
        os.makedirs(proj.root / "node_modules" / f"pkg{i // 100}" / f"m{i % 100}")
    w = Watched(projects)
    try:
        assert w.watched() == {"."} | queue_dirs("big")
        for i in range(2_000):  # an agent building: files written and closed all over its tree
            (proj.root / "node_modules" / f"pkg{i % 100}" / f"m{i % 100}" / "index.js").write_text("x\n")
        aq.write_task_atomically(proj, "T1", "work\n")
        wait_until(lambda: "big/.agent-queue/inbox/T1.md" in w.calls, what="T1 reported")
        assert w.calls == ["big/.agent-queue/inbox/T1.md"]
    finally:
        w.observer.stop()
        w.observer.join(timeout=5)


def test_new_projects_are_watched_as_their_queue_directories_appear(watched: Watched) -> None:
    """`mkdir -p` in one go, or one level at a time: either way inbox/ and done/ end up watched, and a task
    written into the new inbox is reported; directories of the project's own tree are never watched."""
    projects = watched.projects
    os.makedirs(projects / "one" / ".agent-queue" / "inbox")
    (projects / "two").mkdir()
    (projects / "two" / "src" / "deep").mkdir(parents=True)
    (projects / "two" / ".agent-queue").mkdir()
    (projects / "two" / ".agent-queue" / "inbox").mkdir()
    (projects / "two" / ".agent-queue" / "done").mkdir()
    for name in ("one", "two"):
        aq.write_task_atomically(aq.project(projects, name), "N", "work\n")
        wait_until(lambda n=name: f"{n}/.agent-queue/inbox/N.md" in watched.calls, what=f"{name} reported",
                   timeout=30)
    assert watched.watched() == ({".", "one", "one/.agent-queue", "one/.agent-queue/inbox"}
                                 | queue_dirs("two") | queue_dirs("web"))


def test_a_project_deleted_or_moved_away_is_forgotten_and_watched_again_when_it_comes_back(
        watched: Watched, tmp_path: Path) -> None:
    projects = watched.projects
    web = aq.project(projects, "web")
    shutil.rmtree(web.root)
    wait_until(lambda: watched.watched() == {"."}, what="web forgotten", timeout=30)
    aq.ensure_dirs(web)  # made again: the same paths need new watches (inotify's old ones died with the dirs)
    watched.sync(web, "S1")
    os.rename(web.root, tmp_path / "web-away")
    wait_until(lambda: watched.watched() == {"."}, what="web forgotten after the move", timeout=30)
    os.rename(tmp_path / "web-away", projects / "renamed")
    wait_until(lambda: watched.watched() == {"."} | queue_dirs("renamed"), what="renamed watched", timeout=30)
    watched.sync(aq.project(projects, "renamed"), "S2")
    # S1 was already in the inbox moved in: a hint. (A task written while its new inbox is being listed may be
    # reported twice, by the listing and by its event: hints are idempotent.)
    assert set(watched.calls) == {"web/.agent-queue/inbox/S1.md", "renamed/.agent-queue/inbox/S1.md",
                                  "renamed/.agent-queue/inbox/S2.md"}


def test_lost_events_restart_the_observer_and_ask_for_a_full_scan(tmp_path: Path) -> None:
    """The kernel dropping events is told to watchdog's handlers by nothing but a log line: the watcher
    hears it, watches afresh (a delete or a new inbox may have been lost) and asks for a full scan — also when
    the process logs only errors (`dispatcher -l error watch`, or a Celery worker's logging set up earlier)."""
    root_logger = logging.getLogger()
    level = root_logger.level
    root_logger.setLevel(logging.ERROR)
    try:
        _overflow_restarts(tmp_path)
    finally:
        root_logger.setLevel(level)


def _overflow_restarts(tmp_path: Path) -> None:
    projects = tmp_path / "projects"
    web = aq.project(projects, "web")
    aq.ensure_dirs(web)
    scans: list[float] = []
    calls: list[str] = []
    stop = threading.Event()
    thread = threading.Thread(target=run, args=(projects, lambda p, closed: calls.append(os.path.basename(p)),
                                                lambda: scans.append(time.monotonic())),
                              kwargs={"stop": stop}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(scans) == 1, what="the first scan")
        logging.getLogger("watchdog.observers.inotify_c").warning(
            "Inotify queue overflowed; filesystem events were lost")
        wait_until(lambda: len(scans) == 2, what="a rescan after the overflow")
        aq.write_task_atomically(web, "A", "work\n")  # the new observer watches
        wait_until(lambda: calls == ["A.md"], what="A reported by the new observer")
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_starting_while_projects_come_and_go_does_not_hang(tmp_path: Path) -> None:
    """The observer calls the scope holding its own lock; the starting thread's first walk must not hold a
    lock of the scope's across the observer's calls, or the two wait for each other (it hung 10 of 10 times)."""
    for attempt in range(3):
        projects = tmp_path / f"projects{attempt}"
        for p in range(60):
            aq.ensure_dirs(aq.project(projects, f"p{p}"))
        stop = threading.Event()

        def churn(projects: Path = projects) -> None:  # projects made and removed while the watcher starts
            i = 0
            while not stop.is_set():
                proj = aq.project(projects, f"n{i % 20}")
                aq.ensure_dirs(proj)
                shutil.rmtree(proj.root, ignore_errors=True)
                i += 1

        churner = threading.Thread(target=churn, daemon=True)
        churner.start()
        calls: list[str] = []
        handler = InboxHandler(lambda path, closed, calls=calls: calls.append(os.path.basename(path)))
        started: list[BaseObserver] = []
        starter = threading.Thread(target=lambda: started.append(start_observer(projects, handler)), daemon=True)
        starter.start()
        starter.join(timeout=60)
        stop.set()
        churner.join(timeout=10)
        assert not starter.is_alive(), f"start_observer hung (attempt {attempt})"
        try:  # and it watches: a task written now is reported
            aq.write_task_atomically(aq.project(projects, "p59"), "T", "work\n")
            wait_until(lambda calls=calls: "T.md" in calls, what=f"T reported (attempt {attempt})")
        finally:
            started[0].stop()
            started[0].join(timeout=5)
