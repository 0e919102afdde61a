"""Scan benchmark (issue 13 goal 2): a full scan beside the filesystem floor, measured in the same run.

    python bench/scan.py [--sizes 20x1000 100x1000] [--runs 3] [--redis redis://127.0.0.1:6379/11]

For each size (projects × pending task files, small tasks with frontmatter; one task in
ten depends on another) it generates a tree in a temporary directory, then measures,
best of ``--runs``, with the files in the page cache, in wall time and in CPU time (user + system,
children included; steadier than wall time on a shared machine):

floor (process)      a fresh ``python -c`` that lists every inbox/ and done/ and reads every
                     file: interpreter start + the unavoidable I/O
CLI cold             ``python -m dispatcher scan --dry-run`` as a fresh process (imports,
                     config, list, read, parse every file, plan, render), against the floor above
floor (in process)   the same list-and-read loop inside this process
scan cold            ``run_scan(write=False)`` with an empty parse cache, against it
floor (listing)      list every inbox/ and done/ and lstat each entry (no reads)
scan warm            ``run_scan`` again, parse cache warm (only changed files are read), against it

Nothing is written to Redis (``scan --dry-run`` only reads the pause holds; DB 11 is used).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dispatcher.core.config import Settings  # noqa: E402
from dispatcher.inbox.scanner import clear_cache, run_scan  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/11"

#: The floor: list every inbox/ and done/, lstat and read every inbox file. Run as a fresh process too.
FLOOR = r"""
import os


def read_all(root):
    n = 0
    with os.scandir(root) as projects:
        for p in projects:
            for sub in ("inbox", "done"):
                with os.scandir(os.path.join(p.path, ".agent-queue", sub)) as it:
                    for e in it:
                        if sub == "inbox":
                            e.stat(follow_symlinks=False)
                            with open(e.path, "rb") as fh:
                                n += len(fh.read())
    return n
"""
_floor: dict[str, Callable[[str], int]] = {}
exec(compile(FLOOR, "<floor>", "exec"), _floor)  # noqa: S102 - our own constant
floor_read_all = _floor["read_all"]


def task_text(i: int) -> bytes:
    deps = f"depends_on: [t{i - 1:05d}]\n" if i % 10 == 9 else ""
    return (f"---\ntitle: Task {i}\npriority: {('default', 'high', 'low')[i % 3]}\ntags: [bench, scan]\n{deps}---\n\n"
            f"Benchmark task {i}: do the thing described here.\n").encode()


def make_tree(root: Path, projects: int, pending: int) -> None:
    """``p000``… each with ``pending`` task files in inbox/ (mtimes spread out: no file is still settling)."""
    old = time.time() - 3600
    for p in range(projects):
        inbox = root / f"p{p:03d}" / ".agent-queue" / "inbox"
        inbox.mkdir(parents=True)
        (inbox.parent / "done").mkdir()
        for i in range(pending):
            path = inbox / f"t{i:05d}.md"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, task_text(i))
            os.close(fd)
            os.utime(path, (old + i, old + i))


def best(fn: Callable[[], object], runs: int, before: Callable[[], None] | None = None) -> tuple[float, float]:
    """(best wall time, best CPU time: this process's plus its children's) of ``runs`` calls."""
    walls, cpus = [], []
    for _ in range(runs):
        if before is not None:
            before()
        c0, k0 = time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        k1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(time.process_time() - c0 + (k1.ru_utime - k0.ru_utime) + (k1.ru_stime - k0.ru_stime))
    return min(walls), min(cpus)


def floor_listing(root: Path) -> None:
    with os.scandir(root) as projects:
        for p in projects:
            for sub in ("inbox", "done"):
                with os.scandir(os.path.join(p.path, ".agent-queue", sub)) as it:
                    for e in it:
                        e.stat(follow_symlinks=False)


def fmt(x: float) -> str:
    return f"{x:,.2f} s" if x >= 1 else f"{x * 1000:,.0f} ms"


def run_size(tmp: Path, projects: int, pending: int, runs: int) -> list[tuple[str, str, str, str]]:
    root = tmp / f"{projects}x{pending}"
    t0 = time.perf_counter()
    make_tree(root / "projects", projects, pending)
    gen = time.perf_counter() - t0
    config = root / "dispatcher.yaml"
    config.write_text(f"projects_dir: projects\nstate_dir: state\nredis_url: {REDIS_URL}\n")
    settings = Settings(projects_dir=root / "projects", state_dir=root / "state", redis_url=REDIS_URL)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def floor_cli() -> None:
        code = FLOOR + "\nimport sys\nprint(read_all(sys.argv[1]))"
        subprocess.run([sys.executable, "-c", code, str(root / "projects")], check=True, stdout=subprocess.DEVNULL)

    def cli() -> None:
        subprocess.run([sys.executable, "-m", "dispatcher", "--config", str(config), "scan", "--dry-run"],
                       check=True, stdout=subprocess.DEVNULL, env=env)

    def scan() -> None:
        plan = run_scan(settings, now=time.time(), write=False)
        assert len(plan.eligible) + len(plan.blocked) + len(plan.waiting) == projects * pending, "all judged"

    cli()  # warms the page cache (and checks the command works) before anything is timed
    f_cli, t_cli = best(floor_cli, runs), best(cli, runs)
    f_in, t_cold = best(lambda: floor_read_all(str(root / "projects")), runs), best(scan, runs, before=clear_cache)
    scan()
    f_list, t_warm = best(lambda: floor_listing(root / "projects"), runs), best(scan, runs)
    n = projects * pending
    size = f"{projects}×{pending:,}"
    shutil.rmtree(root)

    def row(what: str, value: tuple[float, float], floor: tuple[float, float] | None = None,
            note: str = "") -> tuple[str, str, str, str]:
        ratio = f"×{value[0] / floor[0]:.1f} / ×{value[1] / floor[1]:.1f}" if floor else ""
        return (f"{size}: {what}", f"{fmt(value[0])} / {fmt(value[1])}", ratio, note)

    return [
        row("floor: fresh python lists + reads all", f_cli, note=f"tree of {n:,} files made in {gen:.1f} s"),
        row("dispatcher scan --dry-run (fresh process)", t_cli, f_cli),
        row("floor: in process lists + reads all", f_in, note=f"{f_in[0] / n * 1e6:.1f} µs/file"),
        row("run_scan cold (parses every file)", t_cold, f_in, f"{t_cold[0] / n * 1e6:.0f} µs/file"),
        row("floor: in process lists + lstats all", f_list),
        row("run_scan warm (parse cache)", t_warm, f_list, f"×{t_warm[0] / f_in[0]:.1f} the read floor"),
    ]


def main() -> None:
    global REDIS_URL
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["20x1000", "100x1000"], help="projects x pending files")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--redis", default=REDIS_URL, help="Redis URL for the CLI's config (only read)")
    args = ap.parse_args()
    REDIS_URL = args.redis
    t_start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="aqbench-scan-"))
    rows: list[tuple[str, str, str, str]] = []
    try:
        for size in args.sizes:
            projects, pending = (int(x) for x in size.lower().split("x"))
            print(f"[{time.monotonic() - t_start:5.1f}s] {projects} × {pending}", file=sys.stderr, flush=True)
            rows += run_size(tmp, projects, pending, args.runs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        import yaml

        libyaml = bool(getattr(yaml, "__with_libyaml__", False))
    except ImportError:
        libyaml = False
    print(f"agent-queue scan benchmark — {time.strftime('%Y-%m-%d %H:%M')} — {platform.node()} "
          f"({os.cpu_count()} cores, Python {platform.python_version()}, libyaml {'yes' if libyaml else 'no'}, "
          f"load {os.getloadavg()[0]:.1f}) — best of {args.runs}")
    w0, w1, w2 = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows), max(len(r[2]) for r in rows)
    print(f"{'measure':<{w0}}  {'wall / CPU':>{w1}}  {'vs floor':>{w2}}  note")
    print(f"{'-' * w0}  {'-' * w1}  {'-' * w2}  {'-' * 20}")
    for a, b, c, e in rows:
        print(f"{a:<{w0}}  {b:>{w1}}  {c:>{w2}}  {e}")
    print(f"(run took {time.monotonic() - t_start:.0f} s)")


if __name__ == "__main__":
    main()
