"""Issue 13 in one table: every goal beside the floor measured in the same run.

    python bench/dispatch.py [--redis URL] [--quick] [--sessions 16] [--workers 2] [--hooks on off]
                             [--skip assign scan hook]

Goals 3 and 4 (dispatch overhead, throughput, dispatcher CPU) run through the REAL path, the one
``dispatcher up`` runs: the file watcher (``dispatcher watch``) → ``inbox_event`` on a real Celery
worker process → ``assign_next`` (fan-out) on the host's worker(s) → the launcher starts the fake
agent in a pane of a private tmux server and submits the message. One beat schedules the monitor
passes and scans (``dispatcher.testing.fleet``: a simulated host, its own tmux server and state dir).

- overhead (goal 3): one task at a time (the next file when the previous one is done); time =
  file created (after the atomic rename) → the fake agent logs the message as submitted, minus the
  agent's own start-up (its exec, stamped by a ``bash`` wrapper with ``$EPOCHREALTIME`` → its prompt
  drawn: interpreter start, imports, first screen), which is not the dispatcher's. Split into: file →
  agent exec (watcher, Celery, assign_next, claim, respawn) and prompt drawn → message submitted
  (the launcher's wait for the prompt, paste, Enter).
- throughput (goal 4): a burst of files, all written at once, agents finish at once (``@fake: done``,
  no busy time): tasks / (first file created → last task in done/), with ``--sessions`` pool sessions.
- dispatcher CPU per dispatch (goal 4): user + system CPU of the worker, watcher and beat processes
  (and their reaped children: the tmux clients they run) over the burst, / tasks. The agents, their
  hooks and the tmux server are counted apart (the agent's side).
- hooks on and off: with hooks, the fake agent runs the real hook commands (SessionStart,
  UserPromptSubmit, ...) and the launcher waits for the UserPromptSubmit report as the proof.
- goals 1, 6 (bench/assign.py), 2 (bench/scan.py) and the hook call of goal 4 (bench/hook.py) are
  called in the same run (``--quick``: their small sizes), unless ``--skip``-ped.

Floors, same run: inotify event (watchdog create → handler), Celery round trip (delay → result
through a worker in a thread, same Redis), tmux call (``display-message -p``), Redis PING.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for p in (str(ROOT), str(ROOT / "bench")):
    if p not in sys.path:
        sys.path.insert(0, p)

import common  # noqa: E402
from common import Row, ms, pct, say  # noqa: E402

from dispatcher.agent.tmux import Tmux  # noqa: E402
from dispatcher.core.taskfile import render_task  # noqa: E402
from dispatcher.inbox import files as aq  # noqa: E402
from dispatcher.store import hosts as fleet_hosts  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/11"
PROJECTS = ("alpha", "beta", "gamma", "delta")

#: The fake agent behind a bash wrapper that stamps its exec time (the agent's start-up is not ours).
AGENT_COMMAND = ("bash -c 'export FAKE_AGENT_EXEC=$EPOCHREALTIME; exec \"$0\" -m dispatcher.testing.fake_agent "
                 "\"$@\"' " + shlex.quote(sys.executable) + " --model {model} --dangerously-skip-permissions {resume}")


# -- floors -------------------------------------------------------------------------------------

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


def floor_redis(r: Any, n: int = 500) -> float:
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


def floor_celery(url: str, n: int = 30) -> tuple[float, str]:
    """Round trip of a no-op task through a real (in-thread, solo) worker on the bench's Redis."""
    try:
        from celery import Celery
        from celery.contrib.testing.worker import start_worker
    except ImportError as exc:
        return float("nan"), f"celery missing: {exc}"
    app = Celery("aqbench", broker=url, backend=url)
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


# -- the real path ------------------------------------------------------------------------------

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


def task_of(entry: dict[str, Any]) -> str | None:
    """``project:id`` of a task message (not the resume's "continue")."""
    text = entry.get("text", "")
    if entry.get("event") == "message" and text.startswith("[") and ".md]" in text:
        return f"{Path(entry['cwd']).name}:{text[1:text.index('.md]')]}"
    return None


def timeline(log: Path) -> dict[str, dict[str, float]]:
    """Per task: the agent's exec, ready (prompt drawn), message (submitted) and done times."""
    by_agent: dict[str, dict[str, float]] = {}
    out: dict[str, dict[str, float]] = {}
    for e in read_log(log):
        sid = e.get("session_id", "")
        ev = e.get("event")
        if ev == "start":
            by_agent[sid] = {"exec": float(e.get("exec_time") or e["time"]), "start": e["time"]}
        elif ev == "ready" and sid in by_agent:
            by_agent[sid]["ready"] = e["time"]
        elif ev == "message":
            key = task_of(e)
            if key is not None and key not in out:
                out[key] = {**by_agent.get(sid, {}), "message": e["time"]}
        elif ev == "done" and e.get("task"):
            key = f"{Path(e['cwd']).name}:{e['task']}"
            out.setdefault(key, {})["done"] = e["time"]
    return out


def write_task(projects: Path, project: str, task_id: str) -> float:
    """Create a task file atomically (temp file + rename); return the time it appeared."""
    proj = aq.project(projects, project)
    aq.ensure_dirs(proj)
    aq.write_task_atomically(proj, task_id, render_task(title=task_id, body=f"Work on {task_id}.\n@fake: done"))
    return time.time()


def wait_until(pred: Callable[[], bool], timeout: float, what: str, poll: float = 0.01) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(poll)


def dispatcher_cpu(pids: list[int]) -> float:
    return sum(common.cpu_seconds(pid, children=True) for pid in pids)


def run_path(td: common.Teardown, url: str, *, hooks: bool, sessions: int, workers: int, latency_tasks: int,
             burst_tasks: int, startup_lock: bool, monitor_interval: float) -> dict[str, Any]:
    """One simulated host on the real path; the overhead phase, then the burst."""
    from dispatcher.testing.fleet import SimHost, start_beat, start_watcher

    work = td.tmpdir(f"aqdispatch-{'hooks' if hooks else 'nohooks'}-")
    projects = work / "projects"
    projects.mkdir()
    log = work / "agents.jsonl"
    r = td.redis_db(url)
    name = f"bench-{'hooks' if hooks else 'nohooks'}"
    host = SimHost(name=name, root=work / "host", projects_dir=projects, redis_url=url, agent_log=log,
                   sessions=sessions, lost_after=30.0, workers=workers,
                   agent={"command": AGENT_COMMAND, "hooks": hooks, "startup_lock": startup_lock,
                          "env": {"FAKE_AGENT_LOG": str(log), "FAKE_AGENT_BUSY_MS": "0"}},
                   extra={"scan_interval": 60, "monitor_interval": monitor_interval, "finish_grace": 5})
    td.tmux_server(host.socket)
    host.start()
    td.add("stop host", host.stop)
    beat = td.process(start_beat(host))
    watcher = td.process(start_watcher(host))
    wait_until(lambda: len(fleet_hosts.read_all(r)) == 1, 60, "the worker's heartbeat", poll=0.05)
    # Warm up (not measured): the first dispatch builds the ready index with a full scan, imports, connects.
    for i in range(min(sessions, 4)):
        write_task(projects, PROJECTS[i % len(PROJECTS)], f"warm{i}")
    wait_until(lambda: sum(1 for v in timeline(log).values() if "done" in v) >= min(sessions, 4), 120, "warm-up")
    time.sleep(1.0)  # every session free again (a done file queues a monitor pass at once)

    # goal 3: one at a time
    created: dict[str, float] = {}
    for i in range(latency_tasks):
        key = (PROJECTS[i % len(PROJECTS)], f"L{i:04d}")
        created[f"{key[0]}:{key[1]}"] = write_task(projects, *key)
        wait_until(lambda: "done" in timeline(log).get(f"{key[0]}:{key[1]}", {}), 60,  # noqa: B023
                   f"task {key} done")
        time.sleep(0.05)  # the agent's exit and the next monitor pass are not what is measured
    tl = timeline(log)
    lat = {k: tl[k]["message"] - c for k, c in created.items() if "message" in tl.get(k, {})}
    own = {k: tl[k]["ready"] - tl[k]["exec"] for k in lat if "ready" in tl[k] and "exec" in tl[k]}
    to_exec = [tl[k]["exec"] - created[k] for k in own]
    ready_to_msg = [tl[k]["message"] - tl[k]["ready"] for k in own]
    overhead = [lat[k] - own[k] for k in own]

    # goal 4: a burst, agents finish at once
    time.sleep(1.0)
    pids = [p.pid for p in host.procs] + [beat.pid, watcher.pid]
    tmux_pid = int(host.tmux.run("display-message", "-p", "#{pid}").strip())
    cpu0, agent0, wall0 = dispatcher_cpu(pids), common.cpu_seconds(tmux_pid, children=True), time.perf_counter()
    by0 = [common.cpu_seconds(pid, children=True) for pid in pids]
    spies = []
    if os.environ.get("AQBENCH_PROFILE"):  # py-spy on every dispatcher process during the burst (flame data)
        import subprocess

        out = Path(os.environ["AQBENCH_PROFILE"])
        out.mkdir(parents=True, exist_ok=True)
        spies = [subprocess.Popen(["py-spy", "record", "--format", "raw", "-r", "200", "-s", "-o",
                                   str(out / f"{'nohooks' if not hooks else 'hooks'}-{i}-{pid}.txt"), "-p", str(pid)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i, pid in enumerate(pids)]
    bcreated: dict[str, float] = {}
    for i in range(burst_tasks):
        proj = PROJECTS[i % len(PROJECTS)]
        bcreated[f"{proj}:B{i:04d}"] = write_task(projects, proj, f"B{i:04d}")
    wait_until(lambda: all("done" in timeline(log).get(k, {}) for k in bcreated), 60 + 2 * burst_tasks,
               "the burst done", poll=0.05)
    tl = timeline(log)
    cpu = dispatcher_cpu(pids) - cpu0
    by = [common.cpu_seconds(pid, children=True) - b for pid, b in zip(pids, by0)]
    for spy in spies:
        spy.send_signal(2)
        spy.wait(30)
    agents_cpu = common.cpu_seconds(tmux_pid, children=True) - agent0
    wall = time.perf_counter() - wall0
    first, last = min(bcreated.values()), max(tl[k]["done"] for k in bcreated)
    delivered = [e for e in read_log(log) if task_of(e)]
    counts: dict[str, int] = {}
    for e in delivered:
        key = task_of(e)
        assert key is not None
        counts[key] = counts.get(key, 0) + 1
    twice = sorted(k for k, n in counts.items() if n > 1)
    return {"lat": list(lat.values()), "overhead": overhead, "own": list(own.values()), "to_exec": to_exec,
            "ready_to_msg": ready_to_msg, "throughput": burst_tasks / (last - first), "burst": burst_tasks,
            "cpu_per": cpu / burst_tasks, "agents_cpu_per": agents_cpu / burst_tasks, "burst_wall": wall,
            "twice": twice, "n_lat": len(lat),
            "cpu_by": ", ".join(f"{name} {ms(c / burst_tasks)}" for name, c in
                                zip([f"worker{i}" for i in range(len(host.procs))] + ["beat", "watcher"], by))}


# -- the other goals' benches (called, their tables merged) -----------------------------------------

def other_rows(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    quick = ["--quick"] if args.quick else []
    if "assign" not in args.skip:
        import assign

        say("goals 1, 6: bench/assign.py")
        for measure, value, note in assign.main(["--redis", args.redis, *quick]):
            goal = ""
            if measure.startswith("after: assign_next CPU"):
                goal = "≤ 5 ms p50 at any size"
            elif measure.startswith("worker RSS"):
                goal = "≤ 150 MB"
            rows.append((f"[1,6] {measure}", value, goal, note))
    if "scan" not in args.skip:
        import scan

        say("goal 2: bench/scan.py")
        sizes = ["20x500"] if args.quick else ["100x1000"]
        for measure, value, ratio, note in scan.main(["--redis", args.redis, "--sizes", *sizes, "--runs",
                                                      "1" if args.quick else "3"]):
            goal = ""
            if "run_scan cold" in measure:
                goal = "100×1,000 ≤ 2 s"
            elif "run_scan warm" in measure:
                goal = "100×1,000 ≤ 0.5 s"
            elif "scan --dry-run" in measure:
                goal = "≤ ×5 the floor"
            rows.append((f"[2] {measure}", value, goal, f"{ratio} {note}".strip()))
    if "hook" not in args.skip:
        import hook

        say("goal 4: bench/hook.py")
        for measure, p50, p99, vs in hook.main(["--redis", args.redis, "--calls", "20" if args.quick else "100"]):
            goal = "≤ 30 ms wall" if measure.startswith("hook call") else ""
            rows.append((f"[4] {measure} p50", p50, goal, f"p99 {p99} {vs}".strip()))
    return rows


# -- main ---------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_redis_arg(ap, REDIS_URL)
    ap.add_argument("--sessions", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2, help="solo worker processes (dispatcher up --workers)")
    ap.add_argument("--latency-tasks", type=int, default=40)
    ap.add_argument("--burst-tasks", type=int, default=96)
    ap.add_argument("--hooks", nargs="+", choices=["on", "off"], default=["off", "on"])
    ap.add_argument("--startup-lock", choices=["on", "off"], default="off",
                    help="agent.startup_lock (host-wide start-up lock; see docs/decisions.md)")
    ap.add_argument("--monitor-interval", type=float, default=5.0,
                    help="monitor_interval (the default; a task reaching done/ queues a pass at once)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["assign", "scan", "hook", "path"])
    ap.add_argument("--quick", action="store_true", help="fewer tasks, small trees: ≤ 2 minutes")
    args = ap.parse_args(argv)
    if args.quick:
        args.latency_tasks, args.burst_tasks = min(args.latency_tasks, 15), min(args.burst_tasks, 48)
    rows: list[Row] = []
    notes: list[str] = []
    t_start = time.monotonic()
    with common.Teardown() as td:
        tmp = td.tmpdir("aqbench-floors-")
        r = td.redis_db(args.redis)
        socket = f"aqbench-{os.getpid()}"
        td.tmux_server(socket)
        t = Tmux(socket)
        t.run("new-session", "-d", "-s", "floor")
        say("floors")
        f_inotify, f_redis, f_tmux = floor_inotify(tmp), floor_redis(r), floor_tmux(t)
        f_celery, celery_why = floor_celery(args.redis)
        r.flushdb()
        floors = (f"floors: inotify {ms(f_inotify)}, Celery round trip {ms(f_celery)}, "
                  f"tmux call {ms(f_tmux)}, Redis {ms(f_redis)}")
        results = {}
        if "path" not in args.skip:
            for mode in args.hooks:
                say(f"real path, hooks {mode}: {args.sessions} sessions, {args.workers} worker(s)")
                with common.Teardown() as run_td:  # each mode's host stopped before the next starts
                    results[mode] = run_path(run_td, args.redis, hooks=mode == "on", sessions=args.sessions,
                                             workers=args.workers, latency_tasks=args.latency_tasks,
                                             burst_tasks=args.burst_tasks, startup_lock=args.startup_lock == "on",
                                             monitor_interval=args.monitor_interval)
        for mode, res in results.items():
            tag = f"[3] hooks {mode}:"
            rows.append((f"{tag} file → submitted, above the agent's own, p50", ms(pct(res["overhead"], 50)),
                         "≤ 25 ms", floors))
            rows.append((f"{tag} same, p99", ms(pct(res["overhead"], 99)), "≤ 100 ms",
                         f"{res['n_lat']} tasks one at a time"))
            rows.append((f"{tag}   file → submitted (all) p50", ms(pct(res["lat"], 50)), "",
                         f"p99 {ms(pct(res['lat'], 99))}"))
            rows.append((f"{tag}   agent's own start (exec → prompt) p50", ms(pct(res["own"], 50)), "",
                         "not the dispatcher's"))
            rows.append((f"{tag}   file → agent exec p50", ms(pct(res["to_exec"], 50)), "",
                         f"p99 {ms(pct(res['to_exec'], 99))}; watcher, Celery, assign_next, respawn"))
            rows.append((f"{tag}   prompt drawn → submitted p50", ms(pct(res["ready_to_msg"], 50)), "",
                         f"p99 {ms(pct(res['ready_to_msg'], 99))}; prompt seen, paste, Enter"))
        for mode, res in results.items():
            tag = f"[4] hooks {mode}:"
            ceiling = (os.cpu_count() or 1) / (res["cpu_per"] + res["agents_cpu_per"])
            rows.append((f"{tag} throughput, burst, agents finish at once", f"{res['throughput']:.1f} tasks/s",
                         "≥ 20 tasks/s", f"CPU ceiling {ceiling:.1f} tasks/s (cores / dispatcher + agent CPU per "
                         f"task); {res['burst']} files, {args.sessions} sessions, {args.workers} workers"))
            rows.append((f"{tag} dispatcher CPU per dispatch", ms(res["cpu_per"]), "≤ 10 ms",
                         f"per process: {res['cpu_by']} (+ their tmux clients)"))
            rows.append((f"{tag}   agent side CPU per task", ms(res["agents_cpu_per"]), "",
                         "fake agent + its hooks + tmux server"))
            if res["twice"]:
                notes.append(f"hooks {mode}: delivered more than once: {res['twice'][:5]}")
        rows.append(("floor: inotify event (watchdog create → handler) p50", ms(f_inotify)))
        rows.append(("floor: Celery round trip (delay → result) p50", ms(f_celery), "",
                     celery_why or "worker in a thread, solo, same Redis"))
        rows.append(("floor: tmux call (display-message -p) p50", ms(f_tmux)))
        rows.append(("floor: Redis round trip (PING) p50", ms(f_redis)))
    rows += other_rows(args)
    if argv is None:
        common.print_table(common.header("agent-queue issue 13 benchmark",
                                         f"fake agent, {args.sessions} sessions, {args.workers} workers, "
                                         f"startup lock {args.startup_lock}, monitor every {args.monitor_interval} s"),
                           rows, notes=notes)
        print(f"(run took {time.monotonic() - t_start:.0f} s; load average now {common.load()})")
    return rows


if __name__ == "__main__":
    main()
