"""The Celery system: a real worker (start_worker, pool solo), `celery call` as a subprocess, the watcher."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from celery.contrib.testing.worker import start_worker
from system_fixtures import add_task, done_ids, messages, tags_received, wait_for

from dispatcher.celery_app import app
from dispatcher.core.config import Settings
from dispatcher.flows import runtime


@pytest.fixture
def worker(settings: Settings, sys_redis, tmux_pool) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """A real Celery worker thread on the test's Redis DB, running the real launch path."""
    import workers.assign  # noqa: F401
    import workers.monitor  # noqa: F401
    import workers.scan  # noqa: F401  (registers the tasks and the fan-out enqueue)

    url = settings.redis_url or ""
    app.conf.update(broker_url=url, result_backend=url)
    runtime.configure(settings)
    runtime.register_enqueue(lambda s: app.send_task("assign_next", args=[s]))
    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        yield
    runtime.configure(None)


def write_config(settings: Settings, path: Path) -> Path:
    """The same settings as a dispatcher.yaml (for subprocesses)."""
    data = {
        "projects_dir": str(settings.projects_dir),
        "state_dir": str(settings.state_dir),
        "redis_url": settings.redis_url,
        "pool": {"prefix": settings.pool.prefix, "max": settings.pool.max},
        "tmux": {"socket_name": settings.tmux.socket_name},
        "agent": {"command": settings.agent.command, "resume_dir": str(settings.agent.resume_dir),
                  "env": dict(settings.agent.env), "prompt_timeout": settings.agent.prompt_timeout},
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_assign_next_task_through_a_real_worker(worker: None, settings: Settings, agent_log: Path) -> None:
    add_task(settings, "alpha", "W1")
    result = app.send_task("assign_next", args=["ccl-auto-0"]).get(timeout=60)
    assert result["status"] == "dispatched" and result["task"] == "alpha:W1"
    assert tags_received(agent_log) == ["alpha:W1"]


def test_full_scan_fans_out_to_every_free_session(worker: None, settings: Settings, agent_log: Path) -> None:
    for i in range(3):
        add_task(settings, "alpha", f"S{i}", "@fake: hang")
    app.send_task("full_scan").get(timeout=60)
    wait_for(lambda: len(messages(agent_log)) == 3, timeout=90, what="three sessions busy")
    assert sorted(tags_received(agent_log)) == ["alpha:S0", "alpha:S1", "alpha:S2"]


def test_celery_call_cli_as_the_readme_says(worker: None, settings: Settings, agent_log: Path,
                                           tmp_path: Path) -> None:
    """`celery -A dispatcher call assign_next --args '["ccl-auto-0"]'` from a shell gives that session a task."""
    add_task(settings, "alpha", "C1")
    cfg = write_config(settings, tmp_path / "dispatcher.yaml")
    env = {**os.environ, "DISPATCHER_CONFIG": str(cfg), "REDIS_URL": settings.redis_url or ""}
    out = subprocess.run([sys.executable, "-m", "celery", "-A", "dispatcher", "call", "assign_next",
                          "--args", '["ccl-auto-0"]'], env=env, capture_output=True, text=True, timeout=60,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.strip()) >= 32  # the task id
    wait_for(lambda: tags_received(agent_log) == ["alpha:C1"], timeout=60, what="C1 delivered")


@contextmanager
def watching(settings: Settings) -> Iterator[None]:
    """The real watcher in a thread, sending inbox_event to the worker; entered once its observer is up."""
    from dispatcher.inbox.watcher import run

    stop = threading.Event()
    started = threading.Event()  # run() rescans once its observer is up: that is our "watching" signal
    watcher = threading.Thread(target=run, args=(settings.projects_dir,
                                                 lambda p, closed: app.send_task("inbox_event", args=[p, closed]),
                                                 started.set), kwargs={"stop": stop}, daemon=True)
    watcher.start()
    try:
        assert started.wait(30), "watcher did not start"
        yield
    finally:
        stop.set()
        watcher.join(timeout=10)


def test_watcher_dispatches_a_new_file_at_once(worker: None, settings: Settings, agent_log: Path,
                                               sys_redis) -> None:  # type: ignore[no-untyped-def]
    """Files dropped in an inbox — also of a project created after start — reach agents via inbox_event."""
    with watching(settings):
        add_task(settings, "first", "N1")
        wait_for(lambda: tags_received(agent_log) == ["first:N1"], timeout=60, what="N1 delivered")
        proj = settings.projects_dir / "brand-new" / ".agent-queue" / "inbox"
        proj.mkdir(parents=True)
        add_task(settings, "brand-new", "N2")
        wait_for(lambda: tags_received(agent_log) == ["first:N1", "brand-new:N2"], timeout=60,
                 what="N2 delivered")
        from dispatcher.store import events

        def submitted() -> list[str]:
            return [e.task for e in events.recent(sys_redis, 200) if e.kind == "submitted"]

        # Once per file, however many filesystem events (the announce may run after the launch).
        wait_for(lambda: sorted(submitted()) == ["brand-new:N2", "first:N1"], timeout=30,
                 what=lambda: f"submitted events, got {submitted()}")


def test_a_project_moved_in_whole_is_dispatched_without_waiting_for_a_scan(
        worker: None, settings: Settings, agent_log: Path, tmp_path: Path) -> None:
    """A project made elsewhere and moved (or cloned) into projects_dir with tasks already in its inbox:
    the watcher lists the new inbox (no periodic scan runs here, so nothing else could find the task)."""
    from dispatcher.inbox import files as aq

    with watching(settings):
        elsewhere = tmp_path / "elsewhere"
        proj = aq.project(elsewhere, "moved")
        aq.ensure_dirs(proj)
        aq.write_task_atomically(proj, "M1", "---\ntitle: M1\n---\nWork on M1.\n@fake: done\n")
        os.rename(elsewhere / "moved", settings.projects_dir / "moved")
        wait_for(lambda: tags_received(agent_log) == ["moved:M1"], timeout=60, what="M1 delivered")


def test_non_atomic_writers_are_dispatched_complete_and_atomic_ones_at_once(
        worker: None, settings: Settings, agent_log: Path) -> None:
    """`cat > inbox/x.md` pausing inside the body is not dispatched before its writer closes the file, however
    often scans run meanwhile; a plain one-shot write goes on its close; an atomic rename goes at once (well
    within settle_time, which only files no watcher saw finished wait for)."""
    from dispatcher.inbox import files as aq
    from dispatcher.inbox.watcher import run

    runtime.configure(settings.with_overrides(settle_time=30.0))  # the worker's Dispatcher is built from these
    proj = aq.project(settings.projects_dir, "alpha")
    aq.ensure_dirs(proj)
    stop = threading.Event()
    started = threading.Event()
    watcher = threading.Thread(target=run, args=(settings.projects_dir,
                                                 lambda p, closed: app.send_task("inbox_event", args=[p, closed]),
                                                 started.set), kwargs={"stop": stop}, daemon=True)
    watcher.start()

    def text_of(task_id: str) -> str:
        return next((m["text"] for m in messages(agent_log) if m["text"].startswith(f"[{task_id}.md]")), "")

    try:
        assert started.wait(30), "watcher did not start"
        fd = os.open(proj.task_path("SLOW"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, b"---\ntitle: slow\n---\nWork on SLOW.\n")
            app.send_task("full_scan").get(timeout=60)
            add_task(settings, "alpha", "FAST")  # written atomically, like dispatcher submit
            wait_for(lambda: text_of("FAST"), timeout=20, what="FAST delivered without waiting to settle")
            app.send_task("full_scan").get(timeout=60)
            assert proj.task_path("SLOW").exists() and text_of("SLOW") == ""
            os.write(fd, b"@fake: done\nlast line\n")
        finally:
            os.close(fd)
        wait_for(lambda: text_of("SLOW"), timeout=20, what="SLOW delivered once closed")
        assert "Work on SLOW.\n@fake: done\nlast line" in text_of("SLOW")
        proj.task_path("ONE").write_text("Work on ONE.\n@fake: done\nlast line\n")  # one-shot cat > ONE.md
        wait_for(lambda: text_of("ONE"), timeout=20, what="ONE delivered once closed")
        assert "last line" in text_of("ONE")
    finally:
        stop.set()
        watcher.join(timeout=10)


def test_a_file_no_watcher_saw_finished_is_dispatched_once_it_settles(
        worker: None, settings: Settings, agent_log: Path, sys_redis) -> None:  # type: ignore[no-untyped-def]
    """A hint without the writer's close (polling watcher, a scan) for a fresh file: it goes once unchanged for
    settle_time, by a scan scheduled for then, not at the next beat tick (there is no beat here)."""
    from dispatcher.store import events

    runtime.configure(settings.with_overrides(settle_time=1.0))
    path = add_task(settings, "alpha", "H1")
    written = path.stat().st_mtime

    assert app.send_task("inbox_event", args=[str(path)]).get(timeout=60)["task"] == "alpha:H1"

    wait_for(lambda: tags_received(agent_log) == ["alpha:H1"], timeout=30, what="H1 delivered once settled")
    claimed = [e.time for e in events.recent(sys_redis, 100) if e.kind == "claimed" and e.task == "alpha:H1"]
    assert len(claimed) == 1 and claimed[0] >= written + 1.0


def test_a_paused_pool_still_classifies_and_marks(worker: None, settings: Settings, agent_log: Path,
                                                  sys_redis) -> None:  # type: ignore[no-untyped-def]
    """Dispatch is paused (usage limit), scans are not: .invalid and .blocked (first detection) appear at once."""
    import time

    from dispatcher.inbox import files as aq
    from dispatcher.store import pause

    pause.pause(sys_redis, time.time() + 3600, "usage limit", pause.USAGE_LIMIT)
    proj = aq.project(settings.projects_dir, "alpha")
    aq.ensure_dirs(proj)
    aq.write_task_atomically(proj, "BAD", "---\npriority: someday\n---\nx\n")
    add_task(settings, "alpha", "W", depends_on=("alpha:NOPE",))

    app.send_task("full_scan").get(timeout=60)

    assert "unknown priority 'someday'" in proj.task_path("BAD", ".invalid").read_text()
    assert proj.task_path("W", ".blocked").exists()
    # A file arriving while paused is marked by way of its own inbox_event, not at the next beat tick.
    late = aq.write_task_atomically(proj, "BAD2", "---\ndepends_on: [1:30]\n---\nx\n")
    app.send_task("inbox_event", args=[str(late)]).get(timeout=60)
    wait_for(lambda: proj.task_path("BAD2", ".invalid").exists(), timeout=60, what="BAD2 marked invalid")
    assert messages(agent_log) == []


def test_inbox_event_ignores_paths_outside_inboxes(worker: None, settings: Settings, agent_log: Path) -> None:
    for path in ["/etc/passwd", str(settings.projects_dir / "a" / ".agent-queue" / "done" / "x.md"),
                 str(settings.projects_dir / ".." / "x" / ".agent-queue" / "inbox" / "y.md")]:
        assert "ignored" in app.send_task("inbox_event", args=[path]).get(timeout=30)
    assert messages(agent_log) == []


def test_two_worker_processes_watcher_and_repeated_calls_never_double_book(
        settings: Settings, sys_redis, tmux_pool, agent_log: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Two real worker processes, the watcher, and a storm of full_scan/assign_next/monitor on one inbox."""
    import signal

    from dispatcher.inbox.watcher import run

    url = settings.redis_url or ""
    app.conf.update(broker_url=url, result_backend=url)
    cfg = write_config(settings, tmp_path / "dispatcher.yaml")
    env = {**os.environ, "DISPATCHER_CONFIG": str(cfg), "REDIS_URL": url}
    procs = [subprocess.Popen([sys.executable, "-m", "celery", "-A", "dispatcher", "worker", "-P", "solo",
                               "-n", f"w{i}@%h", "-l", "warning"], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"w{i}.log", "wb"),
                              start_new_session=True) for i in range(2)]
    stop = threading.Event()
    watcher = threading.Thread(target=run, args=(settings.projects_dir,
                                                 lambda p, closed: app.send_task("inbox_event", args=[p, closed]),
                                                 lambda: None),
                               kwargs={"stop": stop}, daemon=True)
    try:
        wait_for(lambda: len(app.control.inspect(timeout=1).ping() or {}) == 2, timeout=60, what="2 workers up")
        watcher.start()
        expected = {p: {f"{p.upper()}{i}" for i in range(5)} for p in ("ra", "rb", "rc")}
        for p, ids in expected.items():
            for task_id in sorted(ids):
                add_task(settings, p, task_id)

        def storm() -> None:
            app.send_task("full_scan")
            for name in settings.pool.names():
                app.send_task("assign_next", args=[name])
            app.send_task("monitor_sessions")

        wait_for(lambda: all(done_ids(settings, p) == ids for p, ids in expected.items()), timeout=240,
                 what="15 tasks done", step=storm)
        got = tags_received(agent_log)
        assert sorted(got) == sorted(f"{p}:{t}" for p, ids in expected.items() for t in ids), got
        # No session ever had two agents at once: each message came from a distinct agent start.
        starts = [m for m in messages(agent_log)]
        assert len({m["session_id"] for m in starts}) == len(starts) == 15
    finally:
        stop.set()
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)
