"""What the bench scripts share: percentiles, units, the table beside its floors, and teardown.

Every bench prints rows of (measure, value, goal, floor / note) with :func:`print_table`, takes
``--redis URL`` (:func:`add_redis_arg`) and cleans up through one :class:`Teardown`: private tmux
servers killed, the Redis DB flushed, temp dirs removed, child processes stopped — also when a
run fails half-way.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: One row of a table: (measure, value, goal, floor / note). Shorter tuples are padded.
Row = tuple[str, ...]

_T0 = time.monotonic()


def add_redis_arg(ap: argparse.ArgumentParser, default: str) -> None:
    """``--redis URL``: the DB the bench may flush (point it at a server of your own on a shared machine)."""
    ap.add_argument("--redis", default=default, metavar="URL",
                    help=f"Redis DB to use; it is flushed before and after (default {default})")


def say(msg: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(f"[{time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def pct(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); nan for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def ms(x: float) -> str:
    """Seconds, shown in the unit that fits."""
    if x != x:  # nan
        return "n/a"
    if abs(x) >= 10:
        return f"{x:,.1f} s"
    if abs(x) >= 1:
        return f"{x * 1000:,.0f} ms"
    if abs(x) >= 0.001:
        return f"{x * 1000:.2f} ms"
    return f"{x * 1e6:.0f} µs"


def load() -> str:
    """The 1-minute load average (the machine may be shared: say how busy it was)."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


def header(what: str, extra: str = "") -> str:
    return (f"{what} — {time.strftime('%Y-%m-%d %H:%M')} — {platform.node()} ({os.cpu_count()} cores, "
            f"Python {platform.python_version()}, load {load()})" + (f" — {extra}" if extra else ""))


def print_table(title: str, rows: Sequence[Row], columns: Sequence[str] = ("measure", "value", "goal",
                                                                            "floor / note"),
                notes: Sequence[str] = (), file: Any = None) -> None:
    """A plain-text table: the first column left-aligned, the value right-aligned, the rest as is."""
    out = file or sys.stdout
    n = len(columns)
    padded = [tuple(r) + ("",) * (n - len(r)) for r in rows]
    widths = [max([len(columns[i])] + [len(r[i]) for r in padded]) for i in range(n)]
    widths[-1] = len(columns[-1])

    def line(cells: Sequence[str]) -> str:
        parts = [f"{cells[0]:<{widths[0]}}"] + [f"{cells[1]:>{widths[1]}}"] if n > 1 else [cells[0]]
        parts += [f"{c:<{w}}" for c, w in zip(cells[2:], widths[2:])]
        return "  ".join(parts).rstrip()

    print(title, file=out)
    print(line(columns), file=out)
    print(line(["-" * w for w in widths[:-1]] + ["-" * 20]), file=out)
    for r in padded:
        print(line(r), file=out)
    for note in notes:
        print("note:", note, file=out)
    out.flush()


class Teardown:
    """Everything a bench made, undone in reverse order on exit (errors while undoing are ignored)."""

    def __init__(self) -> None:
        self._undo: list[tuple[str, Callable[[], object]]] = []

    def __enter__(self) -> Teardown:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, what: str, fn: Callable[[], object]) -> None:
        self._undo.append((what, fn))

    def tmpdir(self, prefix: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=prefix))
        if os.environ.get("AQBENCH_KEEP"):  # logs of the run's processes, for a post-mortem
            say(f"keeping {path}")
        else:
            self.add(f"rm -r {path}", lambda: shutil.rmtree(path, ignore_errors=True))
        return path

    def tmux_server(self, socket: str) -> None:
        """A private tmux server (``tmux -L socket``) to kill at the end."""
        self.add(f"tmux -L {socket} kill-server",
                 lambda: subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False))

    def redis_db(self, url: str) -> Any:
        """A client of the bench's Redis DB, flushed now and at the end."""
        import redis

        r = redis.Redis.from_url(url, decode_responses=True)
        r.flushdb()

        def done() -> None:
            r.flushdb()
            r.close()

        self.add(f"flush {url}", done)
        return r

    def process(self, proc: subprocess.Popen[Any]) -> subprocess.Popen[Any]:
        """A child started in its own session (``start_new_session``): its group is stopped at the end."""
        self.add(f"stop pid {proc.pid}", lambda: stop_group(proc))
        return proc

    def close(self) -> None:
        while self._undo:
            _what, fn = self._undo.pop()
            try:
                fn()
            except Exception:  # noqa: BLE001 - teardown goes on whatever one step says
                pass


def stop_group(proc: subprocess.Popen[Any], timeout: float = 20.0) -> None:
    """SIGTERM the child's process group, SIGKILL after ``timeout``."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


def cpu_seconds(pid: int, children: bool = False) -> float:
    """user + system CPU of a live process from /proc (``children``: also its reaped children's)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the comm field: state is fields[0], so utime = 14th field overall → index 11 here.
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")
