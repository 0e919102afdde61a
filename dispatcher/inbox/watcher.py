"""File watcher (``dispatcher watch``): inbox events become ``inbox_event`` tasks at once.

Tiny on purpose (dramatiq's watcher): it only enqueues. Events are hints; the
periodic ``full_scan`` is the safety net for anything lost (overflow, downtime).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from dispatcher.inbox.fsio import STATE_SUFFIXES
from dispatcher.inbox.watch_scope import WatchScope, is_done_task, is_inbox_task
from dispatcher.store import settle

logger = logging.getLogger(__name__)

#: Done files arriving within this long of each other are reported once (a burst of agents finishing).
DONE_COALESCE_S = 0.01
#: watchdog's own log line when the kernel dropped events (it tells its handlers nothing): the watcher restarts.
_OVERFLOW_LOGGER = "watchdog.observers.inotify_c"


class Coalesce:
    """Call ``fn(items)`` once, ``delay`` s after the first of a burst of triggers, with every item of the
    burst; a trigger after that call began is taken by the next call, so nothing goes unreported.

    One long-lived thread makes the calls (started by the first trigger), not a timer thread per burst: a
    Celery message sent from a thread's first send costs about three times one sent from a thread that sent
    before (Celery's per-thread producer state; 3.4 ms against 1.0 ms of CPU here)."""

    def __init__(self, fn: Callable[[list[str]], object], delay: float = DONE_COALESCE_S) -> None:
        self.fn, self.delay = fn, delay
        self._cond = threading.Condition()
        self._items: list[str] = []
        self._thread: threading.Thread | None = None

    def trigger(self, item: str) -> None:
        with self._cond:
            self._items.append(item)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="aq-done-report", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._items))
            time.sleep(self.delay)  # the rest of the burst
            with self._cond:
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
        #: The watches of the observer this handler serves (:func:`start_observer` sets it).
        self.scope: WatchScope | None = None

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            self._directory(event)
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
        self.enqueue(path, closed)

    def _directory(self, event: FileSystemEvent) -> None:
        """A directory came or went: the scope watches a new project, queue dir, inbox or done (and reports
        the tasks a new inbox already holds), and forgets the watches of one deleted or moved away."""
        if self.scope is None:
            return
        if event.event_type in ("deleted", "moved") and event.src_path:
            self.scope.drop(os.fsdecode(event.src_path))
        if event.event_type == "created":
            self.scope.add(os.fsdecode(event.src_path))
        elif event.event_type == "moved" and event.dest_path:
            self.scope.add(os.fsdecode(event.dest_path))

    def enqueue(self, path: str, closed: list[int] | None) -> None:
        try:
            self.on_task(path, closed)
        except Exception:  # the broker may be down: the periodic scan will catch up
            logger.exception("could not enqueue inbox_event for %s", path)


def start_observer(projects_dir: Path, handler: InboxHandler, *, polling: bool = False) -> BaseObserver:
    """A started observer over the directories of interest under projects_dir (watch_scope.py): inotify, or
    polling where inotify is unavailable (no instance or watch left). Watches are added once it runs, so one
    that fails (a directory gone meanwhile) is skipped; only the projects directory's own watch must succeed."""
    if not polling:
        try:
            return _start(projects_dir, handler, polling=False)
        except OSError as exc:
            logger.warning("inotify unavailable (%s): falling back to polling", exc)
    return _start(projects_dir, handler, polling=True)


def _start(projects_dir: Path, handler: InboxHandler, *, polling: bool) -> BaseObserver:
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
    handler.polling = polling
    handler.scope = WatchScope(observer, handler, os.path.abspath(projects_dir), polling=polling,
                               on_hint=lambda task: handler.enqueue(task, None))
    observer.start()
    try:
        handler.scope.add(handler.scope.root, report_tasks=False, must=True)
    except OSError:
        observer.stop()
        observer.join(timeout=5)
        raise
    return observer


class _OverflowSignal(logging.Filter):
    """Sets ``event`` when watchdog logs that the kernel dropped events (its handlers hear nothing of it).

    :func:`listening` makes the logger pass its warnings to this filter whatever the process's log level (a
    `-l error` run, or a Celery worker's logging set up earlier, would otherwise drop them before any filter);
    the filter then shows a record only where the logging configuration would have shown it."""

    def __init__(self, event: threading.Event, shown_from: logging.Logger) -> None:
        super().__init__()
        self.event, self.shown_from = event, shown_from

    def filter(self, record: logging.LogRecord) -> bool:
        if "overflow" in record.getMessage():
            self.event.set()
        return record.levelno >= self.shown_from.getEffectiveLevel()


@contextmanager
def listening(overflow: threading.Event) -> Iterator[None]:
    """While inside, watchdog's overflow warnings set ``overflow``; the logger's own settings are restored after."""
    lg = logging.getLogger(_OVERFLOW_LOGGER)
    saved = lg.level, lg.disabled
    signal = _OverflowSignal(overflow, lg.parent or logging.getLogger())
    lg.setLevel(logging.WARNING)
    lg.disabled = False  # a dictConfig (disable_existing_loggers) must not blind the watcher to lost events
    lg.addFilter(signal)
    try:
        yield
    finally:
        lg.removeFilter(signal)
        lg.level, lg.disabled = saved


def run(projects_dir: Path, on_task: Callable[[str, list[int] | None], object], on_overflow: Callable[[], object],
        *, stop: threading.Event, polling: bool = False,
        on_done: Callable[[list[str]], object] | None = None) -> None:
    """Watch until ``stop`` is set; a dead observer is restarted and triggers a full scan.

    ``on_task(path, closed)``: ``closed`` is the file's [inode, mtime_ns, size] when its writer
    was done, or None for a hint. ``on_done(paths)``: task files reached done/ (once per burst, all of it).
    """
    projects_dir.mkdir(parents=True, exist_ok=True)
    handler = InboxHandler(on_task, polling=polling, on_done=on_done)
    overflow = threading.Event()
    with listening(overflow):
        while not stop.is_set():
            overflow.clear()
            observer = start_observer(projects_dir, handler, polling=polling)
            logger.info("watching %s (%s, %d directories)", projects_dir, type(observer).__name__,
                        len(handler.scope or ()))
            on_overflow()  # events may have been missed while no observer ran
            while not stop.wait(1.0):
                if not observer.is_alive():
                    logger.error("file observer died; restarting and rescanning")
                    break
                if overflow.is_set():  # a delete or a new inbox may be among the lost events: watch afresh
                    logger.warning("file events were lost (inotify queue overflow); rewatching and rescanning")
                    break
            observer.stop()
            observer.join(timeout=5)
