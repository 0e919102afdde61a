"""Which directories the file watcher watches: the projects directory, each project, its ``.agent-queue``, and
that one's ``inbox/`` and ``done/`` — never the rest of a project's tree.

Agents edit and build inside the projects. A recursive watch over them breaks on any real checkout: listing
a directory to watch it makes events on it, so a tree of ~10,000 directories (one ``node_modules``) overflows
inotify's queue while it is being watched; watchdog then walks the whole tree again, which overflows again,
for ever (``bench/watcher.py``: no task file was ever reported). Even on a small tree each file an agent
writes cost the watcher ~5× the agent's own CPU. So every watch here is non-recursive and filtered to the
events that matter at its level, added as such a directory appears and dropped when it goes.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver, ObservedWatch

from dispatcher.core import defaults as d
from dispatcher.core.taskfile import is_safe_segment

logger = logging.getLogger(__name__)

_INBOX_PART = f"{os.sep}{d.QUEUE_DIR}{os.sep}{d.INBOX}{os.sep}"
_DONE_PART = f"{os.sep}{d.QUEUE_DIR}{os.sep}{d.DONE}{os.sep}"


def _is_task_in(path: str, part: str) -> bool:
    name = os.path.basename(path)
    return part in path and name.endswith(d.TASK_SUFFIX) and not name.startswith(".")


def is_inbox_task(path: str) -> bool:
    """True for ``…/.agent-queue/inbox/<name>.md`` (markers, temp files and done/ are ignored)."""
    return _is_task_in(path, _INBOX_PART)


def is_done_task(path: str) -> bool:
    """True for ``…/.agent-queue/done/<name>.md``: an agent (or an operator) finished a task."""
    return _is_task_in(path, _DONE_PART)


#: Depths below the projects directory: the directories worth a watch.
ROOT, PROJECT, QUEUE, LEAF = 0, 1, 2, 3

#: Above inbox/ and done/ only directories coming and going matter (a file an agent writes at its project's
#: top level is not even read). Moves cover ``mv`` in and out; created covers ``mkdir``.
_DIR_EVENTS: list[type[FileSystemEvent]] = [DirCreatedEvent, DirMovedEvent, DirDeletedEvent]
#: In inbox/ and done/: a writer closing a file, or a file moved in (inotify). Polling sees no closes.
_LEAF_EVENTS: list[type[FileSystemEvent]] = [FileClosedEvent, FileMovedEvent]
_LEAF_EVENTS_POLLING: list[type[FileSystemEvent]] = [FileCreatedEvent, FileModifiedEvent, FileMovedEvent]


def depth_of(root: str, path: str) -> int | None:
    """How far below ``root`` the directory ``path`` is, if it is one to watch: :data:`ROOT`, a project
    (a safe name, as the scan requires), its queue directory, or the queue's inbox/done (:data:`LEAF`);
    None for anything else."""
    if path == root:
        return ROOT
    if not path.startswith(root + os.sep):
        return None
    parts = path[len(root) + 1:].split(os.sep)
    if not is_safe_segment(parts[0]):
        return None
    if len(parts) == 1:
        return PROJECT
    if parts[1] != d.QUEUE_DIR:
        return None
    if len(parts) == 2:
        return QUEUE
    if len(parts) == 3 and parts[2] in (d.INBOX, d.DONE):
        return LEAF
    return None


class WatchScope:
    """The watches of one observer: :meth:`add` a directory (and what of interest is already inside it),
    :meth:`drop` it (and everything under it). Called from the observer's thread as directories come and go,
    and from the starting thread for the first walk.

    No lock of ours is held while the observer is called: the observer calls its handlers (and so this
    scope) holding its own lock, so a scope lock held across ``schedule`` by the starting thread would
    deadlock with a directory event (it did, 10 of 10 starts with projects made and removed meanwhile)."""

    def __init__(self, observer: BaseObserver, handler: FileSystemEventHandler, root: str, *,
                 polling: bool, on_hint: Callable[[str], object]) -> None:
        self.observer, self.handler, self.root, self.polling = observer, handler, root, polling
        #: A task file found in an inbox that appeared after start (moved in whole, or made with its tasks).
        self.on_hint = on_hint
        self._watches: dict[str, ObservedWatch] = {}
        self._lock = threading.Lock()  # the dict only

    def __len__(self) -> int:
        return len(self._watches)

    def watched(self) -> list[str]:
        with self._lock:
            return list(self._watches)

    def add(self, path: str, *, report_tasks: bool = True, must: bool = False) -> None:
        """Watch ``path`` if it is one of the directories of interest, then look inside: it may already hold
        the next level (``mkdir -p``, a project moved in) — watched first, listed after, so nothing written
        in between is missed. ``report_tasks``: hint the tasks already in a new inbox (nobody saw their
        writers close them, so they settle by age); off at start, where a full scan follows anyway.
        ``must``: raise OSError if ``path`` itself cannot be watched (the projects directory)."""
        depth = depth_of(self.root, path)
        if depth is None:
            return
        with self._lock:
            known = path in self._watches
        if not known:
            events = (_LEAF_EVENTS_POLLING if self.polling else _LEAF_EVENTS) if depth == LEAF else _DIR_EVENTS
            try:
                # follow_symlink: a project may be a symlink to a checkout elsewhere (the scan follows it).
                # Two threads adding one path get the same watch (the observer keeps one per path and filter).
                watch = self.observer.schedule(self.handler, path, recursive=False, event_filter=events,
                                               follow_symlink=True)
            except OSError as exc:  # gone again, or not a directory: nothing to watch
                if must:
                    raise
                logger.debug("not watching %s: %s", path, exc)
                return
            with self._lock:
                self._watches[path] = watch
            if not os.path.isdir(path):  # removed while it was being watched: its drop may have come first
                self.drop(path)
                return
        if depth == LEAF:
            if report_tasks and os.path.basename(path) == d.INBOX:
                self._report_tasks(path)
            return
        try:
            with os.scandir(path) as entries:
                subdirs = sorted(e.path for e in entries if e.is_dir(follow_symlinks=True))
        except OSError:  # it went away again
            return
        for sub in subdirs:
            self.add(sub, report_tasks=report_tasks)

    def drop(self, path: str) -> None:
        """Stop watching ``path`` and everything under it (deleted, or moved away)."""
        with self._lock:
            gone = [self._watches.pop(p) for p in list(self._watches) if p == path or p.startswith(path + os.sep)]
        for watch in gone:
            try:
                self.observer.unschedule(watch)
            except KeyError:  # the observer already forgot it (the same watch dropped twice at once)
                pass

    def _report_tasks(self, inbox: str) -> None:
        try:
            with os.scandir(inbox) as entries:
                found = [e.path for e in entries if is_inbox_task(e.path) and e.is_file(follow_symlinks=False)]
        except OSError:  # it went away again
            return
        for task in sorted(found):
            self.on_hint(task)
