"""One pass over every project: list and read the inboxes, hand them to the plan, write its markers.

``read_inboxes`` lists and reads (I/O, with a parse cache); :func:`dispatcher.core.plan.plan`
decides (pure); :func:`dispatcher.inbox.markers.apply_plan` writes the blocked/invalid
markers the plan calls for. ``scan --dry-run`` runs the first two only, so it never
changes anything on disk.

Two memos make repeated scans (every beat tick, inbox_event, status) cost about one directory
listing per project:

- per project, the last listing and what was read for it: a project whose inbox entries
  (name, inode, mtime, ctime, size, type) and done/ names are all unchanged reuses them
  whole; a changed one re-reads only the files whose identity changed;
- the last plan: when every project was reused, with the same settings, no file still being
  written and time not going back, the plan's inputs are the same values, so is its outcome.
"""

from __future__ import annotations

import gc
import logging
import operator
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

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

#: A scan that parsed at least this many files moves what it keeps out of the cyclic GC's way (gc.freeze).
FREEZE_AFTER_PARSED = 5_000


@dataclass(frozen=True, slots=True)
class ProjectRead:
    """One project as a scan last saw it: its listing, what was read for it, and its parsed tasks by name."""

    listing: ProjectListing
    loaded: tuple[Loaded | Task, ...]  # a Task for each file parsed without trouble (no wrapper kept)
    #: Parsed tasks by file name; the file's identity is its entry in ``listing`` (no copy of it is kept).
    parsed: dict[str, Task]
    #: False when a file vanished while read: the listing alone does not say what was read then.
    whole: bool = True


class ParseCache:
    """Per project (by inbox path and size limit): the last :class:`ProjectRead`; LRU-bounded in parsed tasks.

    A parsed task is valid while its file's (inode, mtime, ctime, size) is unchanged. Entries of files
    no longer listed are dropped with the project's next read, so the cache holds at most the pending
    tasks (and never more than ``limit``: the least recently scanned projects go first).
    """

    def __init__(self, limit: int = d.PARSE_CACHE_ENTRIES) -> None:
        self.limit = limit
        self._projects: OrderedDict[tuple[str, int], ProjectRead] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def project(self, key: tuple[str, int]) -> ProjectRead | None:
        return self._projects.get(key)

    def get(self, key: tuple[str, int], name: str, identity: FileIdentity) -> Task | None:
        """The task parsed from ``name`` of the project ``key`` if the file still has ``identity``."""
        read = self._projects.get(key)
        if read is None:
            return None
        task, entry = read.parsed.get(name), read.listing.inbox.get(name)
        return task if task is not None and entry is not None and entry.identity == identity else None

    def put(self, key: tuple[str, int], read: ProjectRead) -> None:
        """Keep ``read`` as the project's last (replacing the one before); evict the least recent projects."""
        old = self._projects.pop(key, None)
        if old is not None:
            self._size -= len(old.parsed)
        if len(read.parsed) > self.limit:  # one project alone over the limit: keep the first `limit` of it
            keep = dict(list(read.parsed.items())[: self.limit])
            read = replace(read, parsed=keep, whole=False)
        self._projects[key] = read
        self._size += len(read.parsed)
        while self._size > self.limit:
            _, evicted = self._projects.popitem(last=False)
            self._size -= len(evicted.parsed)

    def clear(self) -> None:
        self._projects.clear()
        self._size = 0


@dataclass(frozen=True, slots=True)
class _LastPlan:
    settings: Settings
    listings: tuple[ProjectListing, ...]
    now: float
    result: Plan


_cache = ParseCache()
_last_plan: _LastPlan | None = None
_lock = threading.Lock()  # the memos are one process's; a threaded caller (web) scans one at a time


def clear_cache() -> None:
    """Forget every parsed task and the last plan (benchmarks measure a cold scan with it)."""
    global _last_plan
    with _lock:
        _cache.clear()
        _last_plan = None


def _read_project(listing: ProjectListing, key: tuple[str, int], max_bytes: int) -> tuple[ProjectRead, int]:
    """Read one project's pending files, reusing parsed tasks whose file is unchanged; (read, files parsed)."""
    prev = _cache.project(key)
    if (prev is not None and prev.whole and prev.listing.done == listing.done
            and prev.listing.inbox == listing.inbox):
        return prev, 0  # nothing in the project changed: the same values (and the same listing object)
    old = prev.parsed if prev is not None else {}
    old_entries = prev.listing.inbox if prev is not None else {}
    project = listing.project.name
    inbox = listing.project.inbox  # built once: Path joins cost more than reading a small file
    inbox_str = str(inbox)
    entries = listing.inbox
    loaded: list[Loaded | Task] = []
    #: Parsed tasks by file name; the file's identity is its entry in ``listing`` (no copy of it is kept).
    parsed: dict[str, Task] = {}
    whole = True
    n_parsed = 0
    for name in pending_names(listing):
        entry = entries[name]
        marker = entries.get(name + d.INVALID)
        if marker is not None and marker.mtime >= entry.mtime:
            path = inbox / name
            reason = markers.read_invalid(path) or "invalid"
            loaded.append(Loaded(project, path, mtime=entry.mtime, invalid_marker=reason))
            continue
        cached = old.get(name) if entry.regular else None
        was = old_entries.get(name) if cached is not None else None
        if cached is not None and was is not None and was.identity == entry.identity:
            task = cached
            parsed[name] = task
            loaded.append(task)
            continue
        path = inbox / name
        try:
            # A plan never needs the body (the claim re-reads and re-parses what it renamed): the cache need
            # not hold every pending task's text in every worker (a real task body is often several KB).
            task = load_task(path, project, max_bytes, body=False, name=name, text_path=f"{inbox_str}/{name}")
            n_parsed += 1
            loaded.append(task)
            if entry.regular:
                parsed[name] = task
        except TaskGone:
            whole = False  # claimed or moved since the listing: not a problem of the file
            continue
        except TaskFileError as exc:
            loaded.append(Loaded(project, path, error=exc, mtime=entry.mtime))
    return ProjectRead(listing, tuple(loaded), parsed, whole), n_parsed


def _read_all(settings: Settings) -> tuple[list[ProjectListing], list[Loaded | Task], int]:
    projects = files.discover_projects(settings.projects_dir, settings.projects)
    listings: list[ProjectListing] = []
    loaded: list[Loaded | Task] = []
    n_parsed = 0
    for proj in projects:
        listing = files.list_project(proj)
        key = (str(listing.project.inbox), settings.max_task_bytes)
        read, n = _read_project(listing, key, settings.max_task_bytes)
        n_parsed += n
        _cache.put(key, read)
        listings.append(read.listing)
        loaded += read.loaded
    return listings, loaded, n_parsed


class _NoCyclicGC:
    """The cyclic GC off while a scan runs; after one that parsed many files, what it keeps is frozen.

    A scan allocates hundreds of thousands of objects that live on (listings, parsed tasks): each
    allocation burst would trigger collections that walk every object the parse cache holds
    (~25 % of a warm scan, ~20 % of a cold one). Nothing a scan builds is cyclic garbage worth
    waiting for. After a large fill, ``gc.freeze()`` moves every object then alive to the permanent
    generation: later collections skip them (they are still freed by reference counting when the
    cache drops them; only cyclic garbage alive at that moment would stay, and a young collection
    just before keeps that small).
    """

    def __init__(self) -> None:
        self.parsed = 0

    def __enter__(self) -> _NoCyclicGC:
        self.was = gc.isenabled()
        gc.disable()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.parsed >= FREEZE_AFTER_PARSED:
            gc.collect(1)
            gc.freeze()
        if self.was:
            gc.enable()


def read_inboxes(settings: Settings) -> tuple[list[ProjectListing], list[Loaded | Task]]:
    """List every project once and read every pending task file (unchanged files come from the cache)."""
    with _lock, _NoCyclicGC() as nogc:
        listings, loaded, nogc.parsed = _read_all(settings)
    return listings, loaded


def _copy(result: Plan) -> Plan:
    """A plan callers may change (``changes`` is the marker writer's, the lists are theirs)."""
    return replace(result, eligible=list(result.eligible), blocked=list(result.blocked), stuck=list(result.stuck),
                   invalid=list(result.invalid), incomplete=list(result.incomplete), waiting=list(result.waiting),
                   in_flight={k: list(v) for k, v in result.in_flight.items()}, done_counts=dict(result.done_counts),
                   projects=list(result.projects), unmet=dict(result.unmet), changes=[])


ClosedLookup = Callable[[list[tuple[str, str]]], Mapping[tuple[str, str], Identity]]


def run_scan(settings: Settings, *, now: float, write: bool, closed: ClosedLookup | None = None) -> Plan:
    """read_inboxes → plan → (optionally) markers.apply_plan.

    ``closed`` looks up the watcher's sightings of the files still fresh (none without it: they
    then settle by age only, as in ``scan --dry-run``).
    """
    global _last_plan
    with _lock, _NoCyclicGC() as nogc:
        listings, loaded, nogc.parsed = _read_all(settings)
        fresh = fresh_files(listings, now=now, settle_time=settings.settle_time)
        last = _last_plan
        # The same listing objects mean the same reads (see _read_project); with no file fresh now and
        # none still being written then, nothing in the plan depends on the time or the closed lookup.
        if (last is not None and not fresh and not last.result.incomplete and now >= last.now
                and len(last.listings) == len(listings) and all(map(operator.is_, last.listings, listings))
                and last.settings == settings):
            result = _copy(last.result)
        else:
            known = closed(fresh) if closed is not None and fresh else {}
            result = plan(listings, loaded, now=now, incomplete_grace=settings.incomplete_grace,
                          settle_time=settings.settle_time, closed=known, limit_of=settings.limit_for)
            _last_plan = None if fresh else _LastPlan(settings, tuple(listings), now, _copy(result))
    if write:
        markers.apply_plan(result, listings)
    return result
