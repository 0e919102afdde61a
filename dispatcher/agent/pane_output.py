"""Wake a launch's waits when its pane writes something, instead of polling the screen on a timer.

A launch waits three times for the agent's screen (the prompt, the pasted text, the submitted
message). Polling costs one tmux client process per look (~2 ms of CPU) and, between looks, up
to an interval of latency. Here tmux copies the pane's output (``pipe-pane -O``) into a FIFO of
this process; a wait blocks on the FIFO and looks at the screen only when the agent wrote
something. The content of the FIFO is never read for meaning (the screen, read through tmux as
before, decides everything): it is only a doorbell, so what an agent prints cannot steer it.

The FIFO is private (a 0700 directory of this process). When the reader closes it, the ``cat``
that tmux started gets SIGPIPE on its next write and exits; the next launch's ``pipe-pane``
replaces any pipe still open. When anything here fails, waits fall back to plain sleeping (the
callers poll at their usual interval anyway).
"""

from __future__ import annotations

import logging
import os
import select
import tempfile
import threading
import time
import uuid
from pathlib import Path

logger = logging.getLogger(__name__)

_dir_lock = threading.Lock()
_dir: Path | None = None


def _fifo_dir() -> Path:
    global _dir
    with _dir_lock:
        if _dir is None or not _dir.is_dir():
            _dir = Path(tempfile.mkdtemp(prefix="aq-pane-"))  # mode 0700
        return _dir


class PaneOutput:
    """A doorbell rung by the pane's output; ``path`` is None when it could not be made (waits then sleep)."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.path: Path | None = None
        try:
            path = _fifo_dir() / f"{uuid.uuid4().hex}.fifo"
            os.mkfifo(path, 0o600)
            # Non-blocking: opening the read end must not wait for tmux's writer.
            self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            self.path = path
        except OSError as exc:
            logger.info("no pane output doorbell (%s): polling the screen instead", exc)
            self.close()

    def wait(self, timeout: float) -> bool:
        """Block until the pane wrote something or ``timeout`` s passed; True when it wrote."""
        if timeout <= 0:
            return False
        if self.fd is None:
            time.sleep(timeout)  # the caller's polling interval
            return False
        try:
            ready, _, _ = select.select([self.fd], [], [], timeout)
        except (OSError, ValueError):
            ready = []
        if not ready:
            return False
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        while data:  # drain what is there: one look at the screen answers all of it
            try:
                data = os.read(self.fd, 65536)
            except (BlockingIOError, OSError):
                return True
        # End of file: tmux's writer is gone (the pane exited or the pipe was replaced). Sleep from now on.
        self._close_fd()
        return True

    def _close_fd(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None

    def close(self) -> None:
        self._close_fd()
        if self.path is not None:
            try:
                self.path.unlink()
            except OSError:
                pass
            self.path = None

    def __enter__(self) -> PaneOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
