"""One hook call, as Claude Code makes it: ``python -m dispatcher.hook <Event>`` with a JSON payload on stdin.

Usage: python bench/hook.py [--calls 100] [--redis URL] (default redis://127.0.0.1:6379/15)
Prints wall time per call (p50/p99) beside two floors measured in the same run: the bare interpreter
(``python -c pass``) and the interpreter importing only the modules the hook needs. Every call's entry is
checked to have reached the session's hook stream (the DB's stream key is deleted at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (str(ROOT), str(ROOT / "bench")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import common  # noqa: E402
import redis  # noqa: E402

from dispatcher.core import keys  # noqa: E402


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def timed(argv: list[str], stdin: bytes, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, input=stdin, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> list[tuple[str, str, str]]:
    """Run the benchmark; print its table when run as a script (``argv`` None), return (measure, p50, p99) rows."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=100)
    common.add_redis_arg(ap, "redis://127.0.0.1:6379/15")
    args = ap.parse_args(argv)
    session = f"bench/hook-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, AQ_SESSION=session, AQ_TASK="bench:T1", AQ_REDIS_URL=args.redis)
    payload = json.dumps({"session_id": str(uuid.uuid4()), "hook_event_name": "UserPromptSubmit",
                          "prompt": "[T1.md] do the thing\n" * 20, "cwd": "/tmp"}).encode()
    rows = {
        "floor: python -c pass": [sys.executable, "-c", "pass"],
        "floor: python importing the hook's modules": [sys.executable, "-c",
                                                       "import json, socket, urllib.parse, dispatcher.core.keys"],
        "hook call (python -m dispatcher.hook UserPromptSubmit)": [sys.executable, "-m", "dispatcher.hook",
                                                                   "UserPromptSubmit"],
    }
    r = redis.Redis.from_url(args.redis)
    try:
        results = {name: [timed(argv, payload, env) for _ in range(args.calls)] for name, argv in rows.items()}
        reached = r.xlen(keys.session_hooks(session))
    finally:
        r.delete(keys.session_hooks(session))
        r.close()
    out = [(name, f"{pct(values, 50) * 1000:.1f} ms", f"{pct(values, 99) * 1000:.1f} ms")
           for name, values in results.items()]
    if reached != args.calls:
        out.append(("hook reports that reached Redis", f"{reached} of {args.calls}", ""))
    if argv is None:
        common.print_table(common.header("hook benchmark", f"{args.calls} calls each; {reached} of {args.calls} "
                                                           "hook reports reached Redis"),
                           out, columns=("measure", "p50", "p99"))
    return out


if __name__ == "__main__":
    main()
