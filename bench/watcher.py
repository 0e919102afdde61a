"""The file watcher's cost while agents work: start-up over a big projects tree, CPU per 1,000 files the agents
write in their projects, CPU and latency per task file.

``python bench/watcher.py [--projects 20] [--dirs 500] [--files 20000] [--tasks 200] [--polling]``

The watcher (``dispatcher.inbox.watcher.run``, what ``dispatcher watch`` runs) runs in a child process whose
callbacks print one line per event; the parent makes a projects tree of ``--projects`` projects, each with
inbox/, done/ and a source tree of ``--dirs`` directories (a checkout with node_modules, say), then:

1. start-up: spawn → the watcher's first rescan request (its observer is up), and the CPU it took;
2. agents at work: ``--files`` source files created, written and closed across the source trees, then one
   sentinel task file; the watcher's CPU until it reports the sentinel, per 1,000 source files;
3. tasks: ``--tasks`` task files written one at a time (atomic rename, as ``dispatcher submit`` does), each
   waited for: the watcher's CPU per task, and write → report latency.

Floors in the same run: the writer's own CPU for the same source files (what the agents' writes cost the
machine anyway), and an interpreter that imports the watcher and exits (the start-up floor).
4. a task's whole life as the watcher sees it (written, claimed, dispatched, moved to done/) with the two
   Celery messages ``dispatcher watch`` sends for it, published to ``--redis`` (flushed; nothing consumes them).

No worker or tmux: the watcher alone.
"""

from __future__ import annotations

import argparse
import os
import select
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Row, Teardown, add_redis_arg, cpu_seconds, header, ms, pct, print_table, say  # noqa: E402

CHILD = r"""
import os, sys, threading
from pathlib import Path
from dispatcher.inbox.watcher import run
out = sys.stdout
lock = threading.Lock()
send = lambda name, args: None
if sys.argv[3]:  # also send the Celery messages `dispatcher watch` sends (nobody consumes them here)
    os.environ["REDIS_URL"] = sys.argv[3]
    from dispatcher.celery_app import app
    send = lambda name, args: app.send_task(name, args=args, retry=False)
def emit(line):
    with lock:
        out.write(line + "\n"); out.flush()
def on_task(p, closed):
    send("inbox_event", [p, closed])
    emit("task " + p.rsplit("/", 1)[1])
def on_done(paths):
    send("monitor_sessions", [None, paths])
    emit("done %d" % len(paths))
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
run(Path(sys.argv[1]), on_task, lambda: emit("scan"), stop=stop, polling=sys.argv[2] == "1", on_done=on_done)
"""


class Watcher:
    """The watcher in a child process; ``wait_for(line)`` reads its report lines until one matches."""

    def __init__(self, projects: Path, polling: bool, redis_url: str, td: Teardown) -> None:
        self.t0 = time.monotonic()
        self.proc = td.process(subprocess.Popen(
            [sys.executable, "-c", CHILD, str(projects), "1" if polling else "0", redis_url], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, start_new_session=True, cwd=Path(__file__).resolve().parent.parent))
        assert self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()
        self._buf = b""

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def status(self, field: str) -> str:
        """A field of /proc/<pid>/status (``Threads``, ``VmRSS``)."""
        with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as fh:
            return next((line.split(":", 1)[1].strip() for line in fh if line.startswith(field + ":")), "?")

    def wait_for(self, line: str, timeout: float = 300.0) -> float:
        """Block until the child prints ``line``; the monotonic time it was read."""
        deadline = time.monotonic() + timeout
        want = line.encode()
        while True:
            while b"\n" in self._buf:
                got, self._buf = self._buf.split(b"\n", 1)
                if got == want:
                    return time.monotonic()
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise SystemExit(f"watcher never reported {line!r}")
            ready, _, _ = select.select([self._fd], [], [], left)
            if ready:
                self._buf += os.read(self._fd, 65536)


def make_tree(root: Path, projects: int, dirs: int) -> list[Path]:
    """``projects`` projects with inbox/, done/ and ``dirs`` source directories each (two levels deep)."""
    inboxes = []
    for p in range(projects):
        proj = root / f"proj{p:03d}"
        (proj / ".agent-queue" / "inbox").mkdir(parents=True)
        (proj / ".agent-queue" / "done").mkdir()
        for i in range(dirs):
            (proj / "src" / f"pkg{i // 25:03d}" / f"mod{i % 25:02d}").mkdir(parents=True)
        inboxes.append(proj / ".agent-queue" / "inbox")
    return inboxes


def write_sources(root: Path, projects: int, dirs: int, files: int) -> float:
    """``files`` small source files across the projects' trees; the writer's own CPU (the floor)."""
    c0 = time.process_time()
    for n in range(files):
        p, i = n % projects, (n // projects) % dirs
        with open(root / f"proj{p:03d}" / "src" / f"pkg{i // 25:03d}" / f"mod{i % 25:02d}" / f"f{n}.py", "w") as fh:
            fh.write("x = 1\n")
    return time.process_time() - c0


def write_task(inbox: Path, name: str) -> None:
    tmp = inbox / f".{name}.tmp"
    tmp.write_text("---\ntitle: bench\n---\nwork\n")
    os.rename(tmp, inbox / f"{name}.md")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--projects", type=int, default=20)
    ap.add_argument("--dirs", type=int, default=500, help="source directories per project")
    ap.add_argument("--files", type=int, default=20000, help="source files the agents write in all")
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--polling", action="store_true", help="the polling observer (network filesystems)")
    add_redis_arg(ap, "redis://127.0.0.1:6379/15")
    ap.add_argument("--no-celery", action="store_true", help="skip the lifecycle phase (no Redis needed)")
    args = ap.parse_args()

    with Teardown() as td:
        root = td.tmpdir("aqbench-watch-") / "projects"
        inboxes = make_tree(root, args.projects, args.dirs)
        say(f"tree: {args.projects} projects × {args.dirs} source dirs")

        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", "import dispatcher.inbox.watcher"], check=True,
                       cwd=Path(__file__).resolve().parent.parent)
        import_floor = time.monotonic() - t0

        if not args.no_celery:
            td.redis_db(args.redis)
        w = Watcher(root, args.polling, "" if args.no_celery else args.redis, td)
        ready = w.wait_for("scan") - w.t0
        start_cpu = w.cpu()
        say(f"watcher up in {ms(ready)}")

        c0 = w.cpu()
        writer_cpu = write_sources(root, args.projects, args.dirs, args.files)
        write_task(inboxes[0], "SENTINEL")
        w.wait_for("task SENTINEL.md")
        build_cpu = w.cpu() - c0
        say(f"{args.files} source files: watcher CPU {ms(build_cpu)}")

        c0 = w.cpu()
        lat = []
        for n in range(args.tasks):
            t = time.monotonic()
            write_task(inboxes[n % len(inboxes)], f"T{n}")
            lat.append(w.wait_for(f"task T{n}.md") - t)
        task_cpu = (w.cpu() - c0) / args.tasks
        threads, rss = w.status("Threads"), w.status("VmRSS")

        life_cpu = float("nan")
        if not args.no_celery:
            c0 = w.cpu()
            for n in range(args.tasks):  # a task's whole life as the watcher sees it, with the messages it sends
                inbox = inboxes[n % len(inboxes)]
                write_task(inbox, f"L{n}")
                w.wait_for(f"task L{n}.md")
                task = inbox / f"L{n}.md"
                os.rename(task, f"{task}.launching")  # the claim
                os.rename(f"{task}.launching", f"{task}.dispatched")
                os.rename(f"{task}.dispatched", inbox.parent / "done" / f"L{n}.md")  # the agent's move
                w.wait_for("done 1")
            life_cpu = (w.cpu() - c0) / args.tasks

    per_k = 1000 / args.files
    rows: list[Row] = [
        ("start-up: spawn → watching", ms(ready), "", f"import alone {ms(import_floor)}"),
        ("start-up CPU", ms(start_cpu), "", f"{args.projects * (args.dirs + 4)} directories in the tree"),
        ("watcher CPU per 1,000 source files written", ms(build_cpu * per_k), "",
         f"the writer's own {ms(writer_cpu * per_k)} (×{build_cpu / max(writer_cpu, 1e-9):.2f})"),
        ("watcher CPU per task file", ms(task_cpu), "", ""),
        ("watcher CPU per task's life, with its 2 messages", ms(life_cpu), "",
         "write, claim, dispatched, done/; inbox_event + monitor_sessions sent"),
        ("watcher threads / RSS", f"{threads} / {rss}", "", "one idle thread per watched directory (watchdog)"),
        ("task file written → reported, p50", ms(pct(lat, 50)), "", ""),
        ("task file written → reported, p99", ms(pct(lat, 99)), "", ""),
    ]
    print_table(header("bench/watcher.py", "polling" if args.polling else "inotify"), rows)


if __name__ == "__main__":
    main()
