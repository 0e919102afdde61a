"""On-disk protocol: projects, snapshots, markers, and the no-replace moves of claim/release/promote/fail/retry."""

from __future__ import annotations

import os
import threading
from collections import Counter
from pathlib import Path

import pytest

from dispatcher.core import defaults as d
from dispatcher.core.errors import ClaimError, UnsafeIdError
from dispatcher.flows import claim as cl
from dispatcher.inbox import files as aq
from dispatcher.inbox import markers
from dispatcher.inbox.fsio import with_suffix


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- projects and listings ----------------------------------------------------------------------------


def test_discover_projects_finds_dirs_with_agent_queue(projects_dir, make_project):
    make_project("web")
    make_project("api")
    (projects_dir / "plain").mkdir()
    (projects_dir / "file.txt").write_text("x")
    (projects_dir / "bad name").mkdir()
    (projects_dir / "bad name" / d.QUEUE_DIR).mkdir()

    assert [p.name for p in aq.discover_projects(projects_dir)] == ["api", "web"]


def test_discover_projects_uses_the_configured_list(projects_dir):
    found = aq.discover_projects(projects_dir, ["web", "api"])

    assert [(p.name, p.root) for p in found] == [("web", projects_dir / "web"), ("api", projects_dir / "api")]


def test_missing_projects_dir_means_no_projects(tmp_path):
    assert aq.discover_projects(tmp_path / "nope") == []


@pytest.mark.parametrize("name", ["..", ".", "../etc", "a/b", ""])
def test_project_names_are_validated(projects_dir, name):
    with pytest.raises(UnsafeIdError):
        aq.project(projects_dir, name)


def test_task_path_validates_the_id(projects_dir):
    proj = aq.project(projects_dir, "web")

    assert proj.task_path("T1", d.BLOCKED) == projects_dir / "web" / ".agent-queue" / "inbox" / "T1.md.blocked"
    with pytest.raises(UnsafeIdError):
        proj.task_path("../T1")


def test_listing_lists_inbox_with_lstat_and_done_md_only(make_project, tmp_path):
    proj = make_project("web", tasks={"T1": "x"}, done=["T0.md", "T0.md.bak"])
    (proj.inbox / "link.md").symlink_to(tmp_path / "nowhere")

    snap = aq.list_project(proj)

    assert sorted(snap.inbox) == ["T1.md", "link.md"]
    assert snap.inbox["T1.md"].regular and not snap.inbox["link.md"].regular
    assert snap.done == ("T0.md",)


def test_listing_of_a_project_without_inbox_is_empty(projects_dir):
    snap = aq.list_project(aq.project(projects_dir, "ghost"))

    assert snap.inbox == {} and snap.done == ()


# --- claim and friends --------------------------------------------------------------------------------


def test_claim_renames_to_launching(make_project):
    proj = make_project("web", tasks={"T1": "body"})

    launching = cl.claim(proj.task_path("T1"))

    assert launching.name == "T1.md.launching"
    assert names(proj.inbox) == ["T1.md.launching"]
    assert launching.read_text() == "body"


def test_second_claim_of_the_same_file_loses(make_project):
    proj = make_project("web", tasks={"T1": "body"})
    cl.claim(proj.task_path("T1"))

    with pytest.raises(ClaimError, match="gone"):
        cl.claim(proj.task_path("T1"))
    assert names(proj.inbox) == ["T1.md.launching"]


def test_claim_refuses_when_launching_already_exists(make_project):
    proj = make_project("web", tasks={"T1": "new body"})
    proj.task_path("T1", d.LAUNCHING).write_text("claimed earlier")

    with pytest.raises(ClaimError, match="already exists"):
        cl.claim(proj.task_path("T1"))

    assert proj.task_path("T1", d.LAUNCHING).read_text() == "claimed earlier"
    assert proj.task_path("T1").read_text() == "new body"


def test_threads_racing_on_many_files_each_file_claimed_exactly_once(make_project):
    n_files, n_threads = 60, 8
    proj = make_project("web", tasks={f"T{i}": f"body {i}" for i in range(n_files)})
    paths = [proj.task_path(f"T{i}") for i in range(n_files)]
    wins: Counter[str] = Counter()
    losses: Counter[str] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(n_threads)

    def worker(offset: int) -> None:
        barrier.wait()
        for k in range(n_files):
            path = paths[(k + offset) % n_files]
            try:
                cl.claim(path)
                outcome = wins
            except ClaimError:
                outcome = losses
            with lock:
                outcome[path.name] += 1

    threads = [threading.Thread(target=worker, args=(i * 7,)) for i in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)

    assert all(wins[p.name] == 1 for p in paths), wins
    assert sum(losses.values()) == n_files * (n_threads - 1)
    assert names(proj.inbox) == sorted(f"T{i}.md.launching" for i in range(n_files))
    assert all(proj.task_path(f"T{i}", d.LAUNCHING).read_text() == f"body {i}" for i in range(n_files))


def test_release_puts_the_task_back(make_project):
    proj = make_project("web", tasks={"T1": "body"})

    back = cl.release(cl.claim(proj.task_path("T1")))

    assert back == proj.task_path("T1")
    assert names(proj.inbox) == ["T1.md"] and back.read_text() == "body"


def test_release_refuses_to_overwrite_a_resubmitted_task(make_project):
    proj = make_project("web", tasks={"T1": "old"})
    launching = cl.claim(proj.task_path("T1"))
    proj.task_path("T1").write_text("resubmitted")

    with pytest.raises(ClaimError, match="already exists"):
        cl.release(launching)
    assert proj.task_path("T1").read_text() == "resubmitted" and launching.read_text() == "old"


def test_promote_drops_blocked_and_stuck_markers(make_project):
    proj = make_project("web", tasks={"T1": "body"})
    assert markers.mark_blocked(proj.task_path("T1"))
    markers.write_marker(proj.task_path("T1"), d.STUCK, "waiting on web:T0")

    dispatched = cl.promote(cl.claim(proj.task_path("T1")))

    assert dispatched.name == "T1.md.dispatched"
    assert names(proj.inbox) == ["T1.md.dispatched"]


def test_fail_records_the_reason_and_retry_clears_it(make_project):
    proj = make_project("web", tasks={"T1": "body"})
    dispatched = cl.promote(cl.claim(proj.task_path("T1")))

    failed = cl.fail(dispatched, "agent exited: usage limit")

    assert failed.name == "T1.md.failed"
    assert names(proj.inbox) == ["T1.md.failed", "T1.md.failure"]
    assert markers.read_marker(proj.task_path("T1"), markers.FAILURE_NOTE) == "agent exited: usage limit"

    pending = cl.retry(failed)

    assert pending == proj.task_path("T1")
    assert names(proj.inbox) == ["T1.md"] and pending.read_text() == "body"


def test_fail_straight_from_launching(make_project):
    proj = make_project("web", tasks={"T1": "body"})

    failed = cl.fail(cl.claim(proj.task_path("T1")), "prompt never appeared")

    assert names(proj.inbox) == ["T1.md.failed", "T1.md.failure"]
    assert failed.read_text() == "body"


def test_complete_moves_to_done_without_overwriting(make_project):
    proj = make_project("web", tasks={"T1": "body", "T2": "second"}, done=["T2.md"])

    dst = aq.complete(cl.promote(cl.claim(proj.task_path("T1"))), proj, "T1")
    assert dst == proj.done / "T1.md" and dst.read_text() == "body"

    with pytest.raises(ClaimError, match="already exists"):
        aq.complete(cl.promote(cl.claim(proj.task_path("T2"))), proj, "T2")
    assert (proj.done / "T2.md").read_text() == "done\n"


def test_moving_a_vanished_file_is_a_claim_error(make_project):
    proj = make_project("web")

    with pytest.raises(ClaimError, match="gone"):
        cl.promote(proj.task_path("T1", d.LAUNCHING))


# --- markers ------------------------------------------------------------------------------------------


def test_mark_blocked_creates_once_and_never_refreshes(make_project):
    proj = make_project("web", tasks={"T1": "x"})
    marker = proj.task_path("T1", d.BLOCKED)

    assert markers.mark_blocked(proj.task_path("T1")) is True
    os.utime(marker, (1_000, 1_000))
    assert markers.mark_blocked(proj.task_path("T1")) is False
    assert marker.stat().st_mtime == 1_000


def test_write_marker_replaces_text_atomically_and_leaves_no_temp(make_project):
    proj = make_project("web", tasks={"T1": "x"})

    markers.write_marker(proj.task_path("T1"), d.INVALID, "first reason")
    markers.write_marker(proj.task_path("T1"), d.INVALID, "second reason\n\n")

    assert markers.read_marker(proj.task_path("T1"), d.INVALID) == "second reason"
    assert names(proj.inbox) == ["T1.md", "T1.md.invalid"]


def test_read_marker_absent_and_symlinked(make_project, tmp_path):
    proj = make_project("web", tasks={"T1": "x"})
    secret = tmp_path / "secret"
    secret.write_text("do not read")
    (proj.inbox / "T1.md.invalid").symlink_to(secret)

    assert markers.read_marker(proj.task_path("T1"), d.STUCK) is None
    assert markers.read_marker(proj.task_path("T1"), d.INVALID) is None


def test_remove_marker_reports_whether_it_existed(make_project):
    proj = make_project("web", tasks={"T1": "x"})
    markers.mark_blocked(proj.task_path("T1"))

    assert markers.remove_marker(proj.task_path("T1"), d.BLOCKED) is True
    assert markers.remove_marker(proj.task_path("T1"), d.BLOCKED) is False


# --- atomic writes ------------------------------------------------------------------------------------


def test_write_task_atomically_creates_the_file_and_inbox(projects_dir):
    proj = aq.project(projects_dir, "new")

    path = aq.write_task_atomically(proj, "T1", "---\ntitle: x\n---\n")

    assert path == proj.task_path("T1") and path.read_text() == "---\ntitle: x\n---\n"
    assert names(proj.inbox) == ["T1.md"]


def test_write_task_atomically_refuses_to_overwrite(make_project):
    proj = make_project("web", tasks={"T1": "original"})

    with pytest.raises(ClaimError, match="already exists"):
        aq.write_task_atomically(proj, "T1", "replacement")

    assert proj.task_path("T1").read_text() == "original"
    assert names(proj.inbox) == ["T1.md"]  # no temp file left behind


def test_write_task_atomically_refuses_unsafe_ids(projects_dir):
    proj = aq.project(projects_dir, "web")

    with pytest.raises(UnsafeIdError):
        aq.write_task_atomically(proj, "../escape", "x")
    assert not (projects_dir / "web" / ".agent-queue" / "escape.md").exists()


def test_with_suffix_strips_state_suffixes_only(projects_dir):
    path = projects_dir / "T1.md.dispatched"

    assert with_suffix(path, d.FAILED).name == "T1.md.failed"
    assert with_suffix(projects_dir / "T1.md", d.LAUNCHING).name == "T1.md.launching"
