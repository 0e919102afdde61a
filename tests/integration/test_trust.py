"""An untrusted project folder holds that project's tasks (with the fix in the reason); the pool keeps
serving the other projects, no session cools down, no attempt is counted, and a fixed project runs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import redis
from click.testing import CliRunner
from system_fixtures import Clock, add_task, done_ids, wait_for

from dispatcher.agent.tmux import Tmux
from dispatcher.cli.main import cli
from dispatcher.core import defaults as d
from dispatcher.core import keys
from dispatcher.core.config import Settings
from dispatcher.core.report import plan_json, render_plan
from dispatcher.flows import monitor, runtime, status
from dispatcher.flows.dispatch import Dispatcher
from dispatcher.flows.ports import Ports
from dispatcher.inbox import files as aq
from dispatcher.inbox.scanner import run_scan
from dispatcher.store import pause


def _trust(claude_json: Path, *folders: Path) -> None:
    """What accepting the dialog once (or editing ~/.claude.json) leaves behind."""
    projects = {str(f.resolve()): {"hasTrustDialogAccepted": True} for f in folders}
    claude_json.write_text(json.dumps({"projects": projects}), encoding="utf-8")


def test_untrusted_project_is_held_while_the_pool_serves_the_others(
        settings: Settings, sys_redis: redis.Redis[str], tmux_pool: Tmux, clock: Clock, agent_log: Path,
        tmp_path: Path) -> None:
    claude_json = tmp_path / "claude.json"
    good, bad = settings.projects_dir / "good", settings.projects_dir / "bad"
    _trust(claude_json, good)
    s = settings.with_overrides(agent=replace(settings.agent, env={**settings.agent.env,
                                                                   "FAKE_AGENT_CLAUDE_JSON": str(claude_json)}))
    disp = Dispatcher(Ports(s, sys_redis, tmux_pool, runtime.agent_launcher(s, sys_redis, tmux_pool), clock=clock))
    for n in (1, 2):  # critical: tried first, before every task of the trusted project
        add_task(s, "bad", f"B{n}", priority="critical")
    for n in (1, 2, 3, 4):
        add_task(s, "good", f"G{n}")

    def step() -> None:
        monitor.monitor_all(disp)
        disp.fan_out()

    wait_for(lambda: done_ids(s, "good") == {"G1", "G2", "G3", "G4"}, timeout=90, step=step,
             what="every task of the trusted project done")
    inbox = aq.project(s.projects_dir, "bad").inbox
    assert sorted(p.name for p in inbox.iterdir()) == ["B1.md", "B2.md"]  # pending: not failed, not claimed
    assert sys_redis.get(keys.attempts("bad", "B1")) is None  # not the task's fault
    now = clock()
    assert not any(i.in_cooldown(now, s.pool.cooldown) for i in disp.pool_infos().values())  # nor a session's
    starts = [json.loads(x) for x in agent_log.read_text().splitlines()]
    assert sum(1 for e in starts if e["event"] == "start" and Path(e["cwd"]) == bad.resolve()) == 1  # tried once

    hold = pause.holds(sys_redis, now)["bad"]
    assert str(bad.resolve()) in hold.reason and "hasTrustDialogAccepted" in hold.reason
    assert "running `claude` in that directory" in hold.reason
    assert now + d.PROJECT_HOLD_S - 60 < hold.until <= now + d.PROJECT_HOLD_S
    plan = run_scan(s, now=now, write=False)
    holds = {p: h.reason for p, h in pause.holds(sys_redis, now).items()}
    text = render_plan(plan, holds)
    assert "bad:B1 [critical]  B1  — held: Claude Code does not trust" in text
    assert "bad:" not in text.split("\n\n")[0]  # not in the dispatch order
    assert [t["id"] for t in plan_json(plan, holds)["held"]] == ["B1", "B2"]
    shown = status.render(status.collect(s, sys_redis, tmux_pool, now=now))
    assert "project bad held until" in shown and "hasTrustDialogAccepted" in shown
    config = tmp_path / "dispatcher.yaml"
    config.write_text(f"projects_dir: {s.projects_dir}\nsettle_time: 0\nmax_parallel: 3\n", encoding="utf-8")  # as s
    dry = CliRunner().invoke(cli, ["--config", str(config), "scan", "--dry-run"])  # REDIS_URL: this test's DB
    assert dry.exit_code == 0 and "Held (2):" in dry.output and "— held: Claude Code does not trust" in dry.output

    # Fixed (trust accepted): once the hold expires the project's tasks run.
    _trust(claude_json, good, bad)
    clock.advance(d.PROJECT_HOLD_S + 1)
    wait_for(lambda: done_ids(s, "bad") == {"B1", "B2"}, timeout=90, step=step, what="the fixed project's tasks")
