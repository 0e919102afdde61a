"""The plan of one pass (pure): classify every pending file and say what may dispatch, in order.

The inbox adapter (:mod:`dispatcher.inbox.scanner`) lists and reads; this
module only decides, over the values it is handed, so every rule is tested on
hand-built listings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dispatcher.core import defaults as d
from dispatcher.core.errors import TaskFileError, TaskIncomplete
from dispatcher.core.gate import DoneIndex, GateResult, check, find_cycles, format_path
from dispatcher.core.listing import Identity, ProjectListing, is_settled
from dispatcher.core.ordering import order_tasks
from dispatcher.core.taskfile import DepRef, Task

#: In-flight states by the suffix after ``<id>.md``.
IN_FLIGHT = {"launching": d.LAUNCHING, "dispatched": d.DISPATCHED, "failed": d.FAILED}


@dataclass(frozen=True)
class Problem:
    """A task file that cannot be dispatched as it is, with the reason."""

    project: str
    name: str
    path: Path
    reason: str


@dataclass(frozen=True, slots=True)
class Loaded:
    """What was read for one pending ``<id>.md``: a Task, or the error and when."""

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
    #: What the marker writer changed on disk: (event kind, task, detail), for the event log.
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


def pending_names(listing: ProjectListing) -> list[str]:
    """Names of the pending task files ``<id>.md`` of one listing, sorted (hidden temp files excluded)."""
    return sorted(n for n in listing.inbox if n.endswith(d.TASK_SUFFIX) and not n.startswith("."))


def in_flight(listings: list[ProjectListing]) -> dict[str, list[tuple[str, str]]]:
    """``state -> [(project, id)]`` of the launching, dispatched and failed files, sorted by project then name."""
    out: dict[str, list[tuple[str, str]]] = {k: [] for k in IN_FLIGHT}
    marker = d.TASK_SUFFIX + "."
    for listing in listings:
        # Only names with ".md." can be in flight: test that first and sort those alone (not every pending name).
        for name in sorted(n for n in listing.inbox if marker in n and not n.startswith(".")):
            for state, suffix in _FLIGHT_ENDINGS:
                if name.endswith(suffix):
                    out[state].append((listing.project.name, name[: -len(suffix)]))
    return out


_FLIGHT_ENDINGS = tuple((state, d.TASK_SUFFIX + suffix) for state, suffix in IN_FLIGHT.items())


def _why(err: TaskFileError) -> str:
    """The reason with its line number (a YAML error without "line 3" is hard to find)."""
    return f"line {err.line}: {err.reason}" if err.line is not None else err.reason


def at_limit_reason(running: int, limit: int) -> str:
    """The waiting reason of a task whose project already runs (or is about to run) ``limit`` tasks."""
    return f"project at its limit ({running}/{limit})"


def cap(ordered: list[Task], flight: Mapping[str, list[tuple[str, str]]],
        limit_of: Callable[[str], int]) -> tuple[list[Task], list[tuple[Task, str]]]:
    """Keep, in order, the tasks each project still has room for; the rest wait (others' order unchanged)."""
    taken: dict[str, int] = {}
    for state in ("launching", "dispatched"):
        for proj, _ in flight.get(state, []):
            taken[proj] = taken.get(proj, 0) + 1
    kept: list[Task] = []
    waiting: list[tuple[Task, str]] = []
    limits: dict[str, int] = {}
    reasons: dict[tuple[int, int], str] = {}
    for task in ordered:
        limit = limits.get(task.project)
        if limit is None:
            limit = limits[task.project] = limit_of(task.project)
        n = taken.get(task.project, 0)
        if limit and n >= limit:
            reason = reasons.get((n, limit))
            if reason is None:  # one text per (running, limit), not one per waiting task (100,000 may wait)
                reason = reasons[n, limit] = at_limit_reason(n, limit)
            waiting.append((task, reason))
            continue
        taken[task.project] = n + 1  # an earlier task of the project goes first and takes a slot
        kept.append(task)
    return kept, waiting


def plan(listings: list[ProjectListing], loaded: Sequence[Loaded | Task], *, now: float, incomplete_grace: float,
         settle_time: float = 0.0, closed: Mapping[tuple[str, str], Identity] | None = None,
         limit_of: Callable[[str], int] | None = None) -> Plan:
    """Classify every pending file (a Loaded, or a Task read without trouble) and order the eligible ones.

    ``limit_of(project)`` caps how many tasks of a project run at once (0: no cap); counting
    its ``.launching`` and ``.dispatched`` files, the eligible tasks beyond it wait.

    ``closed`` holds the identities the watcher saw when each file's writer was done
    (``store.settle.closed_files``); a file neither closed nor unchanged for ``settle_time``
    is still being written, and is neither judged nor dispatched yet.
    """
    closed = closed or {}
    done = DoneIndex({s.project.name: s.done for s in listings})
    result = Plan(projects=[s.project.name for s in listings],
                  done_counts={s.project.name: len(s.done) for s in listings},
                  in_flight=in_flight(listings))
    busy_ids = {(p, i) for state in ("launching", "dispatched") for p, i in result.in_flight[state]}
    inbox_of = {s.project.name: s.inbox for s in listings}
    tasks: list[Task] = []
    task: Task | None
    error: TaskFileError | None
    for item in loaded:
        if isinstance(item, Task):  # read and parsed: a Task stands for Loaded(task=it) (a scan keeps no wrapper)
            project, path, mtime, task, error, marker = item.project, item.path, item.mtime, item, None, None
        else:
            project, path, mtime, task, error, marker = (item.project, item.path, item.mtime, item.task, item.error,
                                                         item.invalid_marker)
        name = path.name
        entry = inbox_of.get(project, {}).get(name)
        if marker is not None:
            result.invalid.append(Problem(project, name, path, marker))
        elif entry is not None and entry.regular and not is_settled(
                entry.version, now=now, settle_time=settle_time, closed=closed.get((project, name))):
            if entry.size == 0 and now - mtime >= incomplete_grace:
                result.invalid.append(Problem(project, name, path, "file is empty: write the task into it"))
            elif entry.size == 0:
                result.incomplete.append(Problem(project, name, path, "file is empty (still being written?)"))
            else:
                result.incomplete.append(Problem(project, name, path, (
                    f"still being written (changed {max(0.0, now - mtime):.1f}s ago; waits until its writer "
                    f"closes it or it is unchanged for {settle_time:g}s)")))
                at = entry.mtime_ns / 1e9 + settle_time
                result.settles_at = at if result.settles_at is None else min(result.settles_at, at)
        elif isinstance(error, TaskIncomplete) and now - mtime < incomplete_grace:
            result.incomplete.append(Problem(project, name, path, _why(error)))
        elif error is not None:
            result.invalid.append(Problem(project, name, path, _why(error)))
        elif task is not None:
            tasks.append(task)
    cycles = find_cycles(tasks, done)
    eligible: list[Task] = []
    for task in tasks:
        if (task.project, task.id) in busy_ids:
            result.waiting.append((task, "a task with the same ID is still launching or dispatched"))
            continue
        if cycles and task.key in cycles:
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
        result.eligible, capped = cap(result.eligible, result.in_flight, limit_of)
        result.waiting += capped
    return result


def fresh_files(listings: list[ProjectListing], *, now: float, settle_time: float) -> list[tuple[str, str]]:
    """``(project, name)`` of the non-empty task files not yet settled by age."""
    return [(s.project.name, name) for s in listings for name, e in s.inbox.items()
            if name.endswith(d.TASK_SUFFIX) and e.regular and e.size > 0 and now - e.mtime_ns / 1e9 < settle_time]
