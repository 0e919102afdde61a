"""assign_next CPU against queue size, and a worker's memory with a large queue indexed (issue 13 goals 1, 6).

    python bench/assign.py [--projects 100] [--pending 1000] [--samples 200] [--quick] [--redis URL] [--no-rss]
                           [--profile FILE]

Real Redis (DB 12, flushed before and after), a private tmux server with one pool session
(killed at the end), real files; the launch is a no-op (this measures the dispatcher, not
the agent). CPU is ``time.process_time()`` of this process around one call; between calls,
untimed, the dispatched file moves to done/ (the agent finished) and the session is set idle.

- before: ``Dispatcher.assign_next`` with the index switched off — the old path: a full scan
  (parse cache warm) and the claim of the first eligible task.
- after: ``Dispatcher.assign_next`` with the ready index (candidates from Redis, one task
  re-checked on disk, then the same claim).
Both at 10 pending (one project) and at P × N pending; the floor is a Redis PING and a tmux
call measured in the same run. The RSS rows run a fresh interpreter that imports the worker's
modules, runs one full scan (which fills the parse cache and writes the index) and 50
assign_next calls over the big tree, then reads VmRSS/VmHWM from /proc; then it clears the
scan's parse cache and dispatches 50 more (what the index path needs by itself).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (str(ROOT), str(ROOT / "bench")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import common  # noqa: E402
import redis  # noqa: E402

from dispatcher.agent import pool, pool_state  # noqa: E402
from dispatcher.agent.tmux import Tmux  # noqa: E402
from dispatcher.core.config import AgentSettings, PoolSettings, Settings, TmuxSettings  # noqa: E402
from dispatcher.flows import claim, ready  # noqa: E402
from dispatcher.flows.dispatch import Dispatcher, LaunchSpec, Outcome  # noqa: E402
from dispatcher.flows.ports import Ports  # noqa: E402
from dispatcher.inbox.scanner import run_scan  # noqa: E402
from dispatcher.testing import FAKE_AGENT_COMMAND  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/12"
SESSION = "ccl-auto-0"
FRONT = b"---\ntitle: t\npriority: default\n---\n\nBenchmark task.\n"


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))] if s else float("nan")


def ms(x: float) -> str:
    return f"{x * 1e3:,.2f} ms" if x < 10 else f"{x:,.1f} s"


def write_file(inbox: Path, name: str) -> Path:
    path = inbox / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, FRONT)
    os.close(fd)
    return path


def make_tree(root: Path, projects: int, pending: int) -> None:
    for p in range(projects):
        inbox = root / f"p{p:03d}" / ".agent-queue" / "inbox"
        inbox.mkdir(parents=True)
        (inbox.parent / "done").mkdir()
        for i in range(pending):
            write_file(inbox, f"t{i:05d}.md")


def settings_for(root: Path, tmp: Path, socket: str) -> Settings:
    return Settings(projects_dir=root, state_dir=tmp / "state", redis_url=REDIS_URL, settle_time=0.0,
                    pool=PoolSettings(prefix="ccl-auto-", start_index=0, max=1, cooldown=0.0),
                    tmux=TmuxSettings(socket_name=socket), agent=AgentSettings(command=FAKE_AGENT_COMMAND))


def finish(disp: Dispatcher, task_key: str, refill: Callable[[], None] | None) -> None:
    """Untimed: the agent is done (its file to done/), the session idle again, optionally one new file."""
    project, _, task_id = task_key.partition(":")
    inbox = disp.settings.projects_dir / project / ".agent-queue" / "inbox"
    os.rename(inbox / f"{task_id}.md.dispatched", inbox.parent / "done" / f"{task_id}.md")
    info = disp.session_info(SESSION)
    claim.finished(disp.r, project, task_id, info.ref)  # as the monitor does: the owner record (and slot) go
    pool_state.set_idle(disp.r, disp.tmux, info, now=disp.clock(), detail="bench")
    if refill is not None:
        refill()


def measure(disp: Dispatcher, call: Callable[[], Outcome], samples: int,
            refill: Callable[[], None] | None) -> list[float]:
    out: list[float] = []
    for _ in range(samples):
        t0 = time.process_time()
        outcome = call()
        out.append(time.process_time() - t0)
        if outcome.status != "dispatched":
            raise RuntimeError(f"expected a dispatch, got {outcome}")
        finish(disp, outcome.task, refill)
    return out


class IndexOff:
    """The old assign_next: with the index switched off it scans every project and claims the first eligible task."""

    def __enter__(self) -> None:
        self.saved = ready.is_complete, ready.publish
        ready.is_complete = lambda disp: False  # type: ignore[assignment]
        ready.publish = lambda disp, result, ticket: None  # type: ignore[assignment]

    def __exit__(self, *exc: object) -> None:
        ready.is_complete, ready.publish = self.saved  # type: ignore[assignment]


def selection(disp: Dispatcher, samples: int) -> list[float]:
    """CPU of the index's part alone: fetch candidates and re-check the first on disk (nothing claimed)."""
    out = []
    for _ in range(samples):
        t0 = time.process_time()
        task = next(iter(ready.candidates(disp, set())))
        out.append(time.process_time() - t0)
        assert task is not None
    return out


RSS_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import redis
import workers.assign, workers.scan, workers.monitor  # what a worker imports
from dispatcher.agent.tmux import Tmux
from dispatcher.core.config import AgentSettings, PoolSettings, Settings, TmuxSettings
from dispatcher.flows.dispatch import Dispatcher
from dispatcher.flows.ports import Ports  # noqa: E402
from dispatcher.agent import pool_state
from dispatcher.store import ready_index
from pathlib import Path
import os
def rss():
    f = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
    return int(f["VmRSS"].split()[0]) * 1024, int(f["VmHWM"].split()[0]) * 1024
root, url, socket, n = Path(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
base = rss()[0]
s = Settings(projects_dir=root, state_dir=root.parent / "state-rss", redis_url=url, settle_time=0.0,
             pool=PoolSettings(prefix="ccl-auto-", start_index=0, max=1, cooldown=0.0),
             tmux=TmuxSettings(socket_name=socket), agent=AgentSettings(command=sys.argv[6]))
r = redis.Redis.from_url(url, decode_responses=True)
d = Dispatcher(Ports(s, r, Tmux(socket), lambda spec: None))
def dispatch(times):
    # assign_next `times` times; each task moved to done/ and the session freed, as an agent and the monitor would.
    for _ in range(times):
        out = d.assign_next("ccl-auto-0")
        assert out.status == "dispatched", out
        p, _, t = out.task.partition(":")
        inbox = root / p / ".agent-queue" / "inbox"
        os.rename(inbox / (t + ".md.dispatched"), inbox.parent / "done" / (t + ".md"))
        pool_state.set_idle(r, d.tmux, d.session_info("ccl-auto-0"), now=time.time(), detail="bench")
r.incr("aq:ready:dirty")  # make the first assign_next scan and write the index, as after a start or flush
dispatch(n)
now, peak = rss()
# What the index path itself needs: the same process without the scan's parse cache, after 50 more dispatches.
import gc
from dispatcher.inbox.scanner import clear_cache
clear_cache()
gc.collect()
dispatch(50)
print(json.dumps({"base": base, "rss": now, "peak": peak, "no_cache": rss()[0],
                  "indexed": len(ready_index.snapshot(r))}))
"""


def main(argv: list[str] | None = None) -> list[tuple[str, str, str]]:
    """Run the benchmark; print its table when run as a script (``argv`` None), return its rows either way."""
    global REDIS_URL
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--projects", type=int, default=100)
    ap.add_argument("--pending", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--before-samples", type=int, default=5, help="old path at the big size (seconds each)")
    ap.add_argument("--quick", action="store_true", help="20 × 500, 50 samples")
    common.add_redis_arg(ap, REDIS_URL)
    ap.add_argument("--profile", metavar="FILE", help="cProfile the measured big-queue assign_next calls into FILE")
    ap.add_argument("--no-rss", action="store_true", help="skip the RSS rows (a fresh interpreter, a full scan)")
    args = ap.parse_args(argv)
    REDIS_URL = args.redis
    if args.quick:
        args.projects, args.pending, args.samples = 20, 500, 50
    big = args.projects * args.pending
    tmp = Path(tempfile.mkdtemp(prefix="aqbench-assign-"))
    socket = f"aqbench-{uuid.uuid4().hex[:10]}"
    r = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    r.flushdb()
    t = Tmux(socket)
    rows: list[tuple[str, str, str]] = []
    t_start = time.monotonic()

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - t_start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    def noop_launch(spec: LaunchSpec) -> None:
        return None

    try:
        pool.create(t, PoolSettings(prefix="ccl-auto-", start_index=0, max=1), cwd=tmp)
        pings = []
        for _ in range(300):
            t0 = time.process_time()
            r.ping()
            pings.append(time.process_time() - t0)
        tmux_calls = []
        for _ in range(30):
            t0 = time.process_time()
            t.run("display-message", "-p", "x")
            tmux_calls.append(time.process_time() - t0)

        # small: 10 pending in one project, refilled after each dispatch
        small = tmp / "small"
        make_tree(small, 1, 10)
        sdisp = Dispatcher(Ports(settings_for(small, tmp, socket), r, t, noop_launch))
        inbox = small / "p000" / ".agent-queue" / "inbox"
        counter = iter(range(10, 10**9))

        def refill_old() -> None:
            write_file(inbox, f"t{next(counter):05d}.md")

        def refill_new() -> None:  # as inbox_event does for a reported file
            path = write_file(inbox, f"t{next(counter):05d}.md")
            ready.on_new_file(sdisp, "p000", str(path))

        say("10 pending: old path")
        with IndexOff():
            old_small = measure(sdisp, lambda: sdisp.assign_next(SESSION), args.samples, refill_old)
        sdisp.plan()
        say("10 pending: assign_next with the index")
        new_small = measure(sdisp, lambda: sdisp.assign_next(SESSION), args.samples, refill_new)
        sel_small = selection(sdisp, args.samples)
        r.flushdb()

        say(f"generating {args.projects} × {args.pending:,} files")
        g0 = time.perf_counter()
        bigroot = tmp / "big"
        make_tree(bigroot, args.projects, args.pending)
        say(f"generated in {time.perf_counter() - g0:.1f} s")
        bdisp = Dispatcher(Ports(settings_for(bigroot, tmp, socket), r, t, noop_launch))
        t0 = time.perf_counter()
        run_scan(bdisp.settings, now=time.time(), write=False)  # cold: fills the parse cache
        cold = time.perf_counter() - t0
        say(f"{big:,} pending: old path (cold scan {cold:.1f} s)")
        with IndexOff():
            old_big = measure(bdisp, lambda: bdisp.assign_next(SESSION), args.before_samples, None)
        mem0 = int(r.info("memory")["used_memory"])
        c0 = time.process_time()
        w0 = time.perf_counter()
        bdisp.plan()
        scan_publish_cpu, scan_publish_wall = time.process_time() - c0, time.perf_counter() - w0
        index_bytes = int(r.info("memory")["used_memory"]) - mem0
        say(f"{big:,} pending: assign_next with the index")
        new_big = measure(bdisp, lambda: bdisp.assign_next(SESSION), args.samples, None)
        if args.profile:
            import cProfile
            prof = cProfile.Profile(time.process_time)
            prof.enable()
            measure(bdisp, lambda: bdisp.assign_next(SESSION), args.samples, None)
            prof.disable()
            prof.dump_stats(args.profile)
            say(f"profile of {args.samples} more calls written to {args.profile}")
        sel_big = selection(bdisp, args.samples)
        r.flushdb()

        rss: dict[str, int] | None = None
        if not args.no_rss:
            say("RSS: a fresh interpreter, one full scan + index write, 50 assign_next")
            out = subprocess.run([sys.executable, "-c", RSS_CHILD, str(ROOT), str(bigroot), REDIS_URL, socket, "50",
                                  FAKE_AGENT_COMMAND], capture_output=True, text=True, timeout=1800)
            if out.returncode != 0:
                raise RuntimeError(out.stderr[-2000:])
            rss = json.loads(out.stdout.strip().splitlines()[-1])

        floor = pct(pings, 50)
        rows.append(("before: assign_next CPU, 10 pending p50", ms(pct(old_small, 50)),
                     f"p99 {ms(pct(old_small, 99))}"))
        rows.append((f"before: assign_next CPU, {args.projects}×{args.pending:,} pending p50", ms(pct(old_big, 50)),
                     f"{len(old_big)} calls; ×{pct(old_big, 50) / pct(old_small, 50):,.0f} the 10-pending cost"))
        rows.append(("after: assign_next CPU, 10 pending p50", ms(pct(new_small, 50)), f"p99 {ms(pct(new_small, 99))}"))
        rows.append((f"after: assign_next CPU, {args.projects}×{args.pending:,} pending p50", ms(pct(new_big, 50)),
                     f"p99 {ms(pct(new_big, 99))}; ×{pct(new_big, 50) / pct(new_small, 50):.2f} the 10-pending cost; "
                     f"×{pct(old_big, 50) / pct(new_big, 50):,.0f} faster than before"))
        rows.append(("after: the index's part alone (fetch + re-check), 10 pending p50", ms(pct(sel_small, 50)), ""))
        rows.append((f"after: the index's part alone, {args.projects}×{args.pending:,} pending p50",
                     ms(pct(sel_big, 50)),
                     "the rest of assign_next is the claim and launch bookkeeping"))
        rows.append((f"full scan + index write, {big:,} pending (warm)", ms(scan_publish_wall),
                     f"CPU {ms(scan_publish_cpu)}; the safety net, per scan_interval"))
        rows.append((f"Redis memory of the index, {big:,} entries", f"{index_bytes / 2**20:,.1f} MB",
                     f"{index_bytes / max(1, big):.0f} B/entry"))
        if rss is not None:
            rows.append((f"worker RSS, {big:,} pending indexed", f"{rss['rss'] / 2**20:,.0f} MB",
                         f"peak {rss['peak'] / 2**20:,.0f} MB; {rss['base'] / 2**20:,.0f} MB after imports; "
                         f"{rss['indexed']:,} entries left"))
            rows.append(("    same process, parse cache cleared, 50 more assign_next",
                         f"{rss['no_cache'] / 2**20:,.0f} MB",
                         f"the rest is the scan's memos (~{(rss['rss'] - rss['no_cache']) / max(1, big):,.0f} B/task)"))
        rows.append(("floor: Redis round trip (PING) CPU p50", ms(floor), ""))
        rows.append(("floor: tmux call CPU p50 (client process not counted)", ms(pct(tmux_calls, 50)),
                     "assign_next makes 3 (session state, tags)"))
    finally:
        try:
            t.kill_server()
        except Exception:
            pass
        r.flushdb()
        r.close()
        shutil.rmtree(tmp, ignore_errors=True)

    if argv is None:
        common.print_table(common.header("assign_next benchmark", "no-op launch, one session, CPU = process_time"),
                           rows, columns=("measure", "value", "note"))
        print(f"(run took {time.monotonic() - t_start:.0f} s)")
    return rows


if __name__ == "__main__":
    main()
