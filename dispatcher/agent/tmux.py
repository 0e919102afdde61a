"""Small adapter over the tmux CLI: argv lists only, exact targets, literal text only.

Why not libtmux: we need a handful of commands, exact ``=name`` targets and
control over argument quoting (tmux reads a trailing ``;`` as a command
separator and expands ``#{}``/``#()`` formats in ``-c``); a small adapter
keeps every byte we send visible and testable. Every tmux command the
dispatcher sends is built here: other modules call these methods, never
:meth:`Tmux.run` with argv of their own.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dispatcher.agent import tmux_control
from dispatcher.core.defaults import TMUX_NEW_SESSION_TRIES
from dispatcher.core.errors import TmuxError

logger = logging.getLogger(__name__)

#: Marker object: a real tmux command separator inside one invocation.
SEP = object()

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_USER_OPTION = re.compile(r"^@[A-Za-z0-9_-]+$")
#: What a client says when it reached a server that is exiting (kill-server, crash): a new one can start soon.
_SERVER_EXITING = "server exited unexpectedly"
_INFO_FORMAT = "#{pane_dead}\t#{pane_dead_status}\t#{pane_current_command}\t#{pane_pid}\t#{pane_width}\t#{pane_height}"


def _arg(value: str) -> str:
    """Escape one argument so tmux never reads its trailing ``;`` as a command separator."""
    # tmux strips a final ';' and, when the text then ends with '\', turns that into ';'.
    return value[:-1] + "\\;" if value.endswith(";") else value


def _no_format(value: str) -> str:
    """Escape ``#`` for options tmux format-expands (``-c``), so ``#(cmd)`` never runs."""
    return value.replace("#", "##")


def _exact(name: str) -> str:
    return f"={name}"


def _pane(name: str) -> str:
    # A pane command needs the trailing colon: '=name' alone fails with "can't find pane".
    return f"={name}:"


@dataclass(frozen=True)
class PaneInfo:
    """State of a session's (single) pane."""

    dead: bool
    dead_status: int | None
    current_command: str
    pid: int | None
    width: int
    height: int


@dataclass(frozen=True)
class Snapshot:
    """Visible screen text and pane state, taken in one tmux call."""

    text: str
    info: PaneInfo


def _parse_info(line: str) -> PaneInfo:
    parts = (line.split("\t") + [""] * 6)[:6]

    def num(s: str) -> int | None:
        return int(s) if s.strip().lstrip("-").isdigit() else None

    return PaneInfo(
        dead=parts[0] == "1",
        dead_status=num(parts[1]) if parts[0] == "1" else None,
        current_command=parts[2],
        pid=num(parts[3]),
        width=num(parts[4]) or 0,
        height=num(parts[5]) or 0,
    )


def _user_options(out: str) -> dict[str, str]:
    """``@key`` → value from ``show-options`` output."""
    found: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        if key.startswith("@"):
            # tmux quotes a value with spaces or quotes in it.
            found[key] = value.strip().strip("'\"")
    return found


def _option_args(name: str, options: Mapping[str, str]) -> list[object]:
    """``set-option`` commands for user options (``@key``) of session ``name``, each followed by ``SEP``."""
    args: list[object] = []
    for key, value in options.items():
        if not _USER_OPTION.match(key):
            raise TmuxError(f"not a user option name: {key!r}")
        args += ["set-option", "-q", "-t", _pane(name), key, value, SEP]
    return args


def _env_args(env: Mapping[str, str] | None) -> list[str]:
    out: list[str] = []
    for key, value in (env or {}).items():
        if not _ENV_NAME.match(key):
            raise TmuxError(f"invalid environment variable name {key!r}")
        out += ["-e", f"{key}={value}"]
    return out


def _command_args(argv: Sequence[str] | None) -> list[str]:
    if not argv:
        return []
    # tmux runs a single argument through 'sh -c' but execs 2+ arguments directly;
    # quoting a lone argument keeps it one literal word either way.
    return ["--", shlex.quote(argv[0])] if len(argv) == 1 else ["--", *argv]


def version(binary: str = "tmux", timeout: float = 15.0) -> str:
    """``tmux -V`` (no server involved); raises OSError or TimeoutExpired when it cannot run."""
    return subprocess.run([binary, "-V"], capture_output=True, text=True, timeout=timeout, check=False).stdout.strip()


#: Commands always run by a tmux process: the client's cwd and environment count (new-session), or they end
#: the server or session a control client is attached to.
_PROCESS_ONLY = frozenset({"new-session", "kill-server", "kill-session", "start-server"})
#: Commands that may run again through a process when a control client's reply was lost.
_TWICE_HARMLESS = frozenset({"capture-pane", "display-message", "show-options", "list-sessions", "has-session",
                             "set-option"})
_control_versions: dict[str, bool] = {}


def control_enabled(binary: str) -> bool:
    """Control-mode clients are on (``AQ_TMUX_CONTROL=1``) and ``binary`` is tmux 3.2 or newer.

    Off by default: tmux's server (3.3a here; released versions up to at least 3.5a per tmux PR 4980) crashes,
    taking every session and agent with it, when it sends a control client a notification (another control
    client attached or left, a session made or killed) while that client is still starting. Two processes
    starting clients at once crash it within seconds (bench/tmux_control_crash.py)."""
    if os.environ.get("AQ_TMUX_CONTROL", "0") != "1":
        return False
    known = _control_versions.get(binary)
    if known is None:
        try:
            text = version(binary, timeout=5.0)
        except (OSError, subprocess.TimeoutExpired):
            text = ""
        found = re.search(r"(\d+)\.(\d+)", text)
        known = found is not None and (int(found.group(1)), int(found.group(2))) >= (3, 2)
        _control_versions[binary] = known
    return known


def _attach_target(commands: Sequence[Sequence[str]]) -> str | None:
    """The session the first ``-t =name[:]`` of ``commands`` names (a control client attaches to it)."""
    for command in commands:
        for flag, value in zip(command, command[1:]):
            if flag == "-t" and value.startswith("="):
                return value[1:].removesuffix(":") or None
    return None


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` runs (a zombie has closed its sockets: not alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rpartition(b")")[2].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _pause(seconds: float) -> None:
    # The polling interval of a bounded wait, not a fixed wait for something to happen.
    time.sleep(seconds)


class Tmux:
    """One tmux server (``tmux -L socket_name``)."""

    def __init__(self, socket_name: str, *, binary: str = "tmux", timeout: float = 10.0) -> None:
        self.socket_name = socket_name
        self.binary = binary
        self.timeout = timeout

    def run(self, *args: object, input: bytes | None = None) -> str:
        """Run one tmux invocation (``SEP`` separates commands); raise TmuxError with tmux's stderr.

        Through this process's control client of the server when it can (agent/tmux_control.py), else a
        tmux client process."""
        if input is None and control_enabled(self.binary):
            commands: list[list[str]] = [[]]
            for a in args:
                if a is SEP:
                    commands.append([])
                else:
                    commands[-1].append(str(a))
            if (all(commands) and commands[0][0] not in _PROCESS_ONLY
                    and all(map(tmux_control.sendable, commands))):
                client = tmux_control.REGISTRY.get(self.binary, self.socket_name, _attach_target(commands),
                                                   self.timeout)
                if client is not None:
                    try:
                        return client.run(commands)
                    except tmux_control.ProtocolError as exc:
                        # The reply is lost, not necessarily the command: again through a process only when
                        # the stream proves nothing ran, or what ran is harmless twice.
                        if not exc.unrun and not all(c[0] in _TWICE_HARMLESS for c in commands):
                            raise TmuxError(f"tmux {args[0]} failed: control client: {exc}") from None
                        logger.info("tmux control client on %s failed (%s); %s through a process",
                                    self.socket_name, exc, args[0])
        argv = [self.binary, "-u", "-L", self.socket_name]
        argv += [";" if a is SEP else _arg(str(a)) for a in args]
        try:
            proc = subprocess.run(argv, input=input if input is not None else b"", capture_output=True,
                                  timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            raise TmuxError(f"tmux {args[0]} timed out after {self.timeout}s") from None
        except OSError as exc:
            raise TmuxError(f"cannot run {self.binary}: {exc}") from None
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip()
            raise TmuxError(f"tmux {args[0]} failed (exit {proc.returncode}): {err}")
        if args[0] == "new-session":
            tmux_control.REGISTRY.session_made(self.binary, self.socket_name)  # a client can attach now
        return proc.stdout.decode("utf-8", "replace")

    # -- sessions -------------------------------------------------------------

    def has_session(self, name: str) -> bool:
        """True when a session named exactly ``name`` exists."""
        try:
            self.run("has-session", "-t", _exact(name))
        except TmuxError:
            return False
        return True

    def new_session(self, name: str, *, width: int, height: int, cwd: str | Path | None = None,
                    command: Sequence[str] | None = None, env: Mapping[str, str] | None = None,
                    remain_on_exit: bool = True) -> None:
        """Create a detached session of a fixed size running ``command`` (None: a shell)."""
        args: list[object] = ["new-session", "-d", "-s", name, "-x", str(width), "-y", str(height)]
        if cwd is not None:
            args += ["-c", _no_format(str(cwd))]
        args += _env_args(env)
        args += _command_args(command)
        # Chained in one invocation so the option is set before a short-lived command can exit.
        args += [SEP, "set-option", "-w", "-t", _pane(name), "remain-on-exit", "on" if remain_on_exit else "off"]
        # A fixed window size keeps screen parsing stable whatever clients attach.
        args += [SEP, "set-option", "-w", "-t", _pane(name), "window-size", "manual"]
        for attempt in range(1, TMUX_NEW_SESSION_TRIES + 1):
            try:
                self.run(*args)
                return
            except TmuxError as exc:
                # A server killed a moment ago still accepts connections while it exits, then drops them.
                if _SERVER_EXITING not in str(exc) or attempt == TMUX_NEW_SESSION_TRIES:
                    raise
                logger.info("tmux server on %s is still exiting; new-session %s retried", self.socket_name, name)
                _pause(0.05 * attempt)

    def kill_session(self, name: str) -> None:
        """Kill the session named exactly ``name``."""
        # A client attached to that session would leave with it: dropped first (no call races its exit).
        tmux_control.REGISTRY.drop(self.binary, self.socket_name, name)
        self.run("kill-session", "-t", _exact(name))

    def list_sessions(self) -> list[str]:
        """Names of all sessions on this server ([] when no server runs)."""
        try:
            out = self.run("list-sessions", "-F", "#{session_name}")
        except TmuxError as exc:
            if any(s in str(exc) for s in ("no server running", "error connecting", "server exited unexpectedly")):
                return []
            raise
        return [line for line in out.splitlines() if line]

    def server_pid(self) -> int | None:
        """Process id of this tmux server, or None when none runs."""
        try:
            out = self.run("display-message", "-p", "#{pid}").strip()
        except TmuxError:
            return None
        return int(out) if out.isdigit() else None

    def kill_server(self) -> None:
        """Kill this tmux server and wait until it has exited (a new one can start at once); no error when none runs."""
        pid = self.server_pid()
        tmux_control.REGISTRY.drop(self.binary, self.socket_name)
        try:
            self.run("kill-server")
        except TmuxError:
            pass
        if pid is None:
            return
        # kill-server returns before the server has exited; until then a new client reaches the dying one.
        deadline = time.monotonic() + self.timeout
        while pid_alive(pid):
            if time.monotonic() > deadline:
                logger.warning("tmux server %d on %s still running %.0fs after kill-server", pid, self.socket_name,
                               self.timeout)
                return
            _pause(0.01)

    def set_remain_on_exit(self, name: str, on: bool = True) -> None:
        """Keep a dead pane (and its last screen) readable after its process exits."""
        self.run("set-option", "-w", "-t", _pane(name), "remain-on-exit", "on" if on else "off")

    # -- options --------------------------------------------------------------

    def set_user_options(self, name: str, options: Mapping[str, str]) -> None:
        """Set user options (``@key``) of the session named exactly ``name``, all in one tmux call."""
        args = _option_args(name, options)
        if args:
            self.run(*args[:-1])  # without the trailing separator

    def user_options(self, name: str) -> dict[str, str]:
        """The user options (``@key`` → value) set on the session named exactly ``name`` ({} for no such session)."""
        return _user_options(self.run("show-options", "-q", "-t", _pane(name)))

    def global_option(self, key: str) -> str:
        """The value of a global user option (``@key``), '' when unset."""
        if not _USER_OPTION.match(key):
            raise TmuxError(f"not a user option name: {key!r}")
        return self.run("show-options", "-gqv", key).strip()

    def set_global_option(self, key: str, value: str) -> None:
        """Set a global user option (``@key``) of this server."""
        if not _USER_OPTION.match(key):
            raise TmuxError(f"not a user option name: {key!r}")
        self.run("set-option", "-g", key, value)

    # -- panes ----------------------------------------------------------------

    def capture(self, name: str, *, history: int = 0) -> str:
        """Visible pane text (plus ``history`` lines of scrollback)."""
        args: list[object] = ["capture-pane", "-p", "-t", _pane(name)]
        if history:
            args += ["-S", str(-history)]
        return self.run(*args)

    def pane_info(self, name: str) -> PaneInfo:
        """Dead flag, exit status, current command, pid and size of the session's pane."""
        return _parse_info(self.run("display-message", "-p", "-t", _pane(name), _INFO_FORMAT).rstrip("\n"))

    def snapshot(self, name: str) -> Snapshot:
        """Screen text and pane info in one tmux call (the launch polling loop's only call)."""
        out = self.run("capture-pane", "-p", "-t", _pane(name), SEP,
                       "display-message", "-p", "-t", _pane(name), _INFO_FORMAT)
        text, _, info = out.rstrip("\n").rpartition("\n")
        return Snapshot(text=text, info=_parse_info(info))

    def snapshot_with_options(self, name: str) -> tuple[Snapshot, dict[str, str]]:
        """:meth:`snapshot` and :meth:`user_options` in one tmux call (the monitor's look at a working session)."""
        mark = f"aq-mark-{uuid.uuid4().hex}"  # random: no option value or screen line can forge it
        out = self.run("show-options", "-q", "-t", _pane(name), SEP, "display-message", "-p", mark, SEP,
                       "capture-pane", "-p", "-t", _pane(name), SEP,
                       "display-message", "-p", "-t", _pane(name), _INFO_FORMAT)
        options, found, rest = out.partition(mark + "\n")
        if not found:
            raise TmuxError(f"tmux answered without the marker for {name!r}")
        text, _, info = rest.rstrip("\n").rpartition("\n")
        return Snapshot(text=text, info=_parse_info(info)), _user_options(options)

    def send_keys(self, name: str, *keys: str) -> None:
        """Send named keys (Enter, Escape, C-c, C-u…); never literal text."""
        for key in keys:
            if not _KEY.match(key):
                raise TmuxError(f"not a key name: {key!r} (use send_literal or paste for text)")
        self.run("send-keys", "-t", _pane(name), *keys)

    def send_literal(self, name: str, text: str) -> None:
        """Type ``text`` literally (``send-keys -l``); key names inside it stay text."""
        if text:
            self.run("send-keys", "-l", "-t", _pane(name), "--", text)

    def paste(self, name: str, text: str) -> None:
        """Paste ``text`` through a private buffer with bracketed paste (``paste-buffer -p -d``)."""
        buffer = f"aq-{uuid.uuid4().hex}"
        try:
            self.run("load-buffer", "-b", buffer, "-", SEP,
                     "paste-buffer", "-p", "-d", "-b", buffer, "-t", _pane(name),
                     input=text.encode("utf-8"))
        except TmuxError:
            # The paste may have failed after the load: never leave the text in a buffer.
            try:
                self.run("delete-buffer", "-b", buffer)
            except TmuxError:
                pass
            raise

    def respawn(self, name: str, argv: Sequence[str], *, cwd: str | Path,
                env: Mapping[str, str] | None = None, remain_on_exit: bool | None = None,
                pipe_to: Path | None = None, options: Mapping[str, str] | None = None) -> None:
        """Replace the pane's process with ``argv`` started in ``cwd`` (no shell involved).

        ``options``: user options (``@key``) of the session to set first, in the same tmux call.
        ``remain_on_exit``: set that option first, in the same tmux call (a launch's one call to start the agent).
        ``pipe_to``: then copy the new process's output into that file (a FIFO: ``pipe-pane -O``), from its
        first byte on.
        """
        if not argv:
            raise TmuxError("respawn needs a command")
        args = _option_args(name, options or {})
        if remain_on_exit is not None:
            args += ["set-option", "-w", "-t", _pane(name), "remain-on-exit", "on" if remain_on_exit else "off", SEP]
        args += ["respawn-pane", "-k", "-t", _pane(name), "-c", _no_format(str(cwd))]
        args += _env_args(env)
        args += _command_args(argv)
        if pipe_to is not None:
            # A shell command (tmux runs it with sh -c) whose formats tmux expands: quoted, then '#' escaped.
            args += [SEP, "pipe-pane", "-O", "-t", _pane(name), _no_format("exec cat > " + shlex.quote(str(pipe_to)))]
        self.run(*args)
