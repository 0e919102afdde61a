"""Pure parts of the multi-host design: session refs, routing, filesystem kinds (issue 12)."""

from __future__ import annotations

import pytest

from dispatcher.core.errors import SessionError
from dispatcher.core.session_ref import SessionRef, parse
from dispatcher.flows.routing import queue_for
from dispatcher.inbox.fsinfo import fs_type
from dispatcher.store.hosts import CLUSTER_QUEUE, HostInfo


def test_a_bare_name_is_on_the_local_host_and_a_qualified_one_names_its_host() -> None:
    assert parse("ccl-auto-0", default_host="a") == SessionRef("a", "ccl-auto-0")
    assert parse("b/ccl-auto-0", default_host="a") == SessionRef("b", "ccl-auto-0")
    assert str(SessionRef("b", "ccl-auto-0")) == "b/ccl-auto-0"


@pytest.mark.parametrize("bad", ["", "/", "a/", "/x", "a/b/c", "../x", "a;b/x", "h/x y", 7, None, "h/.."])
def test_malformed_refs_are_refused(bad: object) -> None:
    with pytest.raises(SessionError):
        parse(bad, default_host="a")


def test_routing_sends_pane_work_to_its_host_and_the_rest_to_the_cluster() -> None:
    assert queue_for("assign_next", ["h2/ccl-auto-1"], "h1") == "aq.host.h2"
    assert queue_for("assign_next", ["ccl-auto-1"], "h1") == "aq.host.h1"  # bare: where the command runs
    assert queue_for("assign_next", ["bad name/x"], "h1") == CLUSTER_QUEUE  # refused there, with the reason
    assert queue_for("monitor_sessions", ["h3"], "h1") == "aq.host.h3"
    assert queue_for("monitor_sessions", [], "h1") == CLUSTER_QUEUE  # the beat's fan-out
    for name in ("inbox_event", "full_scan", "check_blocked"):
        assert queue_for(name, ["/x"], "h1") == CLUSTER_QUEUE


def test_a_host_is_alive_until_its_heartbeat_is_older_than_host_lost_after() -> None:
    h = HostInfo(name="h", fingerprint="f", last_seen=100.0)
    assert h.alive(159.9, 60) and not h.alive(160.0, 60)


MOUNTS = """/dev/sda1 / ext4 rw 0 0
server:/export /mnt/shared nfs4 rw 0 0
//nas/q /mnt/sm\\040b cifs rw 0 0
tmpfs /mnt/shared/tmp tmpfs rw 0 0
"""


def test_the_filesystem_of_a_path_is_its_longest_mount_point() -> None:
    assert fs_type("/home/u/projects", MOUNTS) == "ext4"
    assert fs_type("/mnt/shared/projects", MOUNTS) == "nfs4"
    assert fs_type("/mnt/shared", MOUNTS) == "nfs4"
    assert fs_type("/mnt/sharedx", MOUNTS) == "ext4"
    assert fs_type("/mnt/shared/tmp/p", MOUNTS) == "tmpfs"
    assert fs_type("/mnt/sm b/p", MOUNTS) == "cifs"
