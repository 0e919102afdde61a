"""The launch's doorbell: a private FIFO that wakes a wait when the pane wrote (agent/pane_output.py)."""

from __future__ import annotations

import os
import stat
import threading
import time

from dispatcher.agent.pane_output import PaneOutput


def test_a_write_wakes_the_wait_at_once_and_silence_times_out() -> None:
    with PaneOutput() as out:
        assert out.path is not None and stat.S_ISFIFO(os.stat(out.path).st_mode)
        assert stat.S_IMODE(os.stat(out.path.parent).st_mode) == 0o700  # nobody else can ring it
        writer = os.open(out.path, os.O_WRONLY)  # what tmux's `cat > FIFO` holds
        try:
            t0 = time.monotonic()
            assert out.wait(0.05) is False and time.monotonic() - t0 >= 0.04  # silence: the timer
            threading.Timer(0.05, lambda: os.write(writer, b"\x1b[H prompt" * 1000)).start()
            t0 = time.monotonic()
            assert out.wait(5.0) is True and time.monotonic() - t0 < 2.0  # woken by the write, not the timer
            assert out.wait(0.01) is False  # everything written was drained by one wake
        finally:
            os.close(writer)
        assert out.wait(1.0) is True and out.fd is None  # the writer is gone: end of file, then plain sleeps
        t0 = time.monotonic()
        assert out.wait(0.05) is False and time.monotonic() - t0 >= 0.04
        path = out.path
    assert not path.exists()  # removed when the launch is over
