"""One scan pass over real project directories: classification, order, markers, counts and reports."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from dispatcher.core import defaults as d
from dispatcher.core.config import ProjectSettings
from dispatcher.core.report import plan_json, render_graph, render_plan
from dispatcher.inbox import markers


def test_eligible_tasks_across_projects_come_out_in_dispatch_order(make_project, scan, keys):
    make_project("web", tasks={"W1": {"priority": "low"}, "W2": {}, "W3": {}, "W4": {"priority": "critical"}},
                 mtimes={"W1": 10, "W2": 20, "W3": 30, "W4": 40})
    make_project("api", tasks={"A1": {}, "A2": {"priority": "high"}}, mtimes={"A1": 25, "A2": 50})

    plan = scan()

    assert keys(plan.eligible) == ["web:W4", "api:A2", "web:W2", "api:A1", "web:W3", "web:W1"]


def test_a_project_at_its_limit_waits_and_the_others_keep_their_order(make_project, scan, keys):
    web = make_project("web", tasks={"W1": {"priority": "low"}, "W2": {}, "W3": {}, "W4": {"priority": "critical"}},
                       mtimes={"W1": 10, "W2": 20, "W3": 30, "W4": 40})
    make_project("api", tasks={"A1": {}, "A2": {"priority": "high"}}, mtimes={"A1": 25, "A2": 50})
    web.task_path("W0", d.DISPATCHED).write_text("running")
    capped = {"web": ProjectSettings(max_parallel=2)}

    plan = scan(max_parallel=1, projects_config=capped)

    # web runs W0 and may start one more (its first in order); api (default cap 1) starts its first.
    assert keys(plan.eligible) == ["web:W4", "api:A2"]
    assert [(str(t.key), why) for t, why in plan.waiting] == [
        ("web:W2", "project at its limit (2/2)"), ("api:A1", "project at its limit (1/1)"),
        ("web:W3", "project at its limit (2/2)"), ("web:W1", "project at its limit (2/2)")]
    assert plan.counts()["web"]["pending"] == 4
    assert "web:W2" in render_plan(plan) and "project at its limit (2/2)" in render_plan(plan)


def test_the_default_cap_is_one_per_shared_checkout_and_none_per_worktree_project(make_project, scan, keys):
    make_project("web", tasks={"W1": {}, "W2": {}})
    make_project("api", tasks={"A1": {}, "A2": {}})

    plan = scan(max_parallel=d.MAX_PARALLEL, projects_config={"web": ProjectSettings(isolation="worktree")})

    assert sorted(keys(plan.eligible)) == ["api:A1", "web:W1", "web:W2"]
    assert keys(plan.waiting) == ["api:A2"]


def test_hidden_temp_and_non_md_files_are_ignored(make_project, scan, keys):
    proj = make_project("web", tasks={"T1": "x"})
    (proj.inbox / ".T2.123.tmp").write_text("---\ntitle: half")
    (proj.inbox / ".T3.md").write_text("hidden")
    (proj.inbox / "notes.txt").write_text("x")
    (proj.inbox / "README").write_text("x")

    plan = scan()

    assert keys(plan.eligible) == ["web:T1"] and plan.invalid == [] and plan.incomplete == []


def test_configured_project_list_limits_the_scan(make_project, scan, keys):
    make_project("web", tasks={"W": "x"})
    make_project("api", tasks={"A": "x"})

    plan = scan(projects=("api",))

    assert keys(plan.eligible) == ["api:A"] and plan.projects == ["api"]


def test_in_flight_states_are_counted_and_block_a_duplicate_id(make_project, scan, keys):
    proj = make_project("web", tasks={"T1": "again", "T2": "x", "T3": "x"}, done=["T0.md"])
    proj.task_path("T1", d.LAUNCHING).write_text("first copy")
    proj.task_path("T9", d.DISPATCHED).write_text("x")
    proj.task_path("T8", d.FAILED).write_text("x")

    plan = scan()

    assert keys(plan.eligible) == ["web:T2", "web:T3"]
    assert keys(plan.waiting) == ["web:T1"]
    assert plan.in_flight == {"launching": [("web", "T1")], "dispatched": [("web", "T9")], "failed": [("web", "T8")]}
    assert plan.counts()["web"] == {"pending": 3, "blocked": 0, "stuck": 0, "invalid": 0, "launching": 1,
                                    "dispatched": 1, "failed": 1, "done": 1}


def test_stuck_marker_moves_a_blocked_task_to_stuck(make_project, scan, keys):
    proj = make_project("web", tasks={"T2": {"depends_on": ("T1",)}})
    markers.write_marker(proj.task_path("T2"), d.STUCK, "waiting on web:T1")

    plan = scan()

    assert keys(plan.stuck) == ["web:T2"] and plan.blocked == []
    assert plan.stuck[0][1] == "waiting on web:T1"


def test_eligible_task_loses_stale_blocked_and_stuck_markers(make_project, scan, keys):
    proj = make_project("web", tasks={"T2": {"depends_on": ("T1",)}}, done=["T1-20260101.md"])
    markers.mark_blocked(proj.task_path("T2"))
    markers.write_marker(proj.task_path("T2"), d.STUCK, "waiting on web:T1")

    plan = scan()

    assert keys(plan.eligible) == ["web:T2"]
    assert sorted(p.name for p in proj.inbox.iterdir()) == ["T2.md"]


def test_markers_are_stable_across_passes(make_project, scan):
    proj = make_project("web", tasks={"bad": "---\npriority: x\n---\n", "wait": {"depends_on": ("T0",)}})
    os.utime(proj.inbox / "bad.md", (1_000, 1_000))
    scan()
    for marker in ("bad.md.invalid", "wait.md.blocked"):
        os.utime(proj.inbox / marker, (5_000, 5_000))

    for _ in range(3):
        scan()

    assert (proj.inbox / "bad.md.invalid").stat().st_mtime == 5_000
    assert (proj.inbox / "wait.md.blocked").stat().st_mtime == 5_000


def test_plan_reports_unknown_project_and_waiting_chain(make_project, scan):
    make_project("web", tasks={"A": {"depends_on": ("B",)}, "B": {"depends_on": ("nope:X",)}})

    plan = scan(write=False)

    reasons = {t.id: why for t, why in plan.blocked}
    assert reasons == {"A": "waiting on web:B", "B": "waiting on nope:X; no such project: nope"}


def test_render_plan_lists_sections_and_counts(make_project, scan):
    make_project("web", tasks={"OK": {"title": "ready one", "priority": "high"}, "W": {"depends_on": ("T0",)},
                               "BAD": "---\npriority: x\n---\n"})

    text = render_plan(scan(write=False))

    assert "Eligible, in dispatch order (1):" in text and "web:OK [high]  ready one" in text
    assert "Blocked (1):" in text and "waiting on web:T0" in text
    assert "Invalid (1):" in text and "web/BAD.md  — unknown priority 'x'" in text
    assert text.splitlines()[-1].split() == ["web", "1", "1", "0", "1", "0", "0", "0", "0"]


def test_plan_json_is_machine_readable(make_project, scan):
    make_project("web", tasks={"OK": {}, "W": {"depends_on": ("api:T0",)}})

    data = plan_json(scan(write=False))

    assert [x["id"] for x in data["eligible"]] == ["OK"]
    assert data["blocked"][0]["depends_on"] == ["api:T0"] and "reason" in data["blocked"][0]


def test_render_graph_shows_tree_and_cycles(make_project, scan):
    make_project("web", tasks={"A": {}, "B": {"depends_on": ("A",)}, "X": {"depends_on": ("Y",)},
                               "Y": {"depends_on": ("X",)}, "M": {"depends_on": ("gone:Z",)}})

    text = render_graph(scan(write=False))

    assert "web:A  [ready]" in text and "└─ web:B  [blocked: waiting on web:A]" in text
    assert "CYCLES:" in text and "!! web:X → web:Y → web:X" in text
    assert "Missing (not pending, not done): gone:Z" in text


def test_no_projects_renders_a_hint(scan):
    assert "no projects found" in render_plan(scan(write=False))


def test_directories_squatting_marker_names_do_not_stop_the_pass(make_project, scan, keys):
    proj = make_project("web", tasks={"bad": "---\npriority: x\n---\n", "ok": "fine", "wait": {"depends_on": ("T0",)}})
    for squatted in ("bad.md.invalid", "ok.md.blocked", "wait.md.blocked"):
        (proj.inbox / squatted).mkdir()
    make_project("api", tasks={"A": "fine", "B": "---\npriority: y\n---\n"})

    for _ in range(2):
        plan = scan()

        assert sorted(keys(plan.eligible)) == ["api:A", "web:ok"]
        assert sorted(p.name for p in plan.invalid) == ["B.md", "bad.md"]
        assert keys(plan.blocked) == ["web:wait"]
    assert "unknown priority 'y'" in (proj.root.parent / "api" / ".agent-queue" / "inbox" / "B.md.invalid").read_text()
    assert not [p for p in proj.inbox.iterdir() if p.name.startswith(".")]  # no temp file left behind


def test_a_file_claimed_between_listing_and_reading_is_gone_not_invalid(make_project, scan, keys, tmp_path):
    """A claim racing a scan (listed, then moved to .launching before it is opened) leaves no false .invalid.

    Such a marker is newer than the task file, which keeps its mtime through claim and release:
    once the task went back to pending, it would be skipped forever.
    """
    # Big half-written files read before Z.md widen the window between listing and opening it.
    slow = {f"A{i}": "---\ntitle: still being written\n" + "x: y\n" * 20_000 for i in range(5)}
    proj = make_project("web", tasks={**slow, "Z": "work"}, mtimes={"Z": 1_000})
    stop, ready = tmp_path / "stop", tmp_path / "ready"
    code = (  # another process claims and releases Z.md, like a racing worker
        "import sys, time, pathlib\n"
        "from dispatcher.flows import claim as cl\n"
        "path, stop, ready = map(pathlib.Path, sys.argv[1:])\n"
        "ready.touch()\n"
        "while not stop.exists():\n"
        "    claimed = cl.claim(path); time.sleep(0.002); cl.release(claimed); time.sleep(0.002)\n"
    )
    racer = subprocess.Popen([sys.executable, "-c", code, str(proj.task_path("Z")), str(stop), str(ready)])
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert time.monotonic() < deadline and racer.poll() is None, "racer did not start"
            time.sleep(0.01)
        for _ in range(30):
            plan = scan()
            assert plan.invalid == [], plan.invalid
    finally:
        stop.touch()
        racer.wait(timeout=30)

    assert not proj.task_path("Z", d.INVALID).exists()
    assert keys(scan().eligible) == ["web:Z"]
