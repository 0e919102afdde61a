"""``dispatcher doctor``: check everything a fleet needs, and say how to fix what is wrong.

Each check returns a :class:`Check` (``ok``, ``warn`` or ``fail``, a detail and the
fix). Only ``fail`` makes the command exit non-zero; ``warn`` is worth knowing
(Redis without persistence, no web password generated yet).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from dispatcher.agent.hook_settings import bash_for_hooks, hook_command
from dispatcher.agent.installed import INSTALL_HINT, agent_missing
from dispatcher.agent.tmux import version as tmux_version
from dispatcher.core import defaults as d
from dispatcher.core import keys
from dispatcher.core.config import Settings
from dispatcher.core.errors import DispatcherError
from dispatcher.inbox import files as aq
from dispatcher.store import credentials
from dispatcher.store.hook_log import HookLog
from dispatcher.store.redis_conn import client, configured_url, redis_py_url

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class Check:
    """The outcome of one check."""

    name: str
    status: str
    detail: str
    fix: str = ""

    @property
    def passed(self) -> bool:
        return self.status != FAIL


def _run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 15.0,
         stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False,
                          env=env)


def check_tmux() -> Check:
    """tmux is installed; its version."""
    if shutil.which("tmux") is None:
        return Check("tmux", FAIL, "tmux is not installed", "apt-get install tmux (or your system's package)")
    try:
        out = tmux_version()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("tmux", FAIL, f"tmux -V failed: {exc}", "reinstall tmux")
    m = re.search(r"(\d+)\.(\d+)", out)
    if m and (int(m.group(1)), int(m.group(2))) < (3, 0):
        return Check("tmux", FAIL, f"{out}: too old", "install tmux 3.0 or newer")
    return Check("tmux", OK, out or "tmux (version unknown)")


def agent_argv(command: str) -> list[str]:
    """The executable part of ``agent.command`` (before the first ``--option`` or ``{placeholder}``)."""
    out: list[str] = []
    for word in shlex.split(command):
        if word.startswith("--") or "{" in word:
            break
        out.append(word)
    return out


def agent_env(settings: Settings) -> dict[str, str]:
    """The environment an agent runs with (agent.env over ours)."""
    return {**os.environ, **settings.agent.env}


def check_agent(settings: Settings) -> Check:
    """The agent executable is found and answers ``--version``."""
    env = agent_env(settings)
    try:
        argv = agent_argv(settings.agent.command)
        missing = agent_missing(settings.agent.command, path=env.get("PATH"))
    except ValueError as exc:
        return Check("agent", FAIL, f"agent.command cannot be parsed: {exc}", "fix agent.command in dispatcher.yaml")
    install = f"{INSTALL_HINT} (or set agent.command in dispatcher.yaml)"
    if missing or not argv:
        return Check("agent", FAIL, missing or f"agent command {command_name(settings)!r} not found on PATH", install)
    try:
        proc = _run([*argv, "--version"], env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("agent", FAIL, f"{' '.join(argv)} --version failed: {exc}", install)
    text = (proc.stdout or proc.stderr).strip().splitlines()
    if proc.returncode != 0 or not text:
        return Check("agent", FAIL, f"{' '.join(argv)} --version exited {proc.returncode}: {' '.join(text)[:200]}",
                     install)
    return Check("agent", OK, f"{' '.join(argv)}: {text[0][:120]}")


def command_name(settings: Settings) -> str:
    """The first word of agent.command (for messages)."""
    return settings.agent.command.split()[0] if settings.agent.command.split() else "?"


def agent_config_path(settings: Settings) -> Path:
    """The agent's ``.claude.json``: ``$CLAUDE_CONFIG_DIR/.claude.json`` (agent.env first), else ``~/.claude.json``."""
    env = agent_env(settings)
    base = env.get("CLAUDE_CONFIG_DIR")
    home = Path(base) if base else Path(env.get("HOME") or "~")
    return home.expanduser() / ".claude.json"


def check_agent_config(settings: Settings) -> list[Check]:
    """Onboarding done, and each served project's folder trusted (the trust dialog otherwise blocks launches)."""
    path = agent_config_path(settings)
    projects = aq.discover_projects(settings.projects_dir, settings.projects)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        return [Check("agent config", FAIL, f"{path} does not exist: the agent will show its first-run dialogs",
                      f"run the agent once as this user and finish its setup (or create {path})")]
    except (OSError, ValueError) as exc:
        return [Check("agent config", FAIL, f"{path} cannot be read: {exc}", f"repair or remove {path}")]
    out = [Check("onboarding", OK, f"{path}: hasCompletedOnboarding") if data.get("hasCompletedOnboarding") is True
           else Check("onboarding", FAIL, f"{path}: hasCompletedOnboarding is not true",
                      "run the agent once and finish its first-run setup, or set \"hasCompletedOnboarding\": true")]
    listed = data.get("projects")
    trusted: dict[str, Any] = listed if isinstance(listed, dict) else {}
    for proj in projects:
        folder = str(proj.root.resolve())  # the agent keys its config by the real path of its cwd
        entry = trusted.get(folder)
        if isinstance(entry, dict) and entry.get("hasTrustDialogAccepted") is True:
            out.append(Check(f"trust {proj.name}", OK, folder))
        else:
            out.append(Check(f"trust {proj.name}", FAIL, f"{folder} is not trusted: launches there stop at the dialog",
                             f"run the agent once in {folder} and accept, or add \"projects\": {{{json.dumps(folder)}: "
                             f"{{\"hasTrustDialogAccepted\": true}}}} to {path}"))
    if not projects:
        out.append(Check("projects", WARN, f"no project in {settings.projects_dir} (each needs .agent-queue/)",
                         "dispatcher init, or mkdir -p <projects_dir>/<name>/.agent-queue/inbox"))
    return out


def check_redis(r: redis.Redis) -> list[Check]:
    """Reachable, its version, and whether it keeps data across a restart."""
    try:
        info: Any = r.info("server")
    except redis.RedisError as exc:
        return [Check("redis", FAIL, f"unreachable: {exc}",
                      "start it ('dispatcher up' runs an embedded one) or set REDIS_URL / redis_url")]
    out = [Check("redis", OK, f"Redis {info.get('redis_version', '?')}")]
    try:
        aof = r.config_get("appendonly").get("appendonly")
        save = r.config_get("save").get("save")
    except redis.RedisError as exc:
        out.append(Check("redis persistence", WARN, f"unknown (CONFIG GET refused: {exc})"))
        return out
    if aof == "yes" or save:
        out.append(Check("redis persistence", OK, f"appendonly={aof} save={save!r}"))
    else:
        out.append(Check("redis persistence", WARN, "none: a Redis restart forgets pauses, holds, attempts and events",
                         "CONFIG SET appendonly yes (and in redis.conf); tasks themselves are safe in files"))
    return out


def check_hook(r: redis.Redis, url: str) -> Check:
    """A hook report reaches Redis, sent by the command agents run (hook_settings: bash or Python client)."""
    session = f"doctor-{uuid.uuid4().hex[:12]}"
    token = uuid.uuid4().hex
    env = {**os.environ, "AQ_SESSION": session, "AQ_TASK": "doctor", "AQ_REDIS_URL": url}
    hooks = HookLog(r)
    command = hook_command("Notification", sys.executable, bash_for_hooks(url))
    try:
        # Through a shell, as Claude Code runs hook commands.
        proc = _run(["/bin/sh", "-c", command], env=env, stdin=json.dumps({"doctor": token}))
        reports = hooks.read(session)
    except (OSError, subprocess.TimeoutExpired, redis.RedisError) as exc:
        return Check("hook round trip", FAIL, f"{exc}", "check REDIS_URL is reachable from the agents' shell")
    finally:
        try:
            hooks.forget(session)
        except redis.RedisError:
            pass
    if any(report.payload.get("doctor") == token for report in reports):
        return Check("hook round trip", OK, "a hook report reached Redis")
    return Check("hook round trip", FAIL, f"no report arrived ({proc.stderr.strip()[:200] or 'no error shown'})",
                 "the agents' hooks cannot reach Redis: check REDIS_URL and that this Python has the dispatcher")


def check_auth(settings: Settings) -> Check:
    """The web views (fleet page, Flower) have credentials."""
    if settings.flower.basic_auth:
        try:
            credentials.parse(settings.flower.basic_auth, "FLOWER_BASIC_AUTH")
        except DispatcherError as exc:
            return Check("web auth", FAIL, str(exc), "FLOWER_BASIC_AUTH=user:password")
        return Check("web auth", OK, "FLOWER_BASIC_AUTH is set")
    path = credentials.path(settings.state_dir)
    if path.is_file():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            return Check("web auth", FAIL, f"{path} is readable by others (mode {mode:o})", f"chmod 600 {path}")
        return Check("web auth", OK, f"generated password in {path}")
    if settings.flower.address not in ("127.0.0.1", "localhost", "::1"):
        return Check("web auth", FAIL, f"Flower is configured on {settings.flower.address} without a password",
                     "set FLOWER_BASIC_AUTH=user:password")
    return Check("web auth", WARN, "no password yet: 'dispatcher web' generates one into " + str(path),
                 "run 'dispatcher web' once, or set FLOWER_BASIC_AUTH=user:password")


def _existing(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def check_disk(settings: Settings, min_free: int = d.DOCTOR_MIN_FREE_BYTES) -> list[Check]:
    """Free space where tasks and state are written."""
    out = []
    for name, path in (("disk projects_dir", settings.projects_dir), ("disk state_dir", settings.state_dir)):
        free = shutil.disk_usage(_existing(path)).free
        detail = f"{free / 2**30:.1f} GiB free in {path}"
        out.append(Check(name, OK, detail) if free >= min_free else
                   Check(name, FAIL, detail + f" (< {min_free / 2**30:.1f} GiB)", f"free space on the disk of {path}"))
    return out


def check_hosts(r: redis.Redis, now: float | None = None) -> list[Check]:
    """This host's clock against Redis; every host's heartbeat (``aq:hosts``: JSON with ``last_seen``)."""
    try:
        secs, micros = r.time()
        raw: Any = r.hgetall(keys.HOSTS) or {}
    except redis.RedisError as exc:
        return [Check("hosts", FAIL, f"cannot read: {exc}", "check Redis")]
    ref = secs + micros / 1e6
    skew = (time.time() if now is None else now) - ref
    out = [Check("clock", OK, f"{skew:+.2f}s against Redis") if abs(skew) <= d.DOCTOR_MAX_SKEW_S else
           Check("clock", FAIL, f"this host's clock is {skew:+.1f}s off Redis's",
                 "enable time sync (timedatectl set-ntp true / chrony)")]
    for host, value in sorted(raw.items()):
        try:
            data = json.loads(value)
            seen = float(data["last_seen"])
        except (ValueError, KeyError, TypeError):
            out.append(Check(f"host {host}", WARN, f"unreadable heartbeat {str(value)[:80]!r}"))
            continue
        age = ref - seen
        their_skew = data.get("skew_s")
        detail = f"last seen {age:.0f}s ago" + (f", clock {float(their_skew):+.1f}s" if their_skew is not None else "")
        if age > d.DOCTOR_HOST_STALE_S:
            out.append(Check(f"host {host}", FAIL, detail, f"is the dispatcher running on {host}? (dispatcher up)"))
        elif their_skew is not None and abs(float(their_skew)) > d.DOCTOR_MAX_SKEW_S:
            out.append(Check(f"host {host}", FAIL, detail, f"enable time sync on {host}"))
        else:
            out.append(Check(f"host {host}", OK, detail))
    return out


def run(settings: Settings, *, min_free: int = d.DOCTOR_MIN_FREE_BYTES) -> list[Check]:
    """Every check, in the order a newcomer would fix them."""
    checks: list[Check] = [check_tmux(), check_agent(settings), *check_agent_config(settings)]
    url = redis_py_url(configured_url(settings))
    try:
        r = client(url, timeout=3.0)
        redis_checks = check_redis(r)
    except DispatcherError as exc:
        redis_checks = [Check("redis", FAIL, str(exc), "fix REDIS_URL / redis_url")]
        r = None
    checks += redis_checks
    if r is not None and redis_checks[0].status == OK:
        checks += [check_hook(r, url), *check_hosts(r)]
    checks += [check_auth(settings), *check_disk(settings, min_free)]
    return checks


MARK = {OK: "ok  ", WARN: "warn", FAIL: "FAIL"}


def render(checks: Iterable[Check]) -> str:
    """One line per check, the fix under each problem."""
    lines = []
    items = list(checks)
    for c in items:
        lines.append(f"{MARK[c.status]}  {c.name:<22} {c.detail}")
        if c.fix and c.status != OK:
            lines.append(f"      {'':<22} fix: {c.fix}")
    failed = sum(not c.passed for c in items)
    lines += ["", f"{failed} problem(s) to fix" if failed else "all checks passed"]
    return "\n".join(lines)


def as_json(checks: Iterable[Check]) -> dict[str, Any]:
    """``--json``: ``{"ok": bool, "checks": [{name, status, detail, fix}]}``."""
    items = list(checks)
    return {"ok": all(c.passed for c in items), "checks": [asdict(c) for c in items]}

