"""One hook call, as Claude Code makes it: the settings file's command through ``sh -c``, a JSON payload on stdin.

Usage: python bench/hook.py [--calls 100] [--redis redis://127.0.0.1:6379/15]
Prints wall time per call (p50/p99) of both hook clients (dispatcher/hook.sh in bash, the default for
redis:// URLs, and the Python one, ``python -S -I hook.py``, also run as it ran before, ``-m dispatcher.hook``)
beside floors measured in the same run, interleaved call by call so that machine noise hits every row alike:
the bare shells (``sh -c :``, ``bash -c :``), the bare interpreter (``python -c pass``, and with ``-S -I``) and
the interpreter importing only the modules the Python hook needs, and ``redis-cli PING`` when redis-cli is
installed (a process that connects and does one round trip). Issue #13 goal 4: one hook call ≤ 30 ms wall.
Every hook call's entry is checked to have reached its session's hook
stream (the stream keys are deleted at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (str(ROOT), str(ROOT / "bench")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import common  # noqa: E402
import redis  # noqa: E402

from dispatcher.agent.hook_settings import bash_for_hooks, hook_command  # noqa: E402
from dispatcher.core import keys  # noqa: E402

GOAL_MS = 30.0


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def timed(argv: list[str], stdin: bytes, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, input=stdin, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def redis_cli_argv(url: str) -> list[str] | None:
    cli = shutil.which("redis-cli")
    parsed = urllib.parse.urlsplit(url)
    if cli is None or parsed.scheme != "redis":
        return None
    return [cli, "-h", parsed.hostname or "127.0.0.1", "-p", str(parsed.port or 6379), "PING"]


def main(argv: list[str] | None = None) -> list[tuple[str, str, str, str]]:
    """Run the benchmark; print its table when run as a script (``argv`` None), return (measure, p50, p99) rows."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--calls", type=int, default=100)
    common.add_redis_arg(ap, "redis://127.0.0.1:6379/15")
    args = ap.parse_args(argv)
    run = uuid.uuid4().hex[:8]
    prompt = json.dumps({"session_id": str(uuid.uuid4()), "transcript_path": "/root/.claude/projects/x/y.jsonl",
                         "cwd": "/tmp", "permission_mode": "default", "hook_event_name": "UserPromptSubmit",
                         "prompt": "[T1.md] do the thing\n" * 20}).encode()
    big = json.dumps({"session_id": str(uuid.uuid4()), "hook_event_name": "UserPromptSubmit",
                      "prompt": "[T1.md] a pasted task " + "x" * 200_000}).encode()
    bash = bash_for_hooks(args.redis)
    # name → (argv, payload, hook session or None for a floor)
    rows: dict[str, tuple[list[str], bytes, str | None]] = {
        "floor: sh -c :": (["sh", "-c", ":"], prompt, None),
        "floor: bash -c :": (["bash", "-c", ":"], prompt, None),
        "floor: python -c pass": ([sys.executable, "-c", "pass"], prompt, None),
        "floor: python -S -I -c pass": ([sys.executable, "-S", "-I", "-c", "pass"], prompt, None),
        "floor: python -S -I importing the hook's modules": (
            [sys.executable, "-S", "-I", "-c", "import _socket, os"], prompt, None),
    }
    cli = redis_cli_argv(args.redis)
    if cli is not None:
        rows["floor: redis-cli PING"] = (cli, b"", None)
    if bash is not None:
        rows["hook call: bash client (hook.sh), 1 KB payload"] = (
            ["sh", "-c", hook_command("UserPromptSubmit", sys.executable, bash)], prompt, f"bench/hook-{run}-bash")
        rows["hook call: bash client (hook.sh), 200 KB payload"] = (
            ["sh", "-c", hook_command("UserPromptSubmit", sys.executable, bash)], big, f"bench/hook-{run}-bash-big")
    rows["hook call: python -S -I hook.py, 1 KB payload"] = (
        ["sh", "-c", hook_command("UserPromptSubmit", sys.executable)], prompt, f"bench/hook-{run}-python")
    # How it ran before (site, the editable finder, `-m` finding the package): the same script, for the ratio.
    rows["before: python -m dispatcher.hook, 1 KB payload"] = (
        ["sh", "-c", f"{shlex.quote(sys.executable)} -m dispatcher.hook UserPromptSubmit"], prompt,
        f"bench/hook-{run}-python-m")
    base_env = dict(os.environ, AQ_TASK="bench:T1", AQ_REDIS_URL=args.redis)
    envs = {name: dict(base_env, AQ_SESSION=session or "bench/floor") for name, (_, _, session) in rows.items()}
    results: dict[str, list[float]] = {name: [] for name in rows}
    r = redis.Redis.from_url(args.redis)
    sessions = [session for _, _, session in rows.values() if session is not None]
    try:
        for _ in range(args.calls):  # interleaved: noise from other processes is shared by every row
            for name, (cmd, stdin, _session) in rows.items():
                results[name].append(timed(cmd, stdin, envs[name]))
        reached = {session: r.xlen(keys.session_hooks(session)) for session in sessions}
    finally:
        for session in sessions:
            r.delete(keys.session_hooks(session))
        r.close()
    python_floor = pct(results["floor: python -c pass"], 50)
    out = [(name, f"{pct(values, 50) * 1000:.1f} ms", f"{pct(values, 99) * 1000:.1f} ms",
            f"×{pct(values, 50) / python_floor:.2f} python -c pass") for name, values in results.items()]
    short = [f"{n}/{args.calls}" for n in reached.values() if n != args.calls]
    if short:
        out.append(("hook reports that reached Redis (short)", ", ".join(short), "", ""))
    if bash is None:
        out.append((f"no bash client for {args.redis}", "bash missing, or not a redis:// URL", "", ""))
    if argv is None:
        common.print_table(common.header("hook benchmark", f"{args.calls} calls each, interleaved; reports reached "
                                                           "Redis: " + ", ".join(f"{n}/{args.calls}"
                                                                                 for n in reached.values())),
                           out, columns=("measure", "p50", "p99", "vs floor"))
        best = min((pct(v, 50) for n, v in results.items() if n.startswith("hook call") and "1 KB" in n),
                   default=0.0)
        python = pct(results["hook call: python -S -I hook.py, 1 KB payload"], 50)
        print(f"goal (issue #13, 4): one hook call ≤ {GOAL_MS:.0f} ms wall — default client p50 {best * 1000:.1f} ms"
              f" (the Python one, for unix:// and rediss://, {python * 1000:.1f} ms)")
    return out


if __name__ == "__main__":
    main()
