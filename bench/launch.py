"""Launch overhead with the fake agent: ready pane → message submitted, next to one raw tmux call.

Usage: python bench/launch.py [--launches 200] [--no-hooks] [--redis redis://127.0.0.1:6379/15]
Uses a private tmux socket and the given Redis DB (its hook stream and startup lock keys only).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import redis

from dispatcher.agent.launcher import LaunchRequest, launch
from dispatcher.agent.tmux import Tmux
from dispatcher.core import keys
from dispatcher.core.config import AgentSettings
from dispatcher.testing import FAKE_AGENT_COMMAND


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def row(name: str, seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return (f"{name:<44} {len(ms):>5} {statistics.median(ms):>9.1f} {pct(ms, 99):>9.1f} {max(ms):>9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launches", type=int, default=200)
    parser.add_argument("--no-hooks", action="store_true", help="confirm from the screen instead of hooks")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    args = parser.parse_args()

    tmux = Tmux(f"aqbench-{uuid.uuid4().hex[:8]}")
    client = redis.Redis.from_url(args.redis)
    session = "ccl-auto-0"
    with tempfile.TemporaryDirectory(prefix="aq-bench-") as tmp:
        root = Path(tmp)
        project = root / "proj"
        (project / ".agent-queue" / "inbox").mkdir(parents=True)
        agent = AgentSettings(command=FAKE_AGENT_COMMAND, hooks=not args.no_hooks, resume_dir=root / "resume",
                              env={"FAKE_AGENT_BUSY_MS": "50"}, prompt_timeout=30.0)
        try:
            tmux.new_session(session, width=200, height=50, cwd=project)
            raw: list[float] = []
            for _ in range(args.launches):
                t0 = time.perf_counter()
                subprocess.run(["tmux", "-L", tmux.socket_name, "display-message", "-p", "#{session_name}"],
                               capture_output=True, check=True)
                raw.append(time.perf_counter() - t0)
            submit: list[float] = []
            start: list[float] = []
            total: list[float] = []
            by: dict[str, int] = {}
            presses = 0
            body = "\n".join(f"line {i}: \"quoted\" $(echo no) → ✓" for i in range(30))
            began = time.monotonic()
            for i in range(args.launches):
                req = LaunchRequest(project_dir=project, project="proj", task_id=f"B{i}", body=body)
                t0 = time.perf_counter()
                result = launch(tmux, session, req, agent, client, state_dir=root / "state")
                total.append(time.perf_counter() - t0)
                submit.append(result.submit_after)
                start.append(result.ready_after)
                by[result.confirmed_by] = by.get(result.confirmed_by, 0) + 1
                presses += result.enter_presses
            wall = time.monotonic() - began
        finally:
            tmux.kill_server()
            client.delete(keys.session_hooks(session))
            client.close()
    print(f"launch benchmark: fake agent, 30-line body, hooks {'off' if args.no_hooks else 'on'}, "
          f"{args.launches} launches in {wall:.1f}s; confirmed by {by}; Enter presses {presses}")
    print(f"{'measure':<44} {'n':>5} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    print(row("raw tmux call (display-message -p)", raw))
    print(row("launch overhead (ready prompt -> submitted)", submit))
    print(row("agent start (respawn -> ready prompt)", start))
    print(row("whole launch() call", total))


if __name__ == "__main__":
    main()
