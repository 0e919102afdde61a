"""One long-lived tmux control-mode client (``tmux -C``) per tmux server and process: commands without a process each.

A tmux client process costs ~1.8 ms of CPU and wall time; a task's life took ~16 of them. A control client
takes commands on its stdin and answers each in a block::

    %begin <time> <number> <flags>
    <output lines>
    %end <time> <number> <flags>          (or %error …, the error message as the output)

Pane text appears inside blocks as it is (a capture of a pane that printed ``%end 1 2 3`` holds that line),
so a block's end is never taken from a line the pane could have written. Each command goes on its own line
followed by ``display-message -p <MARK>`` with a fresh random MARK, and the reply is read up to the line
MARK: the line before it is the MARK block's ``%begin``; scanning back from there, the first ``%end`` or
``%error`` of a command from stdin (flags 1) is the command's real guard (everything after the command's
real end is tmux's own: notifications, blocks of flags 0); its ``<time> <number>`` names the block, whose
``%begin`` is the first line with them (anything before the real begin is tmux's own too). The pane cannot
see MARK. Anything else (no guard, end of stream, timeout) kills the client: a stream out of step is never
read again.

A control client that is not attached to a session exits after its first command, so it attaches (``-f
no-output,ignore-size``: no pane output sent to it, no effect on window sizes) to the session the first
command names; ``tmux ls`` shows that session as attached. Commands that cannot go through it use a process
as before (:mod:`dispatcher.agent.tmux` decides): stdin input (``load-buffer -``), ``new-session`` (the
client's cwd and environment count there), ``kill-server``/``kill-session``, and arguments a control line
cannot carry (newlines, NUL). ``AQ_TMUX_CONTROL=0`` turns it off; tmux older than 3.2 never uses it.
"""

from __future__ import annotations

import atexit
import logging
import os
import select
import subprocess
import threading
import time
import uuid
from collections.abc import Sequence

from dispatcher.core.errors import TmuxError

logger = logging.getLogger(__name__)

#: Characters a control line cannot carry inside an argument.
_UNSENDABLE = ("\n", "\r", "\0")
#: After a client could not start (no such session, old tmux), try again only after this long.
_RETRY_AFTER_S = 1.0


class ProtocolError(Exception):
    """The reply stream is not what the protocol says: the client is dropped (never read again)."""


def quote(arg: str) -> str:
    """One argument for tmux's command parser: single quotes, in which nothing is special but ``'`` itself."""
    return "'" + arg.replace("'", "'\\''") + "'"


def sendable(args: Sequence[str]) -> bool:
    """True when every argument can go on a control line."""
    return not any(c in a for a in args for c in _UNSENDABLE)


def _guard(line: str) -> tuple[str, str, str, str] | None:
    """(kind, time, number, flags) of a guard line, else None."""
    parts = line.split(" ")
    if len(parts) == 4 and parts[0] in ("%begin", "%end", "%error") and all(p.isdigit() for p in parts[1:]):
        return parts[0], parts[1], parts[2], parts[3]
    return None


def parse_reply(lines: list[str]) -> tuple[bool, list[str]]:
    """(succeeded, output lines) of one command from the lines read up to (and without) the MARK line."""
    if not lines:
        raise ProtocolError("no reply")
    mark_begin = _guard(lines[-1])
    if mark_begin is None or mark_begin[0] != "%begin":
        raise ProtocolError("the marker block has no %begin")
    end_at = None
    for i in range(len(lines) - 2, -1, -1):
        g = _guard(lines[i])
        if g is not None and g[0] in ("%end", "%error") and g[3] == "1":
            end_at = i
            break
    if end_at is None:
        raise ProtocolError("no end of the command's block")
    kind, t, number, flags = _guard(lines[end_at])  # type: ignore[misc]
    begin = f"%begin {t} {number} {flags}"
    try:
        begin_at = lines.index(begin, 0, end_at)
    except ValueError:
        raise ProtocolError("no %begin for the command's block") from None
    return kind == "%end", lines[begin_at + 1:end_at]


class ControlClient:
    """A ``tmux -C`` client attached to one session; one command at a time (a lock), read to its MARK."""

    def __init__(self, binary: str, socket_name: str, session: str, timeout: float) -> None:
        self.timeout = timeout
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self._buf = b""
        self.proc = subprocess.Popen(
            [binary, "-u", "-L", socket_name, "-C", "attach-session", "-f", "no-output,ignore-size",
             "-t", f"={session}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            self._exchange("display-message", "-p", "aq-sync")  # attached and in step, or it raises
        except (ProtocolError, TmuxError, OSError):
            self.close()
            raise

    def alive(self) -> bool:
        return self.proc.poll() is None and self.pid == os.getpid()

    def close(self) -> None:
        if self.pid != os.getpid():
            return  # a forked child: the parent's client is the parent's to close
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            logger.warning("tmux control client %d did not exit", self.proc.pid)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def run(self, commands: Sequence[Sequence[str]]) -> str:
        """Run ``commands`` in order, stopping at the first that fails (as one tmux CLI call does): their output
        as the CLI prints it. TmuxError for a failed command; ProtocolError (client closed) for a broken stream."""
        out: list[str] = []
        with self.lock:
            for command in commands:
                ok, lines = self._exchange(*command)
                if not ok:
                    raise TmuxError(f"tmux {command[0]} failed (exit 1): {' '.join(lines).strip()}")
                out += [line + "\n" for line in lines]
        return "".join(out)

    def _exchange(self, *command: str) -> tuple[bool, list[str]]:
        mark = f"aq-{uuid.uuid4().hex}"
        line = " ".join(quote(a) for a in command) + f"\ndisplay-message -p {mark}\n"
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(line.encode("utf-8"))
            self.proc.stdin.flush()
            lines = self._read_to(mark)
            ok, out = parse_reply(lines)
            end = self._line(time.monotonic() + self.timeout)  # the MARK block's end
            if _guard(end) is None or not end.startswith("%end "):
                raise ProtocolError(f"the marker block ended with {end[:40]!r}")
        except (ProtocolError, OSError) as exc:
            self.close()
            raise ProtocolError(str(exc)) from None
        return ok, out

    def _read_to(self, mark: str) -> list[str]:
        deadline = time.monotonic() + self.timeout
        lines: list[str] = []
        while True:
            line = self._line(deadline)
            if line == mark:
                return lines
            lines.append(line)

    def _line(self, deadline: float) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProtocolError(f"no reply within {self.timeout}s")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise ProtocolError("the control client exited")
            self._buf += chunk
        raw, _, self._buf = self._buf.partition(b"\n")
        return raw.decode("utf-8", "replace").removesuffix("\r")


class Registry:
    """The control client of each tmux server (binary, socket) for this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, str], ControlClient] = {}
        self._failed: dict[tuple[str, str], float] = {}
        atexit.register(self.close_all)
        # A child forked while a thread held the lock (a prefork pool under a heartbeat thread) would wait on it
        # forever; the parent's clients are the parent's (their pipes stay open in the child, unused).
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self._lock = threading.Lock()
        self._clients = {}

    def get(self, binary: str, socket_name: str, session: str | None, timeout: float) -> ControlClient | None:
        """This server's client; a new one attached to ``session`` when there is none; None: use a process."""
        key = (binary, socket_name)
        with self._lock:
            client = self._clients.get(key)
            if client is not None and client.alive():
                return client
            if client is not None:
                self._clients.pop(key)
                client.close()
            if session is None or time.monotonic() < self._failed.get(key, 0.0):
                return None
            try:
                client = ControlClient(binary, socket_name, session, timeout)
            except (ProtocolError, TmuxError, OSError) as exc:
                logger.debug("no tmux control client on %s (%s): a process per call", socket_name, exc)
                self._failed[key] = time.monotonic() + _RETRY_AFTER_S
                return None
            self._clients[key] = client
            return client

    def drop(self, binary: str, socket_name: str) -> None:
        """Close this server's client (the server is going away)."""
        with self._lock:
            client = self._clients.pop((binary, socket_name), None)
        if client is not None:
            client.close()

    def close_all(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()


REGISTRY = Registry()
