"""The dependency graph of a scan as data (pure), and its renderings: Graphviz dot, Mermaid, SVG.

Nodes are the tasks a person asks about — pending (ready, waiting, blocked,
stuck), launching, dispatched and failed — plus the dependencies they name
(done, or missing). An edge points from a dependency to the task waiting on
it; edges and nodes on a dependency cycle are flagged.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

from dispatcher.core.gate import DoneIndex, find_cycles, format_path
from dispatcher.core.plan import Plan
from dispatcher.core.taskfile import DepRef, Task

#: Node states, in the order a legend lists them.
STATES = ("ready", "waiting", "blocked", "stuck", "launching", "dispatched", "failed", "done", "missing")
#: States a person must look at (highlighted in every rendering).
ALERT = frozenset({"blocked", "stuck", "failed", "missing"})


@dataclass(frozen=True)
class Node:
    """One task in the graph."""

    key: str
    state: str
    title: str = ""
    reason: str = ""
    cycle: bool = False


@dataclass(frozen=True)
class Edge:
    """``dep`` must be done before ``task`` may run."""

    dep: str
    task: str
    cycle: bool = False


@dataclass
class Graph:
    """Nodes by key, edges, and each cycle as a path (``a:A → b:B → a:A``)."""

    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    cycles: list[str] = field(default_factory=list)
    #: Pending tasks left out (over the limit; their dependents still show them as a node).
    omitted: int = 0

    def as_dict(self) -> dict[str, object]:
        """JSON form (``dispatcher graph --format json``)."""
        return {"nodes": [vars(n) for n in self.nodes.values()], "edges": [vars(e) for e in self.edges],
                "cycles": list(self.cycles), "omitted": self.omitted}


def build(plan: Plan, *, limit: int = 2000) -> Graph:
    """The graph of ``plan`` (at most ``limit`` task nodes: a person cannot read more)."""
    # The tasks that need a person come first: they are drawn even when the rest is cut at ``limit``.
    everything: list[tuple[Task, str, str]] = [(t, "stuck", why) for t, why in plan.stuck]
    everything += [(t, "blocked", why) for t, why in plan.blocked]
    everything += [(t, "waiting", why) for t, why in plan.waiting]
    everything += [(t, "ready", "") for t in plan.eligible]
    pending = everything[:limit]
    state_of = {str(t.key): state for t, state, _ in everything}
    cycles = find_cycles([t for t, _, _ in pending], DoneIndex({}))
    cycle_edges = {(str(a), str(b)) for path in cycles.values() for a, b in zip(path, path[1:])}
    g = Graph(omitted=len(everything) - len(pending))
    for task, state, why in pending:
        g.nodes[str(task.key)] = Node(str(task.key), state, task.title, why, task.key in cycles)
    for state in ("launching", "dispatched", "failed"):
        for project, task_id in plan.in_flight.get(state, []):
            g.nodes.setdefault(f"{project}:{task_id}", Node(f"{project}:{task_id}", state))
    unmet: set[DepRef] = {dep for gate in plan.unmet.values() for dep in gate.missing}
    for task, _, _ in pending:
        for dep in task.depends_on:
            key = str(dep)
            if key not in g.nodes:
                g.nodes[key] = Node(key, state_of.get(key) or ("missing" if dep in unmet else "done"))
            # find_cycles walks task → dep; an edge here points dep → task.
            g.edges.append(Edge(key, str(task.key), (str(task.key), key) in cycle_edges))
    seen: set[frozenset[DepRef]] = set()
    for path in cycles.values():
        members = frozenset(path)
        if members not in seen:
            seen.add(members)
            ring = path[:-1]
            first = ring.index(min(ring))  # one spelling per cycle, whichever member found it
            g.cycles.append(format_path((*ring[first:], *ring[:first], ring[first])))
    g.cycles.sort()
    return g


def layers(g: Graph) -> list[list[str]]:
    """Columns for drawing: each node after its dependencies (a cycle is cut where the walk meets it again)."""
    preds: dict[str, list[str]] = {k: [] for k in g.nodes}
    for e in g.edges:
        preds[e.task].append(e.dep)
    depth: dict[str, int] = {}
    for start in sorted(g.nodes):
        stack, on_path = [start], set()
        while stack:  # iterative longest-path (a 5000-task chain needs no recursion)
            node = stack[-1]
            if node in depth:
                stack.pop()
                continue
            on_path.add(node)
            todo = [p for p in preds[node] if p not in depth and p not in on_path]
            if todo:
                stack.extend(todo)
                continue
            depth[node] = 1 + max((depth.get(p, -1) for p in preds[node]), default=-1)
            on_path.discard(node)
            stack.pop()
    cols: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for node in sorted(g.nodes):
        cols[depth[node]].append(node)
    pos: dict[str, float] = {k: i for i, k in enumerate(cols[0])} if cols else {}
    for col in cols[1:]:  # one barycentre pass: a node sits near the dependencies it waits on
        col.sort(key=lambda k: (sum(pos.get(p, 0) for p in preds[k]) / max(len(preds[k]), 1), k))
        pos.update({k: i for i, k in enumerate(col)})
    return cols


def _ident(key: str, ids: dict[str, str]) -> str:
    """A safe, unique identifier for dot/Mermaid (task IDs may contain '.', '-', ':')."""
    return ids.setdefault(key, f"n{len(ids)}_" + re.sub(r"[^A-Za-z0-9_]", "_", key))


def _dot_str(*lines: str) -> str:
    """A quoted dot string; ``lines`` joined by dot's own line break."""
    return '"' + "\\n".join(x.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") for x in lines) + '"'


_DOT_FILL = {"ready": "palegreen", "waiting": "lightyellow", "blocked": "orange", "stuck": "tomato",
             "launching": "lightblue", "dispatched": "lightblue", "failed": "red", "done": "lightgrey",
             "missing": "white"}


def render_dot(g: Graph) -> str:
    """Graphviz: ``dispatcher graph --format dot | dot -Tsvg > graph.svg``."""
    ids: dict[str, str] = {}
    out = ["digraph tasks {", "  rankdir=LR;", '  node [shape=box, style="rounded,filled", fontname="sans-serif"];']
    for key, n in sorted(g.nodes.items()):
        label = _dot_str(key, n.state)
        attrs = [f"label={label}", f"fillcolor={_DOT_FILL.get(n.state, 'white')}"]
        if n.cycle:
            attrs += ["color=red", "penwidth=3"]
        if n.state == "missing":
            attrs.append('style="rounded,dashed"')
        out.append(f"  {_ident(key, ids)} [{', '.join(attrs)}];")
    for e in g.edges:
        extra = " [color=red, penwidth=2]" if e.cycle else ""
        out.append(f"  {_ident(e.dep, ids)} -> {_ident(e.task, ids)}{extra};")
    out.append("}")
    return "\n".join(out)


def render_mermaid(g: Graph) -> str:
    """Mermaid (paste into a Markdown file on GitHub/GitLab)."""
    ids: dict[str, str] = {}
    out = ["flowchart LR"]
    for key, n in sorted(g.nodes.items()):
        label = re.sub(r'["<>#&]', "_", f"{key} ({n.state})")
        out.append(f'  {_ident(key, ids)}["{label}"]:::{n.state}')
    for i, e in enumerate(g.edges):
        out.append(f"  {_ident(e.dep, ids)} --> {_ident(e.task, ids)}")
        if e.cycle:
            out.append(f"  linkStyle {i} stroke:red,stroke-width:3px")
    for state, fill in _DOT_FILL.items():
        out.append(f"  classDef {state} fill:{fill}")
    return "\n".join(out)


def render_svg(g: Graph, *, node_w: int = 170, node_h: int = 34, gap_x: int = 60, gap_y: int = 14) -> str:
    """A self-contained SVG (the fleet page): columns by dependency depth, cycle edges and alerts highlighted."""
    cols = layers(g)
    xy: dict[str, tuple[int, int]] = {}
    for c, col in enumerate(cols):
        for r, key in enumerate(col):
            xy[key] = (10 + c * (node_w + gap_x), 24 + r * (node_h + gap_y))  # room above for arcs
    width = 20 + max(len(cols), 1) * (node_w + gap_x) - gap_x
    height = 34 + node_h + max((len(c) for c in cols), default=1) * (node_h + gap_y)  # room below for back edges
    esc = html.escape
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="depgraph" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="task dependency graph">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerUnits="userSpaceOnUse" '
             'markerWidth="9" markerHeight="9" '
             'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="context-stroke"/></marker></defs>']
    for e in g.edges:
        (x1, y1), (x2, y2) = xy[e.dep], xy[e.task]
        if x2 > x1 + node_w + gap_x:  # skips a column: arc over the nodes in between, not through them
            sx, sy, tx, ty = x1 + node_w, y1 + node_h // 2, x2, y2 + node_h // 2
            lift = min(sy, ty) - node_h
            path = f"M{sx},{sy} C{sx + gap_x},{lift} {tx - gap_x},{lift} {tx},{ty}"
        elif x2 > x1:
            sx, sy, tx, ty = x1 + node_w, y1 + node_h // 2, x2, y2 + node_h // 2
            path = f"M{sx},{sy} C{sx + gap_x // 2},{sy} {tx - gap_x // 2},{ty} {tx},{ty}"
        elif (x1, y1) == (x2, y2):  # a task that depends on itself
            sx, sy = x1 + node_w, y1 + node_h // 2
            path = f"M{sx},{sy - 8} C{sx + 40},{sy - 30} {sx + 40},{sy + 30} {sx},{sy + 8}"
        else:  # a back edge (cycle): loop below the nodes so it stays visible
            sx, sy, tx, ty = x1 + node_w // 2, y1 + node_h, x2 + node_w // 2, y2 + node_h
            drop = max(sy, ty) + node_h
            path = f"M{sx},{sy} C{sx},{drop} {tx},{drop} {tx},{ty}"
        cls = "edge cycle" if e.cycle else "edge"
        parts.append(f'<path class="{cls}" data-from="{esc(e.dep)}" data-to="{esc(e.task)}" d="{path}" '
                     'marker-end="url(#arrow)"/>')
    for key, n in g.nodes.items():
        x, y = xy[key]
        cls = " ".join(["node", n.state] + (["cycle"] if n.cycle else []) + (["alert"] if n.state in ALERT else []))
        tip = f"{key} — {n.state}" + (f": {n.reason}" if n.reason else "") + (f"\n{n.title}" if n.title else "")
        label = key if len(key) <= 24 else key[:23] + "…"
        parts.append(f'<g class="{cls}" data-task="{esc(key)}" data-state="{n.state}"><title>{esc(tip)}</title>'
                     f'<rect x="{x}" y="{y}" width="{node_w}" height="{node_h}" rx="6"/>'
                     f'<text x="{x + 8}" y="{y + 14}">{esc(label)}</text>'
                     f'<text class="state" x="{x + 8}" y="{y + 28}">'
                     f'{n.state}{" · cycle" if n.cycle else ""}</text></g>')
    parts.append("</svg>")
    return "".join(parts)


#: ``dispatcher graph --format`` (text is report.render_graph's tree).
RENDERERS = {"dot": render_dot, "mermaid": render_mermaid, "svg": render_svg}
