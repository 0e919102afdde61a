"""File watcher (``dispatcher watch``): inbox events become ``inbox_event`` tasks at once.

Tiny on purpose (dramatiq's watcher): it only enqueues. Events are hints; the
periodic ``full_scan`` is the safety net for anything lost (overflow, downtime).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Callable

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from . import defaults as d

logger = logging.getLogger(__name__)

_INBOX_PART = f"{os.sep}{d.QUEUE_DIR}{os.sep}{d.INBOX}{os.sep}"


def is_inbox_task(path: str) -> bool:
    """True for ``…/.agent-queue/inbox/<name>.md`` (markers, temp files and done/ are ignored)."""
    name = os.path.basename(path)
    return _INBOX_PART in path and name.endswith(d.TASK_SUFFIX) and not name.startswith(".")


class InboxHandler(FileSystemEventHandler):
    """Enqueue on create, move-into and close-after-write of inbox task files."""

    def __init__(self, on_task: Callable[[str], object], on_overflow: Callable[[], object]) -> None:
        self.on_task = on_task
        self.on_overflow = on_overflow

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        if event.event_type in ("created", "closed"):
            path = event.src_path
        elif event.event_type == "moved":
            path = event.dest_path
        else:
            return
        path = os.fsdecode(path)
        if is_inbox_task(path):
            try:
                self.on_task(path)
            except Exception:  # the broker may be down: the periodic scan will catch up
                logger.exception("could not enqueue inbox_event for %s", path)


def make_observer(projects_dir: Path, handler: InboxHandler, *, polling: bool = False) -> BaseObserver:
    """A recursive observer over projects_dir (inotify, or polling where inotify is unavailable)."""
    observer: BaseObserver = PollingObserver(timeout=2.0) if polling else Observer()
    try:
        observer.schedule(handler, str(projects_dir), recursive=True)
    except OSError as exc:
        if polling:
            raise
        logger.warning("inotify unavailable (%s): falling back to polling", exc)
        observer = PollingObserver(timeout=2.0)
        observer.schedule(handler, str(projects_dir), recursive=True)
    return observer


def run(projects_dir: Path, on_task: Callable[[str], object], on_overflow: Callable[[], object], *,
        stop: threading.Event, polling: bool = False) -> None:
    """Watch until ``stop`` is set; a dead observer is restarted and triggers a full scan."""
    projects_dir.mkdir(parents=True, exist_ok=True)
    handler = InboxHandler(on_task, on_overflow)
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
