"""One pass over every project: list and read the inboxes, hand them to the plan, write its markers.

``read_inboxes`` lists and reads (I/O, with a parse cache); :func:`dispatcher.core.plan.plan`
decides (pure); :func:`dispatcher.inbox.markers.apply_plan` writes the blocked/invalid
markers the plan calls for. ``scan --dry-run`` runs the first two only, so it never
changes anything on disk.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import replace

from dispatcher.core import defaults as d
from dispatcher.core.config import Settings
from dispatcher.core.errors import TaskFileError, TaskGone
from dispatcher.core.listing import Identity, ProjectListing
from dispatcher.core.plan import Loaded, Plan, fresh_files, pending_names, plan
from dispatcher.core.taskfile import Task
from dispatcher.inbox import files, markers
from dispatcher.inbox.reader import load_task

logger = logging.getLogger(__name__)

FileIdentity = tuple[int, int, int, int]


class ParseCache:
    """Parsed tasks by path, valid while the file's (inode, mtime, ctime, size) is unchanged; LRU-bounded.

    Repeated scans (every assign_next, inbox_event and beat tick) then cost one
    directory listing per project instead of reading and parsing every file.
    """

    def __init__(self, limit: int = d.PARSE_CACHE_ENTRIES) -> None:
        self.limit = limit
        self._items: OrderedDict[str, tuple[FileIdentity, Task]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, path: str, identity: FileIdentity) -> Task | None:
        hit = self._items.get(path)
        if hit is None or hit[0] != identity:
            return None
        self._items.move_to_end(path)
        return hit[1]

    def clear(self) -> None:
        self._items.clear()

    def put(self, path: str, identity: FileIdentity, task: Task) -> None:
        self._items[path] = (identity, task)
        self._items.move_to_end(path)
        while len(self._items) > self.limit:
            self._items.popitem(last=False)


_cache = ParseCache()


def clear_cache() -> None:
    """Forget every parsed task (benchmarks measure a cold scan with it)."""
    _cache.clear()


def read_inboxes(settings: Settings) -> tuple[list[ProjectListing], list[Loaded]]:
    """List every project once and read every pending task file (skipping unchanged invalid ones)."""
    listings = [files.list_project(p) for p in files.discover_projects(settings.projects_dir, settings.projects)]
    loaded: list[Loaded] = []
    for listing in listings:
        project = listing.project.name
        inbox = listing.project.inbox  # built once: Path joins cost more than reading a small file
        inbox_str = str(inbox)
        for name in pending_names(listing):
            entry = listing.inbox[name]
            key = f"{inbox_str}/{name}"
            marker = listing.inbox.get(name + d.INVALID)
            if marker is not None and marker.mtime >= entry.mtime:
                path = inbox / name
                reason = markers.read_invalid(path) or "invalid"
                loaded.append(Loaded(project, path, mtime=entry.mtime, invalid_marker=reason))
                continue
            cached = _cache.get(key, entry.identity) if entry.regular else None
            if cached is not None:
                loaded.append(Loaded(project, cached.path, task=cached, mtime=cached.mtime))
                continue
            path = inbox / name
            try:
                # A plan never needs the body (the claim re-reads and re-parses what it renamed): the cache need
                # not hold every pending task's text in every worker (a real task body is often several KB).
                task = replace(load_task(path, project, settings.max_task_bytes), body="")
                loaded.append(Loaded(project, path, task=task, mtime=task.mtime))
                _cache.put(key, entry.identity, task)
            except TaskGone:
                continue  # claimed or moved since the listing: not a problem of the file
            except TaskFileError as exc:
                loaded.append(Loaded(project, path, error=exc, mtime=entry.mtime))
    return listings, loaded


ClosedLookup = Callable[[list[tuple[str, str]]], Mapping[tuple[str, str], Identity]]


def run_scan(settings: Settings, *, now: float, write: bool, closed: ClosedLookup | None = None) -> Plan:
    """read_inboxes → plan → (optionally) markers.apply_plan.

    ``closed`` looks up the watcher's sightings of the files still fresh (none without it: they
    then settle by age only, as in ``scan --dry-run``).
    """
    listings, loaded = read_inboxes(settings)
    fresh = fresh_files(listings, now=now, settle_time=settings.settle_time)
    known = closed(fresh) if closed is not None and fresh else {}
    result = plan(listings, loaded, now=now, incomplete_grace=settings.incomplete_grace,
                  settle_time=settings.settle_time, closed=known, limit_of=settings.limit_for)
    if write:
        markers.apply_plan(result, listings)
    return result
