"""Text renderings of a scan plan and of the dependency graph (pure: return strings)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from dispatcher.core.gate import format_path
from dispatcher.core.plan import Plan
from dispatcher.core.taskfile import DepRef, Task


def _label(task: Task) -> str:
    title = f"  {task.title}" if task.title else ""
    return f"{task.project}:{task.id} [{task.priority.value}]{title}"


def _split_held(result: Plan, holds: Mapping[str, str] | None) -> tuple[list[Task], list[tuple[Task, str]]]:
    """Eligible tasks that will dispatch, and those whose project is held (with the hold's reason)."""
    holds = holds or {}
    return ([t for t in result.eligible if t.project not in holds],
            [(t, holds[t.project]) for t in result.eligible if t.project in holds])


def render_plan(result: Plan, holds: Mapping[str, str] | None = None) -> str:
    """What ``dispatcher scan --dry-run`` prints: order, reasons, counts per project; ``holds``: project → reason."""
    ready, held = _split_held(result, holds)
    lines: list[str] = [f"Eligible, in dispatch order ({len(ready)}):"]
    lines += [f"  {n:>3}. {_label(t)}" for n, t in enumerate(ready, 1)] or ["  (none)"]
    sections: list[tuple[str, list[str]]] = [
        ("Held", [f"  {_label(t)}  — held: {why}" for t, why in held]),
        ("Blocked", [f"  {_label(t)}  — {why}" for t, why in result.blocked]),
        ("Stuck", [f"  {_label(t)}  — {why}" for t, why in result.stuck]),
        ("Waiting", [f"  {_label(t)}  — {why}" for t, why in result.waiting]),
        ("Invalid", [f"  {p.project}/{p.name}  — {p.reason}" for p in result.invalid]),
        ("Incomplete (retried)", [f"  {p.project}/{p.name}  — {p.reason}" for p in result.incomplete]),
    ]
    for title, rows in sections:
        if rows:
            lines += ["", f"{title} ({len(rows)}):", *rows]
    lines += ["", render_counts(result.counts())]
    return "\n".join(lines)


def render_counts(counts: dict[str, dict[str, int]]) -> str:
    """A table of per-project counts."""
    cols = ["pending", "blocked", "stuck", "invalid", "launching", "dispatched", "failed", "done"]
    width = max([len("project")] + [len(p) for p in counts])
    head = "project".ljust(width) + "".join(c.rjust(11) for c in cols)
    rows = [p.ljust(width) + "".join(str(c.get(k, 0)).rjust(11) for k in cols) for p, c in sorted(counts.items())]
    return "\n".join([head, *rows]) if rows else "no projects found (each needs a .agent-queue/ directory)"


def plan_json(result: Plan, holds: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Machine-readable form of a plan (tasks of held projects under ``held``, not ``eligible``)."""
    ready, held = _split_held(result, holds)

    def t(task: Task, why: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"project": task.project, "id": task.id, "priority": task.priority.value,
                               "title": task.title, "depends_on": [str(x) for x in task.depends_on]}
        if why is not None:
            out["reason"] = why
        return out
    return {
        "eligible": [t(x) for x in ready],
        "held": [t(x, w) for x, w in held],
        "blocked": [t(x, w) for x, w in result.blocked],
        "stuck": [t(x, w) for x, w in result.stuck],
        "waiting": [t(x, w) for x, w in result.waiting],
        "invalid": [{"project": p.project, "file": p.name, "reason": p.reason} for p in result.invalid],
        "incomplete": [{"project": p.project, "file": p.name, "reason": p.reason} for p in result.incomplete],
        "counts": result.counts(),
    }


def render_graph(result: Plan) -> str:
    """Dependency tree of pending tasks; cycles and missing deps highlighted."""
    tasks = {t.key: t for t in [*result.eligible, *(t for t, _ in result.blocked + result.stuck + result.waiting)]}
    dependents: dict[DepRef, list[DepRef]] = {}
    for t in tasks.values():
        for dep in t.depends_on:
            dependents.setdefault(dep, []).append(t.key)
    roots = sorted(k for k, t in tasks.items() if not any(dep in tasks for dep in t.depends_on))
    lines: list[str] = []

    def status(key: DepRef) -> str:
        gate = result.unmet.get(key)
        if gate is None:
            return "ready"
        return "blocked: " + gate.explain()

    def walk(key: DepRef, depth: int, seen: frozenset[DepRef]) -> None:
        if key in seen:
            lines.append("  " * depth + f"↻ {key}  (CYCLE)")
            return
        lines.append("  " * depth + f"{'└─ ' if depth else ''}{key}  [{status(key)}]")
        for child in sorted(dependents.get(key, [])):
            walk(child, depth + 1, seen | {key})

    for root in roots:
        walk(root, 0, frozenset())
    cyc = [(t, why) for t, why in result.blocked + result.stuck if why.startswith("dependency cycle")]
    if cyc:
        lines += ["", "CYCLES:"] + [f"  !! {why[len('dependency cycle: '):]}" for _, why in cyc]
    missing = sorted({str(dep) for g in result.unmet.values() for dep in g.missing if dep not in tasks})
    if missing:
        lines += ["", "Missing (not pending, not done): " + ", ".join(missing)]
    return "\n".join(lines) if lines else "no pending tasks"


__all__ = ["render_plan", "render_counts", "plan_json", "render_graph", "format_path"]


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False)
