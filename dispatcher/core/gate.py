"""Dependency gate (pure): is every ``depends_on`` entry of a task in its project's done/?

The done-index is built from one listing of each project's done/ per pass, so
a gate check costs O(number of deps), whatever the size of done/.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from dispatcher.core import defaults as d
from dispatcher.core.taskfile import DepRef, Task


class GateStatus(str, Enum):
    """Outcome of the gate for one task."""

    MET = "met"
    UNMET = "unmet"


@dataclass(frozen=True)
class GateResult:
    """Gate outcome with the deps still missing (in declaration order)."""

    status: GateStatus
    missing: tuple[DepRef, ...] = ()
    unknown_projects: tuple[str, ...] = ()

    @property
    def met(self) -> bool:
        return self.status is GateStatus.MET

    def explain(self) -> str:
        """Human text: which deps are missing and why."""
        if self.met:
            return "all dependencies done"
        parts = [f"waiting on {', '.join(map(str, self.missing))}"]
        if self.unknown_projects:
            parts.append(f"no such project: {', '.join(self.unknown_projects)}")
        return "; ".join(parts)


class DoneIndex:
    """Which task IDs count as done, per project (exact ``t.md`` or ``t<sep>….md``)."""

    def __init__(self, done_names: Mapping[str, Iterable[str]]) -> None:
        self._done: dict[str, set[str]] = {}
        for project, names in done_names.items():
            ids: set[str] = set()
            for name in names:
                if not name.endswith(d.TASK_SUFFIX):
                    continue
                stem = name[: -len(d.TASK_SUFFIX)]
                ids.add(stem)
                # A timestamped copy T1-2026….md also satisfies T1 (never T10 for T1):
                # index every prefix that ends right before a separator.
                for i, ch in enumerate(stem):
                    if ch in d.DONE_SEPARATORS and i > 0:
                        ids.add(stem[:i])
            self._done[project] = ids

    def has_project(self, project: str) -> bool:
        return project in self._done

    def is_done(self, dep: DepRef) -> bool:
        """True when ``dep`` is satisfied by a file in its project's done/."""
        return dep.task_id in self._done.get(dep.project, ())

    def projects(self) -> frozenset[str]:
        return frozenset(self._done)


_MET = GateResult(GateStatus.MET)


def check(task: Task, done: DoneIndex) -> GateResult:
    """Gate one task: MET when every dependency is done, else UNMET with the missing ones."""
    if not task.depends_on:
        return _MET
    missing = tuple(dep for dep in task.depends_on if not done.is_done(dep))
    if not missing:
        return _MET
    unknown = tuple(sorted({dep.project for dep in missing if not done.has_project(dep.project)}))
    return GateResult(GateStatus.UNMET, missing, unknown)


def find_cycles(tasks: Iterable[Task], done: DoneIndex) -> dict[DepRef, tuple[DepRef, ...]]:
    """Dependency cycles among pending tasks (across projects too).

    Returns, for each task on a cycle, the cycle path starting and ending at
    that task, e.g. ``a:A → b:B → a:A``. Done deps break no cycle because they
    are not edges: only pending tasks that wait on pending tasks count.
    """
    tasks = list(tasks)
    pending = {(t.project, t.id) for t in tasks}
    # Edges of the tasks that wait on pending tasks only: a task without one is on no cycle.
    edges: dict[DepRef, list[DepRef]] = {}
    for t in tasks:
        succ = [dep for dep in t.depends_on if (dep.project, dep.task_id) in pending and not done.is_done(dep)]
        if succ:
            edges[t.key] = succ
    # Tarjan's strongly connected components, iterative (no recursion limit on long chains).
    index: dict[DepRef, int] = {}
    low: dict[DepRef, int] = {}
    on_stack: set[DepRef] = set()
    stack: list[DepRef] = []
    counter = 0
    cycles: dict[DepRef, tuple[DepRef, ...]] = {}
    # Start from those alone (most tasks wait on nothing; sorting or walking them all was most of a warm scan).
    for root in sorted(edges):
        if root in index:
            continue
        work: list[tuple[DepRef, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            succ = edges.get(node, [])
            if i < len(succ):
                work.append((node, i + 1))
                nxt = succ[i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                comp: list[DepRef] = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1 or node in edges.get(node, ()):
                    members = set(comp)
                    for member in comp:
                        if member in cycles:
                            continue
                        path = _cycle_path(member, edges, members)
                        # Every task on this cycle gets it, rotated: one BFS per cycle, not per
                        # member (a 5000-task ring would otherwise cost 5000 BFS per scan).
                        ring = path[:-1]
                        for i, node in enumerate(ring):
                            cycles.setdefault(node, (*ring[i:], *ring[:i], node))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return cycles


def _cycle_path(start: DepRef, edges: Mapping[DepRef, list[DepRef]], members: set[DepRef]) -> tuple[DepRef, ...]:
    """Shortest path start → … → start inside one strongly connected component (BFS)."""
    prev: dict[DepRef, DepRef] = {}
    frontier = [start]
    seen = {start}
    while frontier:
        nxt_frontier: list[DepRef] = []
        for node in frontier:
            for nxt in edges[node]:
                if nxt not in members:
                    continue
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return (start, *reversed(path[:-1]), start) if node != start else (start, start)
                if nxt not in seen:
                    seen.add(nxt)
                    prev[nxt] = node
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    return (start, start)


def format_path(path: Iterable[DepRef]) -> str:
    """``a:A → b:B → a:A``."""
    return " → ".join(map(str, path))
