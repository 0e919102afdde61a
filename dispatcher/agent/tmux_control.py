"""One long-lived tmux control-mode client (``tmux -C``) per tmux server and process: commands without a process each.

A tmux client process costs ~1.8 ms of CPU and wall time; a task's life took ~16 of them. A control client
takes command lines on its stdin and answers each command in a block::

    %begin <time> <number> <flags>
    <output lines>
    %end <time> <number> <flags>          (or %error …, the error message as the output)

Pane text appears inside blocks as it is (a capture of a pane that printed ``%end 1 2 1`` holds that line),
so a block's end is never taken from a line the pane could have written.

One call is ONE line, the commands of a ``SEP`` chain joined by `` ; `` with ``display-message -p M<i>`` (a
fresh random marker) between each two, then a second line ``display-message -p END`` (random too)::

    c1 ; display-message -p M1 ; c2 ; display-message -p M2 ; c3
    display-message -p END

The commands of one line are one command list, as a tmux CLI call's are: tmux runs them back to back (no
pane output is read between them: a respawned program cannot exit before the ``pipe-pane`` after it) and
drops the rest of the list at the first error. The second line always runs. The reply is read up to the
line END; the markers cut it into one section per command that ran. A section ends with its marker's
``%begin``; scanning back from there, the first ``%end``/``%error`` with flags 1 (a command from this
client) is the command's real end: after it only tmux's own lines can come (notifications, blocks of
flags 0), never pane text. Its ``<time> <number>`` name the block, whose ``%begin`` is the first line with
them (before the real begin, only tmux's own lines). The pane never sees a marker. Anything else (no
guard, a marker without its ``%end``, end of stream, a timeout) kills the client: a stream out of step is
never read again.

A control client that is not attached to a session exits after its first command, so it attaches (``-f
no-output,ignore-size``: no pane output sent to it, no effect on window sizes) to the session the first
command names, else to any; ``-N``: an attach never starts a server. ``tmux ls`` shows that session as
attached. Commands that cannot go through it use a process as before (:mod:`dispatcher.agent.tmux`
decides): stdin input (``load-buffer -``), ``new-session`` (the client's cwd and environment count there),
``kill-server``/``kill-session``, and arguments a control line cannot carry (newlines, CR, NUL, text that
is not UTF-8). Off unless ``AQ_TMUX_CONTROL=1`` (tmux's server can crash when a control client starts while
another attaches or leaves: see :func:`dispatcher.agent.tmux.control_enabled`); tmux older than 3.2 never uses it.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
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
#: After a client could not start (no server, no session), try again only after this long.
_RETRY_AFTER_S = 1.0
#: After a client left, start the next only after this long: tmux 3.3a's server crashes (SIGSEGV, all sessions
#: lost) when it notifies control clients (here: of the detach) while one is still starting (before tmux sets
#: up its control state: tmux PR 4980), so this process never overlaps its own client's exit and next start.
_SETTLE_S = 0.2
#: A block begun by a command of this client: once one is read, tmux has read the call's line.
_OWN_BEGIN = re.compile(rb"^%begin \d+ \d+ 1$", re.MULTILINE)
#: tmux's goodbye to an exiting client, outside any block.
_EXIT = re.compile(rb"^%exit( .*)?$", re.MULTILINE)


class ProtocolError(Exception):
    """The reply stream is not what the protocol says: the client is dropped (never read again).

    ``unrun``: the stream proves none of the call's commands ran (it ended, or tmux said ``%exit``, before
    any block of this call began: tmux reads no line from an exiting client, and flushes every block of
    what it ran before it lets the client go), so the call may be made again through a process."""

    def __init__(self, message: str, *, unrun: bool = False) -> None:
        super().__init__(message)
        self.unrun = unrun


def quote(arg: str) -> str:
    """One argument for tmux's command parser: single quotes, in which nothing is special but ``'`` itself."""
    return "'" + arg.replace("'", "'\\''") + "'"


def sendable(args: Sequence[str]) -> bool:
    """True when every argument can go on a control line (UTF-8, no line break, no NUL)."""
    if any(c in a for a in args for c in _UNSENDABLE):
        return False
    try:
        "".join(args).encode("utf-8")  # surrogates (os.fsdecode of a non-UTF-8 path) cannot
    except UnicodeEncodeError:
        return False
    return True


def _guard(line: str) -> tuple[str, str, str, str] | None:
    """(kind, time, number, flags) of a guard line, else None."""
    parts = line.split(" ")
    if len(parts) == 4 and parts[0] in ("%begin", "%end", "%error") and all(p.isdigit() for p in parts[1:]):
        return parts[0], parts[1], parts[2], parts[3]
    return None


def parse_reply(lines: list[str]) -> tuple[bool, list[str]]:
    """(succeeded, output lines) of one command from its section: the lines up to its marker's line, the
    marker block's ``%begin`` last."""
    if not lines:
        raise ProtocolError("no reply")
    mark_begin = _guard(lines[-1])
    if mark_begin is None or mark_begin[0] != "%begin" or mark_begin[3] != "1":
        raise ProtocolError("the marker block has no %begin")
    for end_at in range(len(lines) - 2, -1, -1):
        guard = _guard(lines[end_at])
        if guard is not None and guard[0] in ("%end", "%error") and guard[3] == "1":
            break
    else:
        raise ProtocolError("no end of the command's block")
    kind, t, number, flags = guard
    begin = f"%begin {t} {number} {flags}"
    try:
        begin_at = lines.index(begin, 0, end_at)
    except ValueError:
        raise ProtocolError("no %begin for the command's block") from None
    return kind == "%end", lines[begin_at + 1:end_at]


def _end_of(begin_line: str) -> str:
    """The ``%end`` line that closes the block ``begin_line`` opened."""
    return "%end" + begin_line.removeprefix("%begin")


def parse_chain(lines: list[str], marks: Sequence[str]) -> list[tuple[bool, list[str]]]:
    """(succeeded, output) of each command that ran, in order, from the lines read up to (without) the END
    line; ``marks``: the markers between the commands. Only the last can have failed (tmux drops the rest of
    a command list at its first error, the following markers with it)."""
    results: list[tuple[bool, list[str]]] = []
    start = 0
    for mark in marks:
        try:
            at = lines.index(mark, start)
        except ValueError:
            break  # the list stopped before this marker
        ok, out = parse_reply(lines[start:at])
        if not ok:
            raise ProtocolError("a command failed but the marker after it ran")
        if at + 1 >= len(lines) or lines[at + 1] != _end_of(lines[at - 1]):
            raise ProtocolError("a marker without its %end")
        results.append((ok, out))
        start = at + 2
    ok, out = parse_reply(lines[start:])
    if ok and len(results) < len(marks):
        raise ProtocolError("the command list stopped without an error")
    results.append((ok, out))
    return results


class ControlClient:
    """A ``tmux -C`` client attached to one session; one call at a time (a lock), each read to its END."""

    def __init__(self, binary: str, socket_name: str, session: str | None, timeout: float) -> None:
        self.timeout = timeout
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self._buf = b""
        self._closed = False
        argv = [binary, "-u", "-N", "-L", socket_name, "-C", "attach-session", "-f", "no-output,ignore-size"]
        if session is not None:
            argv += ["-t", f"={session}"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            self.session = self._attached()
        except (ProtocolError, OSError, IndexError):
            self.close()
            raise ProtocolError("could not attach") from None

    def _attached(self) -> str:
        """The session this client is attached to, once it is; ProtocolError when it leaves instead.

        tmux may read the first line of stdin before it runs the attach command (the client sends both at
        once): a line that ran first sees no client session, so the question is asked again."""
        deadline = time.monotonic() + self.timeout
        with self.lock:
            while True:
                session = self._call([["display-message", "-p", "#{client_session}"]])[0][1][0]
                if session:
                    return session  # a kill of that session drops this client first
                if time.monotonic() > deadline:
                    raise ProtocolError("not attached")
                time.sleep(0.002)  # the attach command is on its way

    def alive(self) -> bool:
        return not self._closed and self.proc.poll() is None and self.pid == os.getpid()

    def close(self) -> None:
        """Let the client go: after the call another thread may be making (calls end within the timeout)."""
        if self.pid != os.getpid():
            return  # a forked child: the parent's client is the parent's to close
        self._closed = True  # no new call starts
        with self.lock:  # the pipes are closed only when no thread uses them (no read of a reused descriptor)
            self._stop()

    def _stop(self) -> None:
        """End of input, then read to the end of output: tmux detaches the client when it has sent all it had,
        and the client exits. Killed only when that does not happen in time (a hung server): tmux 3.3a's
        server can crash (SIGSEGV, every session lost) when a control client dies with commands in flight,
        so a client is never killed first. The caller holds the lock."""
        self._closed = True
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass  # a broken pipe: closed all the same
        deadline = time.monotonic() + min(self.timeout, 5.0)
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            fd = self.proc.stdout.fileno()
            while (left := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select([fd], [], [], left)
                if ready and not os.read(fd, 65536):
                    break
            self.proc.stdout.close()
        try:
            self.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            logger.warning("tmux control client %d did not leave; killed", self.proc.pid)
            self.proc.kill()
            self.proc.wait()

    def run(self, commands: Sequence[Sequence[str]]) -> str:
        """Run ``commands`` as one command list, stopping at the first that fails (as one tmux CLI call does):
        their output as the CLI prints it. TmuxError for a failed command; ProtocolError (client closed) for
        a broken stream."""
        with self.lock:
            results = self._call(commands)
        if not results[-1][0]:
            raise TmuxError(f"tmux {commands[0][0]} failed (exit 1): {' '.join(results[-1][1]).strip()}")
        return "".join(line + "\n" for _, lines in results for line in lines)

    def _call(self, commands: Sequence[Sequence[str]]) -> list[tuple[bool, list[str]]]:
        """One line for ``commands``, one for END; the parsed sections. The caller holds the lock."""
        if self._closed:
            raise ProtocolError("closed", unrun=True)
        marks = [f"aq-{uuid.uuid4().hex}" for _ in commands[1:]]
        end = f"aq-{uuid.uuid4().hex}"
        parts = [" ".join(quote(a) for a in commands[0])]
        for mark, command in zip(marks, commands[1:]):
            parts += [f"display-message -p {mark}", " ".join(quote(a) for a in command)]
        line = " ; ".join(parts) + f"\ndisplay-message -p {end}\n"
        try:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(line.encode("utf-8"))
                self.proc.stdin.flush()
            except OSError as exc:  # no reader left: tmux read nothing of it
                raise ProtocolError(f"cannot write: {exc}", unrun=True) from None
            lines = self._read_to(end)
            if len(lines) < 3 or lines[-1] != _end_of(lines[-3]):
                raise ProtocolError("the END block has no %end")
            return parse_chain(lines[:-2], marks)
        except ProtocolError:
            self._stop()
            raise

    def _read_to(self, end: str) -> list[str]:
        """The lines up to the END line and the one after it (its block's ``%end``)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        needle = f"\n{end}\n".encode()
        deadline = time.monotonic() + self.timeout
        while True:
            at = self._buf.find(needle)
            if at >= 0:
                stop = self._buf.find(b"\n", at + len(needle))
                if stop >= 0:
                    reply, self._buf = self._buf[:stop], self._buf[stop + 1:]
                    return reply.decode("utf-8", "replace").split("\n")
            if not _OWN_BEGIN.search(self._buf) and _EXIT.search(self._buf):
                raise ProtocolError("the control client is exiting", unrun=True)
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProtocolError(f"no reply within {self.timeout}s")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise ProtocolError("the control client exited", unrun=not _OWN_BEGIN.search(self._buf))
            self._buf += chunk


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
        self._failed = {}

    def get(self, binary: str, socket_name: str, session: str | None, timeout: float) -> ControlClient | None:
        """This server's client; a new one attached to ``session`` (else to any) when there is none; None: use
        a process (no server or no session a moment ago)."""
        key = (binary, socket_name)
        with self._lock:
            client = self._clients.get(key)
            if client is not None and client.alive():
                return client
            if client is not None:
                self._clients.pop(key)
                client.close()
                self._failed[key] = time.monotonic() + _SETTLE_S
            if time.monotonic() < self._failed.get(key, 0.0):
                return None
            for target in dict.fromkeys([session, None]):  # the named session, else tmux's choice
                try:
                    client = ControlClient(binary, socket_name, target, timeout)
                except (ProtocolError, OSError) as exc:
                    logger.debug("no tmux control client on %s attached to %s (%s)", socket_name, target, exc)
                    continue
                self._clients[key] = client
                return client
            self._failed[key] = time.monotonic() + _RETRY_AFTER_S
            return None

    def session_made(self, binary: str, socket_name: str) -> None:
        """A session now exists on this server: a client may attach at once (unless one just left)."""
        with self._lock:
            key = (binary, socket_name)
            if key not in self._clients and self._failed.get(key, 0.0) - time.monotonic() > _SETTLE_S:
                self._failed.pop(key, None)

    def drop(self, binary: str, socket_name: str, session: str | None = None) -> None:
        """Close this server's client (the server is going away; or ``session``, if it is attached to it)."""
        with self._lock:
            client = self._clients.get((binary, socket_name))
            if client is None or (session is not None and client.session != session and client.alive()):
                return
            self._clients.pop((binary, socket_name))
            self._failed[(binary, socket_name)] = time.monotonic() + _SETTLE_S
        client.close()

    def close_all(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()


REGISTRY = Registry()
