"""Dispatch benchmark (issue 5 item 8): overhead, throughput and scan time, beside measured floors.

    python bench/dispatch.py [--sessions N] [--tasks M] [--quick]

Everything runs for real on this machine: Redis DB 11 (flushed before and after),
a private tmux server (``tmux -L aqbench-<uuid>``, killed at the end) and the fake
agent (``python -m dispatcher.testing.fake_agent``).  The Dispatcher is driven
inline (``fan_out`` + ``monitor_all`` in a loop, no Celery), like the
integration tests do; the Celery, inotify, Redis and tmux floors are measured
separately in the same run so they can be added/compared.

(a) dispatch overhead, steady: at most N tasks outstanding; a new task file is
    written as soon as one finishes; time = file created (after the atomic
    rename) → the fake agent logs the message as submitted (its own clock).
    The real file watcher runs and records each moved-in file as complete, as
    inbox_event does, so files are not held back for ``settle_time``.
    burst: all M files written at once (includes queueing behind N sessions).
(b) throughput: M tasks completed / (first file created → last task in done/),
    in the burst phase, agents finish at once (``@fake: done``).
(c) ``run_scan(settings, now=..., write=False)`` over 100 projects × 1,000
    pending files (``--quick``: 20 × 500), then again with 10,000 (quick: 1,000)
    files in done/.
Reference: the Go dispatcher's launch path replayed on the same fake agent:
``cd DIR`` + Enter, sleep 300 ms, command + Enter, poll the screen every 1 s for
``❯``, type the message, sleep 500 ms, Enter.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from dispatcher.agent import pool
from dispatcher.agent.tmux import Tmux  # noqa: E402
from dispatcher.core.config import AgentSettings, PoolSettings, Settings, TmuxSettings  # noqa: E402
from dispatcher.core.taskfile import render_task  # noqa: E402
from dispatcher.flows import runtime  # noqa: E402
from dispatcher.flows.dispatch import Dispatcher  # noqa: E402
from dispatcher.flows.launch import LaunchSpec  # noqa: E402
from dispatcher.flows.monitor import monitor_all  # noqa: E402
from dispatcher.flows.ports import Ports  # noqa: E402
from dispatcher.inbox import files as aq  # noqa: E402
from dispatcher.inbox.scanner import clear_cache, run_scan  # noqa: E402
from dispatcher.testing import FAKE_AGENT_COMMAND

REDIS_URL = "redis://127.0.0.1:6379/11"
PROJECTS = ("alpha", "beta", "gamma")


# -- helpers ----------------------------------------------------------------------

def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def ms(x: float) -> str:
    if x != x:  # nan
        return "n/a"
    if x >= 10:
        return f"{x:,.1f} s"
    if x >= 1:
        return f"{x * 1000:,.0f} ms"
    if x >= 0.001:
        return f"{x * 1000:.2f} ms"
    return f"{x * 1e6:.0f} µs"


def read_log(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # a line being written
    return out


def received(log: Path) -> dict[str, float]:
    """``project:id`` → receive time of each task message (the fake agent's clock)."""
    out: dict[str, float] = {}
    for m in read_log(log):
        text = m.get("text", "")
        if m.get("event") == "message" and text.startswith("[") and ".md]" in text:
            out.setdefault(f"{Path(m['cwd']).name}:{text[1:text.index('.md]')]}", m["time"])
    return out


def write_task(settings: Settings, project: str, task_id: str) -> float:
    """Create a task file atomically; return the time it appeared."""
    proj = aq.project(settings.projects_dir, project)
    aq.ensure_dirs(proj)
    text = render_task(title=task_id, body=f"Work on {task_id}.\n@fake: done")
    aq.write_task_atomically(proj, task_id, text)
    return time.time()


# -- floors -------------------------------------------------------------------------

def floor_inotify(tmp: Path, n: int = 30) -> float:
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    d = tmp / "inotify"
    d.mkdir()
    seen: dict[str, float] = {}
    cond = threading.Condition()

    class H(FileSystemEventHandler):
        def on_created(self, event: Any) -> None:
            with cond:
                seen.setdefault(os.path.basename(event.src_path), time.perf_counter())
                cond.notify_all()

    obs = Observer()
    obs.schedule(H(), str(d), recursive=True)
    obs.start()
    try:
        time.sleep(0.2)
        lat = []
        for i in range(n):
            name = f"f{i}.md"
            t0 = time.perf_counter()
            with open(d / name, "w") as fh:
                fh.write("x")
            with cond:
                cond.wait_for(lambda: name in seen, timeout=5)  # noqa: B023 (called here)
            if name in seen:
                lat.append(seen[name] - t0)
            time.sleep(0.01)
    finally:
        obs.stop()
        obs.join(5)
    return statistics.median(lat) if lat else float("nan")


def floor_redis(r: redis.Redis[str], n: int = 500) -> float:
    r.ping()
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        r.ping()
        lat.append(time.perf_counter() - t0)
    return statistics.median(lat)


def floor_tmux(t: Tmux, n: int = 30) -> float:
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        t.run("display-message", "-p", "x")
        lat.append(time.perf_counter() - t0)
    return statistics.median(lat)


def floor_celery(n: int = 30) -> tuple[float, str]:
    """Round trip of a no-op task through a real (in-thread, solo) worker on Redis DB 11."""
    try:
        from celery import Celery
        from celery.contrib.testing.worker import start_worker
    except ImportError as exc:
        return float("nan"), f"celery missing: {exc}"
    app = Celery("aqbench", broker=REDIS_URL, backend=REDIS_URL)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                    worker_prefetch_multiplier=1, broker_connection_retry_on_startup=True)

    @app.task(name="aqbench.noop")
    def noop() -> int:
        return 1

    lat = []
    try:
        with start_worker(app, pool="solo", concurrency=1, perform_ping_check=False, loglevel="ERROR",
                          shutdown_timeout=10):
            noop.delay().get(timeout=20)  # warm up
            for _ in range(n):
                t0 = time.perf_counter()
                noop.delay().get(timeout=20)
                lat.append(time.perf_counter() - t0)
    except Exception as exc:  # optional floor: report, do not fail the run
        return float("nan"), f"{type(exc).__name__}: {exc}"[:80]
    return statistics.median(lat), ""


# -- (a)/(b): the inline dispatcher ------------------------------------------------------

class Timed:
    """Wraps the real launcher to record when each launch call started and returned."""

    def __init__(self, inner: Callable[[LaunchSpec], None]) -> None:
        self.inner = inner
        self.calls: dict[str, tuple[float, float]] = {}

    def __call__(self, spec: LaunchSpec) -> None:
        t0 = time.time()
        try:
            self.inner(spec)
        finally:
            self.calls[f"{spec.task.project}:{spec.task.id}"] = (t0, time.time())


def drive(disp: Dispatcher, settings: Settings, log: Path, ids: list[tuple[str, str]], *, window: int | None,
          timeout: float) -> tuple[dict[str, float], dict[str, float], dict[str, float], float]:
    """Write the tasks (all at once, or keeping ``window`` outstanding) and run fan_out + monitor_all
    until every one is in done/. Returns created, received, finished-seen times and the end time."""
    created: dict[str, float] = {}
    finished: dict[str, float] = {}
    todo = list(ids)
    deadline = time.monotonic() + timeout
    if window is None:
        for proj, tid in todo:
            created[f"{proj}:{tid}"] = write_task(settings, proj, tid)
        todo = []
    while len(finished) < len(ids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out: {len(finished)}/{len(ids)} tasks done")
        while todo and window is not None and len(created) - len(finished) < window:
            proj, tid = todo.pop(0)
            created[f"{proj}:{tid}"] = write_task(settings, proj, tid)
        monitor_all(disp)
        for key in created:
            if key not in finished:
                proj, tid = key.split(":")
                if (aq.project(settings.projects_dir, proj).done / f"{tid}.md").exists():
                    finished[key] = time.time()
        disp.fan_out()
        time.sleep(0.005)
    return created, received(log), finished, time.time()


def start_watcher(settings: Settings, r: redis.Redis[str]) -> Callable[[], None]:
    """The real file watcher, recording what inbox_event records (the writer is done): files written
    atomically are dispatched at once instead of waiting ``settle_time``. Returns a stop function."""
    from dispatcher.inbox import watcher
    from dispatcher.inbox.inbox_path import parse_inbox_path
    from dispatcher.store import settle

    def on_task(path: str, closed: Any) -> None:
        ident = settle.parse_identity(closed)
        if ident is not None:
            project, task_id = parse_inbox_path(settings.projects_dir, path)
            settle.record_closed(r, project, f"{task_id}.md", ident, settings.settle_time)

    stop = threading.Event()
    started = threading.Event()
    th = threading.Thread(target=watcher.run, args=(settings.projects_dir, on_task, started.set),
                          kwargs={"stop": stop}, daemon=True)
    th.start()
    started.wait(30)

    def halt() -> None:
        stop.set()
        th.join(timeout=10)

    return halt


def settle_costs(r: redis.Redis[str], n: int = 2000) -> tuple[float, float]:
    """Median cost of the settle bookkeeping on an atomic file's path: the record (inbox_event) and the
    lookup (each plan pass while a file is fresh)."""
    from dispatcher.store import settle

    rec, look = [], []
    for i in range(n):
        t0 = time.perf_counter()
        settle.record_closed(r, "bench", f"c{i}.md", (i, time.time_ns(), 10), 2.0)
        t1 = time.perf_counter()
        settle.closed_files(r, [("bench", f"c{i}.md")])
        look.append(time.perf_counter() - t1)
        rec.append(t1 - t0)
    return statistics.median(rec), statistics.median(look)


# -- reference replay -------------------------------------------------------------------

def reference(t: Tmux, tmp: Path, n: int, width: int, height: int) -> tuple[list[float], list[float], list[float]]:
    """Replay the Go dispatcher's launch path; returns ready→submitted, total, and cd→ready lists."""
    log = tmp / "ref-agents.jsonl"
    proj = tmp / "refproj"
    proj.mkdir()
    env = f"FAKE_AGENT_LOG={shlex.quote(str(log))} FAKE_AGENT_BUSY_MS=50 PYTHONPATH={shlex.quote(str(ROOT))}"
    cmd = f"{env} {sys.executable} -m dispatcher.testing.fake_agent --model sonnet --dangerously-skip-permissions"
    r2s, total, boot = [], [], []
    for i in range(n):
        name = f"ref-{i}"
        # A clean shell: the login rc of this machine runs `pyenv rehash`, which can hang for seconds.
        t.new_session(name, width=width, height=height, cwd=str(tmp), command=["bash", "--norc", "--noprofile"],
                      env={"PS1": "$ "})
        time.sleep(0.3)  # let the shell draw its prompt (not counted)
        t0 = time.time()
        t.send_literal(name, f"cd {shlex.quote(str(proj))}")
        t.send_keys(name, "Enter")
        time.sleep(0.3)
        t.send_literal(name, cmd)
        t.send_keys(name, "Enter")
        ready = None
        for _ in range(30):
            time.sleep(1.0)
            if "❯" in t.capture(name):
                ready = time.time()
                break
        if ready is None:
            raise RuntimeError("reference replay: no prompt after 30 s")
        tag = f"ref{i}"
        t.send_literal(name, f"[{tag}.md] Work on {tag}.")
        time.sleep(0.5)
        t.send_keys(name, "Enter")
        got = None
        deadline = time.monotonic() + 10
        while got is None and time.monotonic() < deadline:
            got = received(log).get(f"refproj:{tag}")
            time.sleep(0.005)
        if got is None:
            raise RuntimeError("reference replay: message never received")
        r2s.append(got - ready)
        total.append(got - t0)
        boot.append(ready - t0)
        t.kill_session(name)
    return r2s, total, boot


# -- (c): scan -------------------------------------------------------------------------

FRONT = b"---\ntitle: t\npriority: default\n---\n\nBenchmark task.\n"


def make_tree(root: Path, projects: int, pending: int) -> None:
    for p in range(projects):
        inbox = root / f"p{p:03d}" / ".agent-queue" / "inbox"
        inbox.mkdir(parents=True)
        (inbox.parent / "done").mkdir()
        for i in range(pending):
            fd = os.open(inbox / f"t{i:05d}.md", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, FRONT)
            os.close(fd)


def add_done(root: Path, projects: int, total: int) -> None:
    per = total // projects
    for p in range(projects):
        done = root / f"p{p:03d}" / ".agent-queue" / "done"
        for i in range(per):
            fd = os.open(done / f"d{i:05d}.md", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, FRONT)
            os.close(fd)


def time_scan(settings: Settings, runs: int) -> tuple[float, float, int]:
    """(first scan: every file parsed, best later scan: parse cache warm, eligible count)."""
    times, eligible = [], 0
    clear_cache()
    for _ in range(runs):
        t0 = time.perf_counter()
        plan = run_scan(settings, now=time.time() + 3600, write=False)
        times.append(time.perf_counter() - t0)
        eligible = len(plan.eligible)
    return times[0], min(times[1:] or times), eligible


# -- main ---------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="scan 20 × 500 (+1,000 done) instead of 100 × 1,000 (+10,000)")
    ap.add_argument("--ref-launches", type=int, default=5)
    args = ap.parse_args()

    n_proj, n_pend, n_done = (20, 500, 1000) if args.quick else (100, 1000, 10000)
    tmp = Path(tempfile.mkdtemp(prefix="aqbench-"))
    socket = f"aqbench-{uuid.uuid4().hex[:10]}"
    r = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    r.flushdb()
    os.environ["REDIS_URL"] = REDIS_URL
    log = tmp / "agents.jsonl"
    (tmp / "projects").mkdir()
    settings = Settings(
        projects_dir=tmp / "projects",
        pool=PoolSettings(prefix="ccl-auto-", start_index=0, max=args.sessions, cooldown=300.0),
        tmux=TmuxSettings(socket_name=socket),
        agent=AgentSettings(command=FAKE_AGENT_COMMAND, prompt_timeout=20.0, submit_timeout=6.0, submit_retries=3,
                            resume_dir=tmp / "resume",
                            env={"FAKE_AGENT_LOG": str(log), "FAKE_AGENT_BUSY_MS": "0"}),
        state_dir=tmp / "state",
        finish_grace=2.0,
        redis_url=REDIS_URL,
    )
    t = Tmux(socket)
    rows: list[tuple[str, str, str]] = []
    notes: list[str] = []
    t_start = time.monotonic()
    try:
        pool.create(t, settings.pool, cwd=settings.projects_dir)

        def say(msg: str) -> None:
            print(f"[{time.monotonic() - t_start:6.1f}s] {msg}", file=sys.stderr, flush=True)

        # floors
        say("floors")
        f_inotify = floor_inotify(tmp)
        f_redis = floor_redis(r)
        f_tmux = floor_tmux(t)
        f_celery, celery_why = floor_celery()
        r.flushdb()

        launcher = Timed(runtime.agent_launcher(settings, r, t))
        disp = Dispatcher(Ports(settings, r, t, launcher))
        stop_watcher = start_watcher(settings, r)
        m = args.tasks

        # (a) steady: at most N outstanding
        say(f"steady: {m} tasks, {args.sessions} sessions")
        ids = [(PROJECTS[i % 3], f"s{i:04d}") for i in range(m)]
        c1, rx1, _f1, _ = drive(disp, settings, log, ids, window=args.sessions, timeout=60 + 6 * m)
        steady = [rx1[k] - c1[k] for k in c1 if k in rx1]
        launch_total = [rx1[k] - launcher.calls[k][0] for k in c1 if k in rx1 and k in launcher.calls]
        to_launch = [launcher.calls[k][0] - c1[k] for k in c1 if k in launcher.calls]

        # (b) burst: all M at once
        say(f"burst: {m} tasks, {args.sessions} sessions")
        ids = [(PROJECTS[i % 3], f"b{i:04d}") for i in range(m)]
        c2, rx2, f2, _end = drive(disp, settings, log, ids, window=None, timeout=60 + 6 * m)
        burst = [rx2[k] - c2[k] for k in c2 if k in rx2]
        t_first = min(c2.values())
        t_last = max(f2.values())
        thr = m / (t_last - t_first)
        stop_watcher()
        f_record, f_lookup = settle_costs(r)
        launch_total += [rx2[k] - launcher.calls[k][0] for k in c2 if k in rx2 and k in launcher.calls]

        # reference replay
        say(f"reference replay: {args.ref_launches} launches")
        ref_r2s, ref_total, ref_boot = reference(t, tmp, args.ref_launches, settings.pool.width, settings.pool.height)
        ref_thr = args.sessions / statistics.mean(ref_total)  # N sessions, each launch back to back, agent at once

        # (c) scan
        say(f"scan: generating {n_proj} × {n_pend} files")
        scan_root = tmp / "scan"
        g0 = time.perf_counter()
        make_tree(scan_root, n_proj, n_pend)
        gen = time.perf_counter() - g0
        ssettings = Settings(projects_dir=scan_root, state_dir=tmp / "state2", redis_url=REDIS_URL)
        say(f"scan: generated in {gen:.1f}s; scanning")
        scan1, warm1, elig1 = time_scan(ssettings, 3)
        add_done(scan_root, n_proj, n_done)
        say("scan: with done files")
        scan2, warm2, elig2 = time_scan(ssettings, 3)

        # table
        N = args.sessions
        rows.append(("(a) dispatch overhead, steady (≤N in flight) p50", ms(pct(steady, 50)),
                     f"ref launch total p50 {ms(pct(ref_total, 50))} "
                     f"→ ×{pct(ref_total, 50) / pct(steady, 50):.1f} faster"))
        rows.append(("(a) dispatch overhead, steady p99", ms(pct(steady, 99)),
                     f"ref launch total max {ms(max(ref_total))}"))
        rows.append(("(a) file→submitted, burst (incl. queueing) p50", ms(pct(burst, 50)),
                     f"{m} files at once, {N} sessions"))
        rows.append(("(a) file→submitted, burst p99", ms(pct(burst, 99)), ""))
        rows.append(("    steady: file created→launch call (loop+scan+claim) p50", ms(pct(to_launch, 50)), ""))
        rows.append(("    launch call→submitted (driver only) p50", ms(pct(launch_total, 50)),
                     f"ref cd→submitted p50 {ms(pct(ref_total, 50))}"))
        rows.append(("(b) throughput, burst, agents finish at once", f"{thr:.2f} tasks/s",
                     f"ref ≈ {ref_thr:.2f} tasks/s (N / launch total) → ×{thr / ref_thr:.1f}"))
        scan_note = " (--quick)" if args.quick else ""
        rows.append((f"(c) full scan {n_proj}×{n_pend:,} pending{scan_note}", ms(scan1),
                     f"{scan1 / (n_proj * n_pend) * 1e6:.0f} µs/file, {elig1:,} eligible"))
        rows.append((f"(c) same, repeated (parse cache warm){scan_note}", ms(warm1),
                     f"{warm1 / (n_proj * n_pend) * 1e6:.0f} µs/file: listing + stat only"))
        rows.append((f"(c) full scan + {n_done:,} done files{scan_note}", ms(scan2),
                     f"{elig2:,} eligible; files made in {gen:.1f} s"))
        rows.append((f"(c) same, repeated (parse cache warm){scan_note}", ms(warm2), ""))
        rows.append(("floor: inotify event (watchdog create→handler) p50", ms(f_inotify), ""))
        rows.append(("floor: Redis round trip (PING) p50", ms(f_redis), ""))
        rows.append(("settle: record a closed/moved file (inbox_event) p50", ms(f_record),
                     "added to an atomic file's path, once"))
        rows.append(("settle: look up fresh files (each plan pass) p50", ms(f_lookup),
                     "added while a file is fresh; no call otherwise"))
        rows.append(("floor: tmux call (display-message -p) p50", ms(f_tmux), ""))
        rows.append(("floor: Celery round trip (delay→get, solo) p50", ms(f_celery),
                     celery_why or "in-thread worker, Redis broker+backend"))
        rows.append(("ref: Go launch path ready→submitted p50", ms(pct(ref_r2s, 50)),
                     "fixed 500 ms sleep + Enter"))
        rows.append(("ref: Go launch path cd→ready(seen) p50", ms(pct(ref_boot, 50)),
                     "300 ms sleep + 1 s prompt polling"))
        rows.append(("ref: Go launch path total (cd→submitted) p50", ms(pct(ref_total, 50)),
                     f"{len(ref_total)} launches, min {ms(min(ref_total))} max {ms(max(ref_total))}"))
        if len(steady) < m or len(burst) < m:
            notes.append(f"only {len(steady)}+{len(burst)} of {m}+{m} messages seen in the agent log")
    finally:
        try:
            t.kill_server()
        except Exception:
            pass
        r.flushdb()
        r.close()
        shutil.rmtree(tmp, ignore_errors=True)

    w0 = max(len(a) for a, _, _ in rows)
    w1 = max(len(b) for _, b, _ in rows)
    head = (f"agent-queue dispatch benchmark — {time.strftime('%Y-%m-%d %H:%M')} — {platform.node()} "
            f"({os.cpu_count()} cores, Python {platform.python_version()}) — N={args.sessions} sessions, "
            f"M={args.tasks} tasks × 2 phases, 3 projects, fake agent")
    print(head)
    print(f"{'measure':<{w0}}  {'value':>{w1}}  floor / reference")
    print(f"{'-' * w0}  {'-' * w1}  {'-' * 40}")
    for a, b, c in rows:
        print(f"{a:<{w0}}  {b:>{w1}}  {c}")
    for n in notes:
        print("note:", n)
    print(f"(run took {time.monotonic() - t_start:.0f} s)")


if __name__ == "__main__":
    main()
