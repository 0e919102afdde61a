"""The dependency graph model and its SVG (pure): states, cycles, layout, escaping of hostile text."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from dispatcher.core import depgraph


def test_states_done_missing_and_columns(make_project, scan):
    make_project("p", tasks={"A": {}, "B": {"depends_on": ("A",)}, "C": {"depends_on": ("B", "DONE1", "NOPE")}},
                 done=["DONE1.md"])
    g = depgraph.build(scan(write=False))
    assert {k: n.state for k, n in g.nodes.items()} == {"p:A": "ready", "p:B": "blocked", "p:C": "blocked",
                                                         "p:DONE1": "done", "p:NOPE": "missing"}
    cols = depgraph.layers(g)
    assert cols[0] == ["p:A", "p:DONE1", "p:NOPE"] and cols[1] == ["p:B"] and cols[2] == ["p:C"]
    assert not g.cycles and not any(e.cycle for e in g.edges)


def test_hostile_titles_and_reasons_are_escaped_in_svg(make_project, scan):
    evil = '<script>alert(1)</script>" onload="x'
    make_project("p", tasks={"A": {"title": evil, "depends_on": ("B",)}, "B": {"depends_on": ("A",)}})
    svg = depgraph.render_svg(depgraph.build(scan(write=False)))
    assert "<script>" not in svg and 'onload="x' not in svg
    root = ET.fromstring(svg)  # well-formed XML
    cycle_nodes = [g for g in root.iter("{http://www.w3.org/2000/svg}g") if "cycle" in g.get("class", "")]
    assert len(cycle_nodes) == 2


def test_a_long_chain_and_a_self_loop(make_project, scan):
    tasks = {f"T{i}": {"depends_on": (f"T{i - 1}",)} if i else {} for i in range(1500)}
    tasks["SELF"] = {"depends_on": ("SELF",)}
    make_project("p", tasks=tasks)
    g = depgraph.build(scan(write=False))
    cols = depgraph.layers(g)  # no recursion limit on a 1500-deep chain
    assert len(cols) == 1500 and g.nodes["p:SELF"].cycle and g.cycles == ["p:SELF → p:SELF"]
    ET.fromstring(depgraph.render_svg(g))
    cut = depgraph.build(scan(write=False), limit=100)
    assert cut.omitted == 1401 and g.nodes["p:SELF"].cycle
    # A dependency left out is still shown in its true state, not as "missing".
    assert {n.state for n in cut.nodes.values()} <= {"blocked", "ready"}
