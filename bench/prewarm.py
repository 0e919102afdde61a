"""Real-CLI latency: task file → the agent's first API request, cold vs pre-warmed, beside hand-driven floors.

    python bench/prewarm.py [--rounds 15] [--redis redis://127.0.0.1:6379/15] [--version 2.1.197 ...]

Runs only when the real Claude Code is installed (tests/e2e/install_claude.sh puts each version
under ~/.cache/agent-queue/claude-code-<version>; ``--claude PATH`` names another binary); else it
says so and exits 0. Each version gets its own isolated HOME (dialogs pre-answered), the local fake
Messages API (tests/e2e/fake_api.py), a private tmux server with a one-session pool and the given
Redis DB (flushed before and after). Per round, interleaved so drift hits all rows alike:

- floor, hand cold: respawn ``claude`` (same argv, env and hooks as a dispatch) → poll for the
  ready prompt (10 ms) → paste → Enter; time from the respawn to the API's receipt of the turn;
- floor, hand warm: the same on an agent booted beforehand and idle ``--idle`` s (paste → Enter only);
- dispatch cold (``agent.prewarm: false``) and warm (true): write ``<id>.md`` atomically, then
  ``inbox_event`` inline, its ``assign_next`` run at once (the watcher's and Celery's path without
  inotify's latency or the queue hop); time from the rename to the API's receipt of the turn. Between
  tasks the agent's task goes to done/ and the monitor recycles the session, as in production;
  with warming on it re-warms the session (the round waits until that agent is ready and has idled
  ``--idle`` s: an idle machine; right after its prompt shows the CLI still does start-up work).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from dispatcher.agent import pool  # noqa: E402
from dispatcher.agent import warm as warm_tag  # noqa: E402
from dispatcher.agent.hook_settings import write_settings  # noqa: E402
from dispatcher.agent.launcher import LaunchRequest, agent_env, build_argv  # noqa: E402
from dispatcher.agent.tmux import Tmux  # noqa: E402
from dispatcher.core import screen  # noqa: E402
from dispatcher.core.config import AgentSettings, PoolSettings, Settings, TmuxSettings  # noqa: E402
from dispatcher.core.message import build_message  # noqa: E402
from dispatcher.core.taskfile import render_task  # noqa: E402
from dispatcher.flows import passes, runtime  # noqa: E402
from dispatcher.flows import warm as warming  # noqa: E402
from dispatcher.flows.dispatch import Dispatcher  # noqa: E402
from dispatcher.flows.monitor import monitor_all  # noqa: E402
from dispatcher.flows.ports import Ports  # noqa: E402
from dispatcher.inbox import files as aq  # noqa: E402
from dispatcher.store import events  # noqa: E402
from dispatcher.store.sessions import State  # noqa: E402
from tests.e2e import harness  # noqa: E402
from tests.e2e.fake_api import FakeAnthropicAPI  # noqa: E402

SESSION = "ccl-auto-0"
VERSIONS = ("2.1.197", "2.1.332")


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def installed(version: str) -> str | None:
    cache = Path(os.environ.get("AQ_CLAUDE_CACHE") or Path.home() / ".cache" / "agent-queue")
    path = cache / f"claude-code-{version}" / "node_modules" / ".bin" / "claude"
    return str(path) if os.access(path, os.X_OK) else None


def poll(predicate, timeout: float, what: str, step=None, every: float = 0.01):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        if step is not None:
            step()
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(every)  # a poll interval with a deadline


class Bench:
    def __init__(self, claude: str, version: str, redis_url: str, root: Path, api: FakeAnthropicAPI,
                 idle: float) -> None:
        self.api = api
        self.idle = idle
        projects = root / "projects"
        self.proj_dir = (projects / "proj").resolve()
        self.proj = aq.project(projects, "proj")
        aq.ensure_dirs(self.proj)
        home = harness.seed_home(root / "home", [self.proj_dir], preseed=True, version=version)
        env = harness.claude_env(home, api.base_url)
        env.pop("PATH")  # the server's PATH: python for the hooks
        agent = AgentSettings(command=f"{claude} --model {{model}} --dangerously-skip-permissions {{resume}}",
                              env=env, resume_dir=root / "resume", prompt_timeout=60.0)
        self.settings = Settings(projects_dir=projects, pool=PoolSettings(prefix="ccl-auto-", max=1),
                                 tmux=TmuxSettings(socket_name=f"aqbench-{uuid.uuid4().hex[:8]}"),
                                 agent=agent, state_dir=root / "state", redis_url=redis_url, settle_time=0.0,
                                 finish_grace=600.0)
        self.r = redis.Redis.from_url(redis_url, decode_responses=True)
        self.r.flushdb()
        self.tmux = Tmux(self.settings.tmux.socket_name)
        pool.create(self.tmux, self.settings.pool, cwd=projects)
        self.disp = {on: self._dispatcher(on) for on in (False, True)}
        warming.remember(self.disp[True], "proj", "default")  # what an earlier task taught the warm pass
        self.n = 0

    def _dispatcher(self, prewarm: bool) -> Dispatcher:
        s = replace(self.settings, agent=replace(self.settings.agent, prewarm=prewarm))
        box: list[Dispatcher] = []
        # Celery's path without its queue hop: fan_out "enqueues" assign_next, which runs at once.
        disp = Dispatcher(Ports(s, self.r, self.tmux, runtime.agent_launcher(s, self.r, self.tmux)),
                          enqueue_assign=lambda ref: box[0].assign_next(ref))
        box.append(disp)
        return disp

    def close(self) -> None:
        self.tmux.kill_server()
        self.r.flushdb()
        self.r.close()

    def _turn_time(self, marker: str) -> float:
        return self.api.wait_for_request(lambda q: q.is_turn and marker in q.last_user_text(), 60).time

    def hand(self, booted: bool) -> float:
        """The hand-driven floor: (boot →) ready → paste → Enter, timed to the API's receipt."""
        self.n += 1
        task_id = f"H{self.n}"
        agent = self.settings.agent
        request = LaunchRequest(project_dir=self.proj_dir, project="proj", task_id=task_id, body="Say hi.")
        argv = build_argv(agent.command, model="sonnet", settings_file=write_settings(self.settings.state_dir, SESSION),
                          session_uuid=request.session_uuid)
        env = agent_env(f"bench/{SESSION}", request, agent, self.settings.redis_url or "")
        message = build_message(task_id, request.body, project="proj", footer=agent.message_footer)
        t0 = time.time()
        self.tmux.respawn(SESSION, argv, cwd=self.proj_dir, env=env)
        poll(lambda: screen.prompt_ready(self.tmux.capture(SESSION)), 60, "ready prompt")
        if booted:
            time.sleep(self.idle)  # the agent has been idle a while, as a warm agent is when its task comes
            t0 = time.time()
        self.tmux.paste(SESSION, message)
        poll(lambda: screen.input_text(self.tmux.capture(SESSION)), 5, "paste shown")
        self.tmux.send_keys(SESSION, "Enter")
        took = self._turn_time(f"[{task_id}.md]") - t0
        pool.reset_pane(self.tmux, SESSION, self.settings)
        return took

    def dispatch(self, prewarm: bool) -> tuple[float, bool]:
        """File written → assign_next → the API's receipt of the turn; then done/ and the monitor's recycle."""
        disp = self.disp[prewarm]
        if prewarm:  # an idle machine: the session's warm agent is up before the task arrives
            poll(lambda: warm_tag.read_tag(self.tmux, SESSION), 60, "warm agent",
                 step=lambda: warming.warm_free(disp), every=0.05)
            time.sleep(self.idle)  # ... and has been idle a while (as for the hand warm floor)
        self.n += 1
        task_id = f"D{self.n}"
        text = render_task(title=task_id, priority="default", body="Say hi.")
        path = aq.write_task_atomically(self.proj, task_id, text)
        t0 = time.time()
        passes.inbox_event(disp, str(path), None, rescan_in=lambda _delay: None, scan_soon=lambda: None)
        took = self._turn_time(f"[{task_id}.md]") - t0
        launched = [e for e in events.recent(self.r, 20) if e.kind == "launched" and e.task == f"proj:{task_id}"]
        if not launched:
            raise RuntimeError(f"{task_id} was not launched")
        was_warm = "warm agent" in launched[-1].detail
        os.replace(self.proj.task_path(task_id, ".dispatched"), aq.done_path(self.proj, task_id))
        poll(lambda: disp.session_info(SESSION).state is State.IDLE, 60, "session recycled",
             step=lambda: monitor_all(disp), every=0.05)
        return took, was_warm


def row(name: str, seconds: list[float], floor: float | None = None) -> str:
    ms = [s * 1000 for s in seconds]
    ratio = f"{statistics.median(ms) / floor:>8.2f}x" if floor else ""
    return f"{name:<46} {len(ms):>4} {statistics.median(ms):>9.1f} {pct(ms, 99):>9.1f} {max(ms):>9.1f} {ratio}"


def run(claude: str, version: str, rounds: int, redis_url: str, idle: float) -> None:
    with tempfile.TemporaryDirectory(prefix="aq-prewarm-") as tmp, FakeAnthropicAPI() as api:
        bench = Bench(claude, version, redis_url, Path(tmp), api, idle)
        results: dict[str, list[float]] = {"hand cold": [], "hand warm": [], "cold": [], "warm": []}
        warm_hits = 0
        try:
            for _ in range(rounds):
                results["hand cold"].append(bench.hand(booted=False))
                results["hand warm"].append(bench.hand(booted=True))
                results["cold"].append(bench.dispatch(prewarm=False)[0])
                took, hit = bench.dispatch(prewarm=True)
                results["warm"].append(took)
                warm_hits += hit
        finally:
            bench.close()
    floor = statistics.median(results["hand cold"]) * 1000
    print(f"\nClaude Code {version}: {rounds} rounds; warm agent used in {warm_hits}/{rounds} warm dispatches")
    print(f"{'file/respawn -> first API request of the task':<46} {'n':>4} {'p50 ms':>9} {'p99 ms':>9} "
          f"{'max ms':>9} {'p50/floor':>9}")
    print(row("floor: hand boot + paste + Enter", results["hand cold"], floor))
    print(row("floor: hand paste + Enter (agent booted)", results["hand warm"], floor))
    print(row("dispatch cold (prewarm off)", results["cold"], floor))
    print(row("dispatch warm (prewarm on)", results["warm"], floor))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--idle", type=float, default=2.0,
                        help="seconds a booted agent idles before its task comes (warm rows and the warm floor)")
    parser.add_argument("--version", action="append", help="CLI versions (default: both tested ones installed)")
    parser.add_argument("--claude", help="a claude binary to use instead (its version from --version, one)")
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        print("prewarm bench: tmux is not installed; skipped")
        return
    versions = args.version or list(VERSIONS)
    found = [(v, args.claude if args.claude else installed(v)) for v in versions]
    missing = [v for v, path in found if path is None]
    if missing:
        print(f"prewarm bench: Claude Code {', '.join(missing)} not installed "
              f"(AQ_CLAUDE_VERSION=<v> bash tests/e2e/install_claude.sh); skipped")
    for version, path in found:
        if path is not None:
            run(path, version, args.rounds, args.redis, args.idle)


if __name__ == "__main__":
    main()
