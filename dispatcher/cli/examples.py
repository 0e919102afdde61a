"""What ``dispatcher init`` writes: a commented config and an example project."""

from __future__ import annotations

import os
import time
from pathlib import Path

from dispatcher.core.taskfile import render_task
from dispatcher.inbox import files as aq

CONFIG_TEMPLATE = """\
# agent-queue dispatcher configuration. Every key is optional; defaults shown.
# Relative paths are resolved against this file's directory.

# Where projects live: every sub-directory with a .agent-queue/ folder is served.
projects_dir: projects
# projects: [alpha, beta]          # only these projects (default: all found)

pool:
  prefix: ccl-auto-                # autonomous sessions ccl-auto-0 .. ccl-auto-(max-1)
  start_index: 0
  max: 3
  cooldown: 300                    # seconds a session rests after a failure
  width: 200                       # fixed window size keeps screen parsing stable
  height: 50

tmux:
  # socket_name: agent-queue       # default: agent-queue-<hash of state_dir>, one per deployment;
  #                                # 'dispatcher pool list' prints the attach command

agent:
  command: "claude --model {model} --dangerously-skip-permissions {resume}"
  models: {critical: opus, high: sonnet, default: sonnet, low: sonnet}
  prompt_timeout: 60               # seconds to wait for the agent's input prompt
  submit_timeout: 10
  submit_retries: 3
  # resume_dir: ~/.claude-context  # <session>-resume-id.txt files (--resume); default <state_dir>/resume
  hooks: true                      # report Claude Code hook events to the dispatcher
  recycle: exit                    # exit the agent after each task (fresh context)
  prewarm: false                   # keep an agent booted in free sessions: a dispatch that fits is a paste
  # env: {PATH: "$PATH:/opt/node/bin"}  # added to the agent's env; only $VAR/${VAR} expand ($$ = $)

scan_interval: 60                  # full rescan period (beat), seconds
monitor_interval: 5                # session monitor period, seconds
blocked_timeout: 3600              # .blocked older than this becomes .stuck
finish_grace: 30                   # agent idle this long without done/ -> failed
max_launch_attempts: 3             # launch failures before a task is .failed
max_parallel: 1                    # tasks of one project sharing its checkout that run at once
# projects_config:                 # per project (README 'Parallel tasks in one project'):
#   web:
#     isolation: worktree          # each task in its own git worktree, branch aq/<task id>
#     max_parallel: 3              # default with worktrees: no cap but the pool
#     worktree: {base: main, merge_command: [git, merge, --no-edit]}
limits:
  rate_limit_pause: 60             # API 429/529 naming no wait: pause the pool this long,
  rate_limit_max_pause: 1800       # doubling per repeat up to this (usage limits wait for their reset)
settle_time: 2                     # a file the watcher did not see closed waits until unchanged this long
state_dir: .state                  # embedded Redis, beat schedule, agent settings

# redis_url: redis://127.0.0.1:6379/0   # unset: an embedded Redis (REDIS_URL env wins)
flower:
  address: 127.0.0.1
  port: 5555
  # basic_auth: user:password      # better: FLOWER_BASIC_AUTH env
web:                               # the fleet page (dispatcher web / up --web); basic auth always:
  address: 127.0.0.1               # FLOWER_BASIC_AUTH, else a password generated into state_dir/web-auth
  port: 5556
notify:                            # on events a human must act on (dispatcher notify; up runs it)
  # command: "notify-send agent-queue"        # run without a shell; the event as JSON on stdin
  # webhook: https://hooks.example.com/T000   # POST the same JSON (http/https only)
  events: [failed, stuck, waiting, paused, unpaused, held, fenced]
  per_minute: 6                    # at most this many per event kind and minute
  timeout: 10
"""

EXAMPLE_TASKS = [
    ("SETUP-1", dict(title="Create the project skeleton", priority="high",
                     body="Create a README.md describing the project in one paragraph.")),
    ("FEAT-2", dict(title="Add a greeting script", priority="default", depends_on=("example:SETUP-1",),
                    body="Add hello.sh that prints 'hello' and document it in the README.")),
    ("DOC-3", dict(title="Write the changelog", priority="low", depends_on=("FEAT-2",),
                   body="Create CHANGELOG.md listing SETUP-1 and FEAT-2.")),
    ("HOTFIX-0", dict(title="Fix the typo in the README", priority="critical",
                      body="Fix any typo you find in README.md (create it first if missing).")),
]


def write_example(target: Path, *, force: bool = False) -> list[Path]:
    """Write dispatcher.yaml and projects/example with a few tasks under ``target``."""
    written: list[Path] = []
    cfg = target / "dispatcher.yaml"
    if cfg.exists() and not force:
        raise FileExistsError(f"{cfg} exists (use --force to overwrite)")
    target.mkdir(parents=True, exist_ok=True)
    cfg.write_text(CONFIG_TEMPLATE, encoding="utf-8")
    written.append(cfg)
    settled = time.time() - 60
    proj = aq.project(target / "projects", "example")
    aq.ensure_dirs(proj)
    for task_id, fields in EXAMPLE_TASKS:
        path = proj.task_path(task_id)
        if path.exists() and not force:
            continue
        path.write_text(render_task(**fields), encoding="utf-8")  # type: ignore[arg-type]
        # Complete once written (we are the writer): dated back so a scan right away need not wait
        # for them to settle. The same date for all keeps their order priority-only.
        os.utime(path, (settled, settled))
        written.append(path)
    return written
