"""What ``dispatcher up`` shows in the foreground, and where its children's logs go.

On a terminal: a compact live view (rich) — sessions, per-project progress with
an ETA while a queue drains, the last events, and any pause or hold in plain
words. Without one (systemd, docker): one line per event. Either way the
components' own logs go to rotated files under ``state_dir/logs/``
(``dispatcher logs [-f] [COMPONENT]``); ``up -v`` shows them instead.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

import redis

from dispatcher.agent.tmux import Tmux
from dispatcher.core import defaults as d
from dispatcher.core.config import Settings
from dispatcher.core.humanize import duration
from dispatcher.flows.status import collect
from dispatcher.store import events as ev
from dispatcher.store.redis_conn import client

logger = logging.getLogger(__name__)

LOG_DIR = "logs"
_COMPONENT = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
STATE_STYLE = {"idle": "dim", "launching": "cyan", "working": "bold blue", "waiting": "bold yellow",
               "finished": "green", "failed": "bold red", "limited": "magenta", "missing": "red"}
ALERT_KINDS = {"failed", "stuck", "launch-failed", "paused", "held", "waiting", "limited", "invalid"}


class Component(Protocol):
    """What the view needs of a supervised child (up.Child)."""

    name: str
    restarts: int
    proc: Any


def log_dir(settings: Settings) -> Path:
    """``state_dir/logs``."""
    return settings.state_dir / LOG_DIR


def log_path(settings: Settings, component: str) -> Path:
    """The log file of one component (name validated: it comes from the command line too)."""
    if not _COMPONENT.match(component) or component in (".", ".."):
        raise ValueError(f"{component!r} is not a component name")
    return log_dir(settings) / f"{component}.log"


def rotate(path: Path, max_bytes: int = d.LOG_MAX_BYTES, backups: int = d.LOG_BACKUPS) -> bool:
    """Copy-and-truncate ``path`` when over ``max_bytes`` (the child keeps its O_APPEND descriptor)."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    for i in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{i}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{i + 1}"))
    shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    with open(path, "r+b") as fh:
        fh.truncate(0)
    return True


def components(settings: Settings) -> list[str]:
    """Components that have a log file."""
    return sorted(p.name[:-4] for p in log_dir(settings).glob("*.log"))


def read_log(settings: Settings, component: str, lines: int = 50) -> list[str]:
    """The last ``lines`` lines of a component's log."""
    path = log_path(settings, component)
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - 256 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return []
    return text.splitlines()[-lines:]


def follow_log(settings: Settings, component: str, stop: threading.Event, poll: float = 0.5) -> Iterator[str]:
    """New lines of a component's log as they are written (survives a rotation)."""
    path = log_path(settings, component)
    pos = path.stat().st_size if path.exists() else 0
    buf = b""
    while not stop.is_set():
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size < pos:
            pos = 0  # rotated (truncated): read from the start
        if size > pos:
            with open(path, "rb") as fh:
                fh.seek(pos)
                buf += fh.read(size - pos)
                pos = size
            *done, buf = buf.split(b"\n")
            for line in done:
                yield line.decode("utf-8", "replace")
        else:
            stop.wait(poll)


@dataclass
class Progress:
    """Done counts seen over time, per project: the drain rate gives an ETA."""

    first: dict[str, tuple[float, int]] = field(default_factory=dict)

    def eta(self, project: str, counts: dict[str, int], now: float) -> float | None:
        """Seconds until the project's open tasks are done at the rate seen so far (None: no rate yet)."""
        done = counts.get("done", 0)
        start = self.first.setdefault(project, (now, done))
        left = sum(counts.get(k, 0) for k in ("pending", "blocked", "launching", "dispatched"))
        finished, elapsed = done - start[1], now - start[0]
        if left == 0 or finished <= 0 or elapsed <= 0:
            return None
        return left * elapsed / finished


def _text_row(*cells: Any) -> list[str]:
    return [str(c) for c in cells]


def render(data: dict[str, Any], recent: list[ev.Event], *, kids: Iterable[Component] = (),
           progress: Progress | None = None, notes: Iterable[str] = ()) -> Any:
    """The live view for one status snapshot (a rich renderable)."""
    # rich only for a terminal (see View._live).
    from rich.console import Group
    from rich.panel import Panel
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    now = data["time"]
    parts: list[Any] = []
    head = Text.assemble(("agent-queue ", "bold"), (time.strftime("%H:%M:%S", time.localtime(now)), "dim"))
    for kid in kids:
        alive = kid.proc is not None and kid.proc.poll() is None
        head.append(f"  {kid.name} ", style="dim")
        head.append("✓" if alive else "✗", style="green" if alive else "bold red")
        if kid.restarts:
            head.append(f" ({kid.restarts} restarts)", style="yellow")
    parts.append(head)
    for note in notes:
        parts.append(Text(note, style="dim"))
    if not data.get("redis", True):
        parts.append(Text("Redis unreachable: states rebuilt from tmux", style="bold yellow"))
    if data.get("paused"):
        until = data.get("paused_until")
        left = f" ({duration(until - now)} left)" if until else ""
        parts.append(Panel(Text(f"{data['pause_reason']}{left}", style="bold"), title="POOL PAUSED",
                           border_style="red", expand=False))
    for project, hold in (data.get("held") or {}).items():
        parts.append(Text(f"project {project} held ({duration(hold['until'] - now)} left): {hold['reason']}",
                          style="yellow"))
    hosts = data.get("hosts") or []
    if hosts:
        ht = Table(title="hosts", title_justify="left", box=None, pad_edge=False)
        for col in ("host", "alive", "last seen", "version", "sessions", "working", "idle"):
            ht.add_column(col)
        for h in hosts:
            ht.add_row(*_text_row(h.get("host", "?") + (" (this)" if h.get("this") else ""),
                                  "yes" if h.get("alive") else "NO", duration(h.get("last_seen_s")) + " ago",
                                  h.get("version") or "-", h.get("sessions", "-"), h.get("working", "-"),
                                  h.get("idle", "-")), style=None if h.get("alive") else "red")
        parts.append(ht)
    st = Table(box=None, pad_edge=False, show_edge=False)
    for col in ("session", "state", "task", "model", "for", "detail"):
        st.add_column(col, overflow="ellipsis", no_wrap=True, max_width=60 if col == "detail" else None)
    for row in data.get("sessions", []):
        task = f"{row['project']}:{row['task']}" if row.get("task") else "-"
        state = row["state"] + ("*" if row.get("cooldown") else "")
        st.add_row(row.get("ref") or row["session"], Text(state, style=STATE_STYLE.get(row["state"], "")), task,
                   row.get("model") or "-", duration(row.get("for_s")), row.get("detail") or "")
    parts.append(st)
    pt = Table(box=None, pad_edge=False, show_edge=False)
    for col in ("project", "progress", "done", "pending", "blocked", "stuck", "running", "failed", "eta"):
        pt.add_column(col, justify="left" if col in ("project", "progress") else "right")
    for project, c in sorted((data.get("counts") or {}).items()):
        total = sum(c.get(k, 0) for k in ("pending", "blocked", "stuck", "launching", "dispatched", "failed", "done"))
        eta = progress.eta(project, c, now) if progress is not None else None
        pt.add_row(project, ProgressBar(total=max(total, 1), completed=c.get("done", 0), width=24),
                   str(c.get("done", 0)), str(c.get("pending", 0)), str(c.get("blocked", 0)),
                   Text(str(c.get("stuck", 0)), style="red" if c.get("stuck") else ""),
                   str(c.get("launching", 0) + c.get("dispatched", 0)),
                   Text(str(c.get("failed", 0)), style="bold red" if c.get("failed") else ""),
                   duration(eta) if eta is not None else "-")
    parts.append(pt)
    if recent:
        et = Table(box=None, pad_edge=False, show_header=False)
        et.add_column("when", style="dim", no_wrap=True, min_width=8)
        et.add_column("kind", no_wrap=True, min_width=9)
        et.add_column("what", overflow="ellipsis", no_wrap=True, ratio=1)
        for e in recent:
            what = " ".join(x for x in (e.task, f"@ {e.session}" if e.session else "", e.detail) if x)
            et.add_row(time.strftime("%H:%M:%S", time.localtime(e.time)),
                       Text(e.kind, style="bold red" if e.kind in ALERT_KINDS else "green" if e.kind == "finished"
                            else ""), what)
        parts.append(Panel(et, title="last events", title_align="left", border_style="dim"))
    return Group(*parts)


class View:
    """Runs the foreground view until ``stop``: live on a TTY, else one line per event."""

    def __init__(self, settings: Settings, stop: threading.Event, kids: Iterable[Component] = (), *,
                 out: TextIO, tty: bool, notes: Iterable[str] = (), refresh: float = 1.0,
                 redis_factory: Callable[[], redis.Redis] | None = None) -> None:
        self.settings, self.stop, self.kids, self.out, self.tty = settings, stop, list(kids), out, tty
        self.notes, self.refresh = list(notes), refresh
        self.redis_factory = redis_factory
        self.thread = threading.Thread(target=self._run, name="up-view", daemon=True)

    def start(self) -> View:
        self.thread.start()
        return self

    def join(self, timeout: float = 10.0) -> None:
        self.thread.join(timeout)

    def _redis(self) -> redis.Redis:
        if self.redis_factory is not None:
            return self.redis_factory()
        return client(settings=self.settings, timeout=2.0)

    def _run(self) -> None:
        try:
            (self._live if self.tty else self._lines)()
        except Exception:  # the view must never take the fleet down
            logger.exception("the live view stopped")

    def _lines(self) -> None:
        r = self._redis()
        for note in self.notes:
            self.out.write(note + "\n")
        self.out.flush()
        last = "$"
        while not self.stop.is_set():
            try:
                for e in (ev.since(r, last) if last != "$" else []):
                    self.out.write(e.line() + "\n")
                    last = e.id
                self.out.flush()
                if last == "$":
                    newest = ev.recent(r, 1)
                    last = newest[-1].id if newest else "0-0"
            except redis.RedisError as exc:
                logger.warning("event log unreachable: %s", exc)
            self.stop.wait(self.refresh)

    def _live(self) -> None:
        # rich only for a terminal (it costs a tenth of a second to import; logs and pipes never need it).
        from rich.console import Console
        from rich.live import Live

        r, tmux, progress = self._redis(), Tmux(self.settings.tmux.socket_name), Progress()
        console = Console(file=self.out, force_terminal=True)
        with Live(console=console, refresh_per_second=4, screen=False, transient=False) as live:
            while not self.stop.is_set():
                try:
                    data = collect(self.settings, r, tmux)
                    recent = ev.recent(r, 8) if data.get("redis") else []
                except (redis.RedisError, OSError) as exc:
                    logger.warning("status unreachable: %s", exc)
                else:
                    live.update(render(data, recent, kids=self.kids, progress=progress, notes=self.notes))
                self.stop.wait(self.refresh)


def start(settings: Settings, stop: threading.Event, kids: list[Any], *, flower: bool = False,
          web: bool = False, out: TextIO | None = None) -> View:
    """Point each child's output at its log file and start the foreground view (``up`` without ``-v``)."""
    log_dir(settings).mkdir(parents=True, exist_ok=True)
    for kid in kids:
        kid.log = log_path(settings, kid.name)
    notes = [f"logs: {log_dir(settings)}/ (dispatcher logs -f {kids[0].name if kids else 'worker-0'}; "
             "up -v shows them here) · Ctrl-C stops everything"]
    if web:
        notes.append(f"fleet page: http://{settings.web.address}:{settings.web.port}/")
    if flower:
        notes.append(f"Flower: http://{settings.flower.address}:{settings.flower.port}/")
    stream = out or sys.stdout
    return View(settings, stop, kids, out=stream, tty=stream.isatty(), notes=notes).start()
