"""The ready index's pure side (entries, their order) and the single-file checks, on real files (no Redis)."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from dispatcher.core import defaults as d
from dispatcher.core.ordering import order_tasks
from dispatcher.core.ready import ReadyEntry, decode, encode, entry_of, in_order, members_in_order
from dispatcher.core.taskfile import DepRef, Priority, Task
from dispatcher.inbox.ready_check import Verdict, check_new, recheck


def _tasks(seed: int, n: int) -> list[Task]:
    rnd = random.Random(seed)
    projects = [f"p{i}" for i in range(rnd.randint(1, 6))]
    out = []
    for i in range(n):
        project = rnd.choice(projects)
        mtime = float(rnd.choice([1000, 1000.5, 2000, rnd.uniform(0, 1e10)]))  # ties on purpose
        out.append(Task(id=f"T{rnd.randint(0, 40)}-{i}" if rnd.random() < 0.5 else f"T{i}", project=project,
                        path=Path("/x"), priority=rnd.choice(list(Priority)), mtime=mtime, size=rnd.randint(1, 9999)))
    return out


def test_an_entry_round_trips_exactly_through_its_member() -> None:
    for mtime in (0.0, 1.5, 1763000000.123456, -3.25, 1e-300):
        for deps in (False, True):
            e = ReadyEntry("web", "T1-a.b_c", 2, mtime, 123, deps)
            assert decode("web", e.member) == e


def test_malformed_members_are_refused_not_trusted() -> None:
    good = encode(1, 5.0, "T1", 3)
    for bad in ("", "x", good[:10], "9" + good[1:], good.replace("T1", "../x"), good.rsplit(" ", 2)[0] + " big 0",
                good[:-1] + "x"):
        assert decode("web", bad) is None


def test_member_byte_order_is_the_queue_order_of_a_project() -> None:
    tasks = [t for t in _tasks(7, 400) if t.project == "p0"] or _tasks(7, 400)
    by_bytes = sorted(tasks, key=lambda t: entry_of(t).member.encode())
    assert [(t.priority.rank, t.mtime, t.id) for t in by_bytes] == sorted(
        (t.priority.rank, t.mtime, t.id) for t in tasks)


def test_index_order_is_the_plan_order_decoded_or_not() -> None:
    for seed in range(30):
        tasks = _tasks(seed, 120)
        plan = [(t.project, t.id) for t in order_tasks(tasks)]
        assert [(e.project, e.id) for e in in_order(entry_of(t) for t in tasks)] == plan
        raw = members_in_order((t.project, entry_of(t).member) for t in tasks)
        assert [(p, decode(p, m).id) for p, m in raw] == plan  # type: ignore[union-attr]


# -- single-file checks ---------------------------------------------------------------------------

def _entry(path: Path, project: str, rank: int = 2, has_deps: bool = False) -> ReadyEntry:
    st = path.stat()
    return ReadyEntry(project, path.name[:-3], rank, st.st_mtime, st.st_size, has_deps)


def test_recheck_finds_an_unchanged_task_ready_parsing_only_one_with_dependencies(make_project, settings) -> None:
    proj = make_project("web", tasks={"T1": {"title": "one"}, "T2": {"title": "two", "depends_on": ("web:T0",)}},
                        done=["T0.md"])
    got = recheck(settings, _entry(proj.task_path("T1"), "web", rank=1))
    assert got.verdict is Verdict.READY and got.task is not None
    assert (got.task.key, got.task.path, got.task.priority.rank) == (DepRef("web", "T1"), proj.task_path("T1"), 1)
    st = proj.task_path("T1").stat()
    assert (got.task.mtime, got.task.size) == (st.st_mtime, st.st_size)
    parsed = recheck(settings, _entry(proj.task_path("T2"), "web", has_deps=True))
    assert parsed.verdict is Verdict.READY and parsed.task is not None and parsed.task.title == "two"


def test_recheck_drops_a_deleted_or_rewritten_file(make_project, settings) -> None:
    proj = make_project("web", tasks={"T1": {}, "T2": {}})
    gone, changed = _entry(proj.task_path("T1"), "web"), _entry(proj.task_path("T2"), "web")
    proj.task_path("T1").unlink()
    proj.task_path("T2").write_text("---\ntitle: other and longer\n---\nnew body\n")
    assert recheck(settings, gone).verdict is Verdict.STALE
    assert recheck(settings, changed).verdict is Verdict.STALE


def test_recheck_keeps_but_skips_a_task_being_launched_or_with_a_running_namesake(make_project, settings) -> None:
    proj = make_project("web", tasks={"T1": {}, "T2": {}})
    launching, twin = _entry(proj.task_path("T1"), "web"), _entry(proj.task_path("T2"), "web")
    os.rename(proj.task_path("T1"), proj.task_path("T1", d.LAUNCHING))
    proj.task_path("T2", d.DISPATCHED).write_text("an earlier T2, still running")
    assert recheck(settings, launching).verdict is Verdict.BUSY
    assert recheck(settings, twin).verdict is Verdict.BUSY


def test_recheck_checks_the_dependencies_again(make_project, settings) -> None:
    make_project("lib", done=["L1-20260101.md"])
    proj = make_project("web", tasks={"T1": {"depends_on": ("lib:L1",)}, "T2": {"depends_on": ("lib:L2",)}})
    assert recheck(settings, _entry(proj.task_path("T1"), "web", has_deps=True)).verdict is Verdict.READY  # T1-….md
    assert recheck(settings, _entry(proj.task_path("T2"), "web", has_deps=True)).verdict is Verdict.STALE


def test_only_a_regular_file_in_done_meets_a_dependency_as_in_the_gate(make_project, settings) -> None:
    lib = make_project("lib", done=["L1.md"])
    (lib.done / "L2.md").mkdir()  # a directory, or a symlink, named like a finished task is not one
    (lib.done / "L3.md").symlink_to(lib.done / "L1.md")
    proj = make_project("web", tasks={f"T{n}": {"depends_on": (f"lib:L{n}",)} for n in (1, 2, 3)})
    verdicts = [recheck(settings, _entry(proj.task_path(f"T{n}"), "web", has_deps=True)).verdict for n in (1, 2, 3)]
    assert verdicts == [Verdict.READY, Verdict.STALE, Verdict.STALE]


def test_a_new_file_is_judged_alone_or_left_to_a_full_scan(make_project, settings) -> None:
    proj = make_project("web", tasks={"T1": {}, "T2": {"depends_on": ("web:T9",)}, "T3": "---\npriority: [\n",
                                      "T4": {}})
    proj.task_path("T4", d.BLOCKED).write_text("")
    now = time.time() + 10
    assert check_new(settings, "web", str(proj.task_path("T1")), now=now, closed=None).verdict is Verdict.READY
    for blocked_or_invalid_or_marked in ("T2", "T3", "T4"):
        got = check_new(settings, "web", str(proj.task_path(blocked_or_invalid_or_marked)), now=now, closed=None)
        assert got.verdict is Verdict.NEEDS_SCAN, blocked_or_invalid_or_marked
    fresh = settings.with_overrides(settle_time=60.0)
    assert check_new(fresh, "web", str(proj.task_path("T1")), now=now, closed=None).verdict is Verdict.UNSETTLED
    st = proj.task_path("T1").stat()
    closed = (st.st_ino, st.st_mtime_ns, st.st_size)
    assert check_new(fresh, "web", str(proj.task_path("T1")), now=now, closed=closed).verdict is Verdict.READY


_SCANDIRS: list[str] = []


def _count_scandirs(event: str, args: tuple[object, ...]) -> None:
    if event == "os.scandir" and _SCANDIRS and _SCANDIRS[0] == "on":
        _SCANDIRS.append(str(args[0]))


def test_several_dependencies_on_one_project_list_its_done_once(make_project, settings) -> None:
    import sys

    make_project("lib", done=["L1-20260101.md", "L2-20260102.md", "L3.md"])
    make_project("api", done=["A1-20260101.md"])
    deps = ("lib:L1", "lib:L2", "lib:L3", "lib:L4", "api:A1")
    proj = make_project("web", tasks={"T1": {"depends_on": deps}})
    sys.addaudithook(_count_scandirs)  # the interpreter's own record of directory listings (cannot be removed)
    _SCANDIRS[:] = ["on"]
    try:
        got = recheck(settings, _entry(proj.task_path("T1"), "web", has_deps=True))
    finally:
        listed, _SCANDIRS[:] = _SCANDIRS[1:], []
    assert got.verdict is Verdict.STALE and got.detail == "waiting on lib:L4"
    done_listings = [p for p in listed if p.endswith("done")]
    assert sorted(done_listings) == sorted([str(settings.projects_dir / "lib" / ".agent-queue" / "done"),
                                            str(settings.projects_dir / "api" / ".agent-queue" / "done")])
