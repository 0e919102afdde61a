"""File watcher (``dispatcher watch``): inbox events become ``inbox_event`` tasks at once.

Tiny on purpose (dramatiq's watcher): it only enqueues. Events are hints; the
periodic ``full_scan`` is the safety net for anything lost (overflow, downtime).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from dispatcher.core import defaults as d
from dispatcher.inbox.fsio import STATE_SUFFIXES
from dispatcher.store import settle

logger = logging.getLogger(__name__)

_INBOX_PART = f"{os.sep}{d.QUEUE_DIR}{os.sep}{d.INBOX}{os.sep}"
_DONE_PART = f"{os.sep}{d.QUEUE_DIR}{os.sep}{d.DONE}{os.sep}"
#: Done files arriving within this long of each other are reported once (a burst of agents finishing).
DONE_COALESCE_S = 0.01


def _is_task_in(path: str, part: str) -> bool:
    name = os.path.basename(path)
    return part in path and name.endswith(d.TASK_SUFFIX) and not name.startswith(".")


def is_inbox_task(path: str) -> bool:
    """True for ``…/.agent-queue/inbox/<name>.md`` (markers, temp files and done/ are ignored)."""
    return _is_task_in(path, _INBOX_PART)


def is_done_task(path: str) -> bool:
    """True for ``…/.agent-queue/done/<name>.md``: an agent (or an operator) finished a task."""
    return _is_task_in(path, _DONE_PART)


class Coalesce:
    """Call ``fn(items)`` once, ``delay`` s after the first of a burst of triggers, with every item of the
    burst; a trigger after that call began schedules another, so nothing goes unreported."""

    def __init__(self, fn: Callable[[list[str]], object], delay: float = DONE_COALESCE_S) -> None:
        self.fn, self.delay = fn, delay
        self._lock = threading.Lock()
        self._items: list[str] = []

    def trigger(self, item: str) -> None:
        with self._lock:
            self._items.append(item)
            if len(self._items) > 1:
                return  # a call is already scheduled: it takes this one along
        timer = threading.Timer(self.delay, self._fire)
        timer.daemon = True
        timer.start()

    def _fire(self) -> None:
        with self._lock:
            items, self._items = self._items, []
        try:
            self.fn(sorted(set(items)))
        except Exception:  # the broker may be down: the periodic monitor pass will catch up
            logger.exception("could not report finished tasks")


def _own_move(src: str, dest: str) -> bool:
    """``x.md.launching|dispatched|failed`` → ``x.md`` in one inbox: a release, requeue or retry, not a writer."""
    return (os.path.dirname(src) == os.path.dirname(dest)
            and any(os.path.basename(src) == os.path.basename(dest) + s for s in STATE_SUFFIXES))


class InboxHandler(FileSystemEventHandler):
    """Enqueue when a writer is done with an inbox task file: closed after writing, or moved in.

    A plain create is not enqueued: the file is empty or still being written then (``cat > x.md``).
    With the event goes the file's identity, so the scan knows this version is complete
    (settle.py). A polling observer sees no closes: its created/modified events are hints
    without an identity (the file then settles by age).
    """

    def __init__(self, on_task: Callable[[str, list[int] | None], object], *, polling: bool = False,
                 on_done: Callable[[list[str]], object] | None = None) -> None:
        self.on_task = on_task
        self.polling = polling
        #: A task file reached done/: the sessions' monitor may free its session now, not a monitor interval later.
        self.on_done = Coalesce(on_done) if on_done is not None else None

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            if event.event_type in ("created", "moved"):
                self._new_directory(os.fsdecode(event.dest_path if event.event_type == "moved" else event.src_path))
            return
        path = os.fsdecode(event.dest_path if event.event_type == "moved" else event.src_path)
        if self.on_done is not None and event.event_type in ("moved", "closed") and is_done_task(path):
            self.on_done.trigger(path)
            return
        if not is_inbox_task(path):
            return
        if event.event_type == "closed" or (event.event_type == "moved"
                                            and not _own_move(os.fsdecode(event.src_path), path)):
            ident = settle.identity_of(path)
            closed: list[int] | None = list(ident) if ident is not None else None
        elif event.event_type == "moved" or (self.polling and event.event_type in ("created", "modified")):
            closed = None  # a hint: dispatch if (and when) the file is settled
        else:
            return
        self._enqueue(path, closed)

    def _new_directory(self, path: str) -> None:
        """A directory appeared (``mkdir -p``, a project moved or cloned in): report the tasks already in it.

        Files that were there before inotify watched the directory come only as watchdog's simulated
        "created" events, which look like a writer opening a file and are ignored above. So a new
        inbox is listed instead, each task a hint: nobody saw its writer close it, so it settles by
        age. Every new inbox gets its own directory event (real, or simulated for the inside of a
        directory that was moved or made in one go), so other directories are not looked into.
        """
        if os.path.basename(path) != d.INBOX or os.path.basename(os.path.dirname(path)) != d.QUEUE_DIR:
            return
        try:
            with os.scandir(path) as entries:
                found = [e.path for e in entries if is_inbox_task(e.path) and e.is_file(follow_symlinks=False)]
        except OSError:  # it went away again
            return
        for task in sorted(found):
            self._enqueue(task, None)

    def _enqueue(self, path: str, closed: list[int] | None) -> None:
        try:
            self.on_task(path, closed)
        except Exception:  # the broker may be down: the periodic scan will catch up
            logger.exception("could not enqueue inbox_event for %s", path)


def make_observer(projects_dir: Path, handler: InboxHandler, *, polling: bool = False) -> BaseObserver:
    """A recursive observer over projects_dir (inotify, or polling where inotify is unavailable)."""
    observer: BaseObserver
    if polling:
        observer = PollingObserver(timeout=2.0)
    else:
        try:
            from watchdog.observers.inotify import InotifyObserver

            # Full events: a file moved in from outside the watched tree is a "moved" event, not "created".
            observer = InotifyObserver(generate_full_events=True)
        except ImportError:  # not Linux
            observer = Observer()
    try:
        observer.schedule(handler, str(projects_dir), recursive=True)
    except OSError as exc:
        if polling:
            raise
        logger.warning("inotify unavailable (%s): falling back to polling", exc)
        observer = PollingObserver(timeout=2.0)
        handler.polling = True
        observer.schedule(handler, str(projects_dir), recursive=True)
    return observer


def run(projects_dir: Path, on_task: Callable[[str, list[int] | None], object], on_overflow: Callable[[], object],
        *, stop: threading.Event, polling: bool = False,
        on_done: Callable[[list[str]], object] | None = None) -> None:
    """Watch until ``stop`` is set; a dead observer is restarted and triggers a full scan.

    ``on_task(path, closed)``: ``closed`` is the file's [inode, mtime_ns, size] when its writer
    was done, or None for a hint. ``on_done(paths)``: task files reached done/ (once per burst, all of it).
    """
    projects_dir.mkdir(parents=True, exist_ok=True)
    handler = InboxHandler(on_task, polling=polling, on_done=on_done)
    while not stop.is_set():
        observer = make_observer(projects_dir, handler, polling=polling)
        observer.start()
        logger.info("watching %s (%s)", projects_dir, type(observer).__name__)
        on_overflow()  # events may have been missed while no observer ran
        while not stop.wait(1.0):
            if not observer.is_alive():
                logger.error("file observer died; restarting and rescanning")
                break
        observer.stop()
        observer.join(timeout=5)
