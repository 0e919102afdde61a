"""One pass over every project: classify each inbox file and say what may dispatch, in order.

``collect`` lists and reads (I/O); ``plan`` decides (pure); ``apply_markers``
writes the blocked/invalid markers the plan calls for. ``scan --dry-run`` runs
the first two only, so it never changes anything on disk.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from dispatcher.inbox import files as aq
from dispatcher.core import defaults as d
from dispatcher.store import settle
from dispatcher.core.config import Settings
from dispatcher.core.errors import TaskFileError, TaskGone, TaskIncomplete
from dispatcher.core.gate import DoneIndex, GateResult, check, find_cycles, format_path
from dispatcher.core.ordering import order_tasks
from dispatcher.core.taskfile import DepRef, Task, load_task

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """A task file that cannot be dispatched as it is, with the reason."""

    project: str
    name: str
    path: Path
    reason: str


@dataclass(frozen=True)
class Loaded:
    """What ``collect`` read for one pending ``<id>.md``: a Task, or the error and when."""

    project: str
    path: Path
    task: Task | None = None
    error: TaskFileError | None = None
    mtime: float = 0.0
    invalid_marker: str | None = None  # reason kept from an earlier pass (file unchanged since)


@dataclass
class Plan:
    """The outcome of a pass: what to dispatch in order, and why everything else waits."""

    eligible: list[Task] = field(default_factory=list)
    blocked: list[tuple[Task, str]] = field(default_factory=list)
    stuck: list[tuple[Task, str]] = field(default_factory=list)
    invalid: list[Problem] = field(default_factory=list)
    incomplete: list[Problem] = field(default_factory=list)
    waiting: list[tuple[Task, str]] = field(default_factory=list)
    in_flight: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # state -> [(project, id)]
    done_counts: dict[str, int] = field(default_factory=dict)
    projects: list[str] = field(default_factory=list)
    unmet: dict[DepRef, GateResult] = field(default_factory=dict)
    #: When the first file still being written settles by age (a later pass then dispatches it), or None.
    settles_at: float | None = None
    #: What apply_markers changed on disk: (event kind, task, detail), for the event log.
    changes: list[tuple[str, str, str]] = field(default_factory=list)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per-project counts by state (for status and scan output)."""
        out: dict[str, dict[str, int]] = {
            p: {k: 0 for k in ("pending", "blocked", "stuck", "invalid", "launching", "dispatched", "failed", "done")}
            for p in self.projects
        }
        for t in self.eligible:
            out[t.project]["pending"] += 1
        for t, _ in self.waiting:
            out[t.project]["pending"] += 1
        for t, _ in self.blocked:
            out[t.project]["blocked"] += 1
        for t, _ in self.stuck:
            out[t.project]["stuck"] += 1
        for p in self.incomplete:  # still being written: not judged yet
            out[p.project]["pending"] += 1
        for p in self.invalid:
            out[p.project]["invalid"] += 1
        for state, items in self.in_flight.items():
            for proj, _ in items:
                out[proj][state] += 1
        for proj, n in self.done_counts.items():
            out.setdefault(proj, {})["done"] = n
        return out


class ParseCache:
    """Parsed tasks by path, valid while the file's (inode, mtime, ctime, size) is unchanged.

    Repeated scans (every assign_next, inbox_event and beat tick) then cost one
    directory listing per project instead of reading and parsing every file.
    """

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self._items: dict[str, tuple[tuple[int, int, int, int], Task]] = {}

    def get(self, path: str, identity: tuple[int, int, int, int]) -> Task | None:
        hit = self._items.get(path)
        return hit[1] if hit is not None and hit[0] == identity else None

    def clear(self) -> None:
        self._items.clear()

    def put(self, path: str, identity: tuple[int, int, int, int], task: Task) -> None:
        if len(self._items) >= self.limit:
            self._items.clear()  # crude but bounded; a full re-parse is the worst case
        self._items[path] = (identity, task)


_cache = ParseCache()


def clear_cache() -> None:
    """Forget every parsed task (benchmarks measure a cold scan with it)."""
    _cache.clear()


def collect(settings: Settings) -> tuple[list[aq.Snapshot], list[Loaded]]:
    """List every project once and read every pending task file (skipping unchanged invalid ones)."""
    snaps = [aq.snapshot(p) for p in aq.discover_projects(settings.projects_dir, settings.projects)]
    loaded: list[Loaded] = []
    for snap in snaps:
        for name, entry in sorted(snap.inbox.items()):
            if not name.endswith(d.TASK_SUFFIX) or name.startswith("."):
                continue
            path = snap.project.inbox / name
            marker = snap.inbox.get(name + d.INVALID)
            if marker is not None and marker.mtime >= entry.mtime:
                reason = aq.read_marker(path, d.INVALID) or "invalid"
                loaded.append(Loaded(snap.project.name, path, mtime=entry.mtime, invalid_marker=reason))
                continue
            cached = _cache.get(str(path), entry.identity) if entry.regular else None
            if cached is not None:
                loaded.append(Loaded(snap.project.name, path, task=cached, mtime=cached.mtime))
                continue
            try:
                task = load_task(path, snap.project.name, settings.max_task_bytes)
                loaded.append(Loaded(snap.project.name, path, task=task, mtime=task.mtime))
                _cache.put(str(path), entry.identity, task)
            except TaskGone:
                continue  # claimed or moved since the listing: not a problem of the file
            except TaskFileError as exc:
                loaded.append(Loaded(snap.project.name, path, error=exc, mtime=entry.mtime))
    return snaps, loaded


def _in_flight(snaps: list[aq.Snapshot]) -> dict[str, list[tuple[str, str]]]:
    states = {"launching": d.LAUNCHING, "dispatched": d.DISPATCHED, "failed": d.FAILED}
    out: dict[str, list[tuple[str, str]]] = {k: [] for k in states}
    for snap in snaps:
        for name in sorted(snap.inbox):
            for state, suffix in states.items():
                if name.endswith(d.TASK_SUFFIX + suffix) and not name.startswith("."):
                    out[state].append((snap.project.name, name[: -len(d.TASK_SUFFIX + suffix)]))
    return out


def _why(err: TaskFileError) -> str:
    """The reason with its line number (a YAML error without "line 3" is hard to find)."""
    return f"line {err.line}: {err.reason}" if err.line is not None else err.reason


def at_limit_reason(running: int, limit: int) -> str:
    """The waiting reason of a task whose project already runs (or is about to run) ``limit`` tasks."""
    return f"project at its limit ({running}/{limit})"


def _cap(ordered: list[Task], in_flight: dict[str, list[tuple[str, str]]],
         limit_of: Callable[[str], int]) -> tuple[list[Task], list[tuple[Task, str]]]:
    """Keep, in order, the tasks each project still has room for; the rest wait (others' order unchanged)."""
    taken: dict[str, int] = {}
    for state in ("launching", "dispatched"):
        for proj, _ in in_flight.get(state, []):
            taken[proj] = taken.get(proj, 0) + 1
    kept: list[Task] = []
    waiting: list[tuple[Task, str]] = []
    for task in ordered:
        limit = limit_of(task.project)
        n = taken.get(task.project, 0)
        if limit and n >= limit:
            waiting.append((task, at_limit_reason(n, limit)))
            continue
        taken[task.project] = n + 1  # an earlier task of the project goes first and takes a slot
        kept.append(task)
    return kept, waiting


def plan(snaps: list[aq.Snapshot], loaded: list[Loaded], *, now: float, incomplete_grace: float,
         settle_time: float = 0.0, closed: Mapping[tuple[str, str], settle.Identity] | None = None,
         limit_of: Callable[[str], int] | None = None) -> Plan:
    """Classify every pending file and order the eligible ones (pure).

    ``limit_of(project)`` caps how many tasks of a project run at once (0: no cap); counting
    its ``.launching`` and ``.dispatched`` files, the eligible tasks beyond it wait.

    ``closed`` holds the identities the watcher saw when each file's writer was done
    (:func:`settle.closed_files`); a file neither closed nor unchanged for ``settle_time``
    is still being written, and is neither judged nor dispatched yet.
    """
    closed = closed or {}
    done = DoneIndex({s.project.name: s.done for s in snaps})
    result = Plan(projects=[s.project.name for s in snaps],
                  done_counts={s.project.name: len(s.done) for s in snaps},
                  in_flight=_in_flight(snaps))
    busy_ids = {(p, i) for state in ("launching", "dispatched") for p, i in result.in_flight[state]}
    inbox_of = {s.project.name: s.inbox for s in snaps}
    tasks: list[Task] = []
    for item in loaded:
        name = item.path.name
        entry = inbox_of.get(item.project, {}).get(name)
        if item.invalid_marker is not None:
            result.invalid.append(Problem(item.project, name, item.path, item.invalid_marker))
        elif entry is not None and entry.regular and not settle.is_settled(
                entry.version, now=now, settle_time=settle_time, closed=closed.get((item.project, name))):
            if entry.size == 0 and now - item.mtime >= incomplete_grace:
                result.invalid.append(Problem(item.project, name, item.path, "file is empty: write the task into it"))
            elif entry.size == 0:
                result.incomplete.append(Problem(item.project, name, item.path, "file is empty (still being written?)"))
            else:
                result.incomplete.append(Problem(item.project, name, item.path, (
                    f"still being written (changed {max(0.0, now - item.mtime):.1f}s ago; waits until its writer "
                    f"closes it or it is unchanged for {settle_time:g}s)")))
                at = entry.mtime_ns / 1e9 + settle_time
                result.settles_at = at if result.settles_at is None else min(result.settles_at, at)
        elif isinstance(item.error, TaskIncomplete) and now - item.mtime < incomplete_grace:
            result.incomplete.append(Problem(item.project, name, item.path, _why(item.error)))
        elif item.error is not None:
            result.invalid.append(Problem(item.project, name, item.path, _why(item.error)))
        elif item.task is not None:
            tasks.append(item.task)
    cycles = find_cycles(tasks, done)
    eligible: list[Task] = []
    for task in tasks:
        if (task.project, task.id) in busy_ids:
            result.waiting.append((task, "a task with the same ID is still launching or dispatched"))
            continue
        if task.key in cycles:
            reason = f"dependency cycle: {format_path(cycles[task.key])}"
            result.unmet[task.key] = check(task, done)
        else:
            gate = check(task, done)
            if gate.met:
                eligible.append(task)
                continue
            result.unmet[task.key] = gate
            reason = gate.explain()
        if task.file_name + d.STUCK in inbox_of.get(task.project, {}):
            result.stuck.append((task, reason))
        else:
            result.blocked.append((task, reason))
    result.eligible = order_tasks(eligible)
    if limit_of is not None:
        result.eligible, capped = _cap(result.eligible, result.in_flight, limit_of)
        result.waiting += capped
    return result


def _marker_op(fn: Callable[..., Any], path: Path, *args: Any) -> Any:
    """One marker write/removal; an OSError (say, a directory squatting the name) is logged, not fatal to the pass."""
    try:
        return fn(path, *args)
    except OSError as exc:
        logger.warning("%s failed for %s: %s", fn.__name__, path, exc)
        return None


def apply_markers(result: Plan, snaps: list[aq.Snapshot]) -> None:
    """Write what the plan implies: .blocked (first detection only), .invalid, and drop stale markers."""
    present = {(s.project.name, n) for s in snaps for n in s.inbox}
    for task, reason in result.blocked:
        if _marker_op(aq.mark_blocked, task.path):
            logger.info("task %s blocked: %s", task.key, reason)
            result.changes.append(("blocked", str(task.key), reason))
    for prob in result.invalid:
        if (prob.project, prob.name + d.INVALID) in present:
            marker_text = aq.read_marker(prob.path, d.INVALID)
            if marker_text == prob.reason:
                continue
        _marker_op(aq.write_marker, prob.path, d.INVALID, prob.reason)
        logger.warning("task %s:%s invalid: %s", prob.project, prob.name, prob.reason)
        result.changes.append(("invalid", f"{prob.project}:{prob.name}", prob.reason))
    for task in result.eligible:
        # Deps arrived: the blocked/stuck markers no longer tell the truth.
        for suffix in (d.BLOCKED, d.STUCK):
            if (task.project, task.file_name + suffix) in present:
                _marker_op(aq.remove_marker, task.path, suffix)
        if (task.project, task.file_name + d.BLOCKED) in present:
            result.changes.append(("unblocked", str(task.key), "dependencies done"))
    # An .invalid marker whose task was fixed (parsed fine this pass) goes too.
    ok_names = {(t.project, t.file_name) for t in result.eligible} | {
        (t.project, t.file_name) for t, _ in result.blocked + result.stuck + result.waiting}
    for proj, name in ok_names:
        if (proj, name + d.INVALID) in present:
            snap_path = next(s.project.inbox for s in snaps if s.project.name == proj) / name
            _marker_op(aq.remove_marker, snap_path, d.INVALID)


def fresh_files(snaps: list[aq.Snapshot], *, now: float, settle_time: float) -> list[tuple[str, str]]:
    """``(project, name)`` of the non-empty task files not yet settled by age (pure)."""
    return [(s.project.name, name) for s in snaps for name, e in s.inbox.items()
            if name.endswith(d.TASK_SUFFIX) and e.regular and e.size > 0 and now - e.mtime_ns / 1e9 < settle_time]


ClosedLookup = Callable[[list[tuple[str, str]]], Mapping[tuple[str, str], settle.Identity]]


def run_scan(settings: Settings, *, now: float, write: bool, closed: ClosedLookup | None = None) -> Plan:
    """collect → plan → (optionally) apply_markers.

    ``closed`` looks up the watcher's sightings of the files still fresh (none without it: they
    then settle by age only, as in ``scan --dry-run``).
    """
    snaps, loaded = collect(settings)
    fresh = fresh_files(snaps, now=now, settle_time=settings.settle_time)
    known = closed(fresh) if closed is not None and fresh else {}
    result = plan(snaps, loaded, now=now, incomplete_grace=settings.incomplete_grace,
                  settle_time=settings.settle_time, closed=known, limit_of=settings.limit_for)
    if write:
        apply_markers(result, snaps)
    return result
