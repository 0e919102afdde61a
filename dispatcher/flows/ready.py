"""The ready index as a use case: written by full scans, read by ``assign_next``, fed by events.

``assign_next`` used to re-plan every project (list and stat every inbox file) to find the
next task: O(queue). It now takes candidates from the index in dispatch order (a few entries
per project, one Redis round trip) and re-checks only the one it is about to claim; the
claim itself (an atomic rename) stays the only thing that makes a dispatch exactly-once.
See docs/decisions.md, "Ready index".
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from dispatcher.core.listing import Identity
from dispatcher.core.ready import ReadyEntry, decode, entry_of, members_in_order
from dispatcher.core.taskfile import DepRef, Task, is_safe_segment
from dispatcher.inbox import files as aq
from dispatcher.inbox import ready_check
from dispatcher.inbox.ready_check import Verdict
from dispatcher.inbox.scanner import Plan
from dispatcher.store import ready_index, settle

if TYPE_CHECKING:
    from dispatcher.flows.dispatch import Dispatcher

logger = logging.getLogger(__name__)

#: Entries fetched per project at first (doubled while candidates run out before one is claimed).
FIRST_FETCH = 1


def begin(disp: Dispatcher) -> ready_index.Ticket:
    """Take before a full scan lists anything."""
    return ready_index.begin(disp.r, {p.name: _mtime_ns(p.done) for p in
                                      aq.discover_projects(disp.settings.projects_dir, disp.settings.projects)})


def _mtime_ns(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def publish(disp: Dispatcher, result: Plan, ticket: ready_index.Ticket) -> None:
    """Replace the index with a full scan's gated tasks: eligible, and those waiting for a slot or a same-ID run.

    The waiting ones are kept because the claim re-checks ``max_parallel`` and the same-ID rule
    itself: when a slot frees, the next task is found without a new scan.
    """
    entries = [entry_of(t) for t in result.eligible] + [entry_of(t) for t, _ in result.waiting]
    waits = {dep for gate in result.unmet.values() for dep in gate.missing}
    ready_index.publish(disp.r, entries, waits, ticket)


def is_complete(disp: Dispatcher) -> bool:
    """Built by a full scan, and no dependency a blocked task waits on reached done/ since.

    The monitor reports finished tasks (``on_done``), but an agent's move to done/ may come
    first, and a file can be put there by hand: one stat of done/ per project that blocked
    tasks wait on tells whether to look at those IDs.
    """
    complete, awaited = ready_index.state(disp.r)
    if not complete:
        return False
    for project, (seen, ids) in awaited.items():
        if not is_safe_segment(project):  # read back from Redis: never a path before it is validated
            continue
        now = _mtime_ns(aq.project(disp.settings.projects_dir, project).done)
        if now == seen:
            continue
        deps = [DepRef(project, i) for i in ids if is_safe_segment(i)]
        if len(ready_check.deps_missing(disp.settings, deps)) < len(deps):  # one listing of done/ at most
            ready_index.invalidate(disp.r)
            return False
        ready_index.saw_done_mtime(disp.r, project, now, ids)
    return True


def candidates(disp: Dispatcher, held: set[str]) -> Iterator[Task]:
    """Tasks to try, in dispatch order, each re-checked on disk just before it is offered.

    ``held`` (projects to skip) may grow while the caller iterates. Stale entries are dropped.
    Fetches the first few entries of every project; the order is exact up to the last
    fetched entry of a project that has more, then it fetches twice as many.
    """
    tried: set[tuple[str, str]] = set()
    k = FIRST_FETCH
    while True:
        fetched = ready_index.heads(disp.r, k, exclude=sorted(held))
        ordered = members_in_order([(p, m) for p, (members, _) in fetched.items() for m in members])
        more = {p for p, (_, truncated) in fetched.items() if truncated}
        stop = len(ordered)
        if more:
            last = {p: i for i, (p, _) in enumerate(ordered)}
            stop = min((last[p] for p in more if p in last), default=stop - 1) + 1
        for project, member in ordered[:stop]:
            if project in held or (project, member) in tried:
                continue
            tried.add((project, member))
            entry = decode(project, member)
            if entry is None:
                logger.warning("ready index: malformed entry %r of %s dropped", member[:80], project)
                ready_index.remove_member(disp.r, project, member)
                continue
            checked = ready_check.recheck(disp.settings, entry)
            if checked.verdict is Verdict.STALE:
                logger.debug("ready index: %s:%s dropped (%s)", entry.project, entry.id, checked.detail)
                ready_index.remove(disp.r, entry)
                continue
            if checked.verdict is not Verdict.READY or checked.task is None:
                continue  # busy: it stays indexed for when its namesake is done
            yield checked.task
        if not more:
            return
        k *= 2  # some project has more than was fetched: look further (k outgrows every project)


def forget_if_claimed(disp: Dispatcher, task: Task) -> None:
    """After a dispatch attempt: drop the entry once the task is neither pending nor launching."""
    if ready_check.settled_elsewhere(str(task.path)):
        ready_index.remove(disp.r, entry_of(task))


def on_new_file(disp: Dispatcher, project: str, path: str, closed: Identity | None = None) -> Verdict:
    """A task file the watcher reported: index it when it can be judged alone; else say why not.

    ``closed``: the identity its writer closed it with, when the caller has it (else it is looked up).
    """
    if closed is None:
        name = os.path.basename(path)
        closed = settle.closed_files(disp.r, [(project, name)]).get((project, name))
    checked = ready_check.check_new(disp.settings, project, path, now=disp.clock(), closed=closed)
    if checked.verdict in (Verdict.READY, Verdict.BUSY) and checked.task is not None:
        ready_index.insert(disp.r, entry_of(checked.task))
    elif checked.verdict is Verdict.BUSY:  # not parsed: judged when its namesake is done
        return Verdict.NEEDS_SCAN
    return checked.verdict


def on_done(disp: Dispatcher, project: str, task_id: str) -> None:
    """A task reached done/: if a blocked task waits on it, the index needs a full scan."""
    if ready_index.waits_on(disp.r, project, task_id):
        ready_index.invalidate(disp.r)


def agrees(disp: Dispatcher, result: Plan) -> tuple[set[ReadyEntry], set[ReadyEntry]]:
    """(in the index only, on disk only) against a scan's gated tasks: both empty when they agree."""
    files = {entry_of(t) for t in result.eligible} | {entry_of(t) for t, _ in result.waiting}
    index = ready_index.snapshot(disp.r)
    return index - files, files - index
