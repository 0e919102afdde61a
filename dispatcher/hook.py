"""Hook entry point run by Claude Code: ``python -S -I <package>/hook.py <Event>`` (or ``python -m dispatcher.hook``).

Reads the payload on stdin plus AQ_SESSION, AQ_TASK and AQ_REDIS_URL, and XADDs one entry to the
session's hook stream, exactly as the bash client (hook.sh) does: the payload as it came (cut at
PAYLOAD_CAP bytes on a character boundary, NUL bytes dropped); the reader, store/hook_log.py, parses,
validates and cuts it (core/hook_payload.py), treating it as hostile. It must never fail or block the
agent: every error goes to stderr and the exit code is 0. Nothing is printed on stdout (Claude adds a
UserPromptSubmit hook's stdout to the prompt's context).

Standard library only, and only cheap modules: it is run as a script with ``-S -I`` (no site, no
editable-install finder, no user paths), which makes a call ~2× faster (docs/decisions.md, "Hook client").
The constants below are kept equal to the package's by tests/unit/test_hook_script.py.
"""

from __future__ import annotations

import _socket
import io
import os
import sys
import time

TYPE_CHECKING = False  # typing's own flag, without importing typing (mypy reads this form too)
if TYPE_CHECKING:
    from collections.abc import Mapping

KEY_PREFIX = "aq:hooks:"  # keys.session_hooks()
MAXLEN = 1000  # keys.HOOKS_MAXLEN
PAYLOAD_CAP = 262144  # 4 × defaults.HOOK_MAX_PAYLOAD_BYTES, as hook.sh
SOCKET_TIMEOUT_S = 1.0  # defaults.HOOK_SOCKET_TIMEOUT_S


def _warn(message: str) -> None:
    try:
        sys.stderr.write(f"dispatcher.hook: {message}\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass


def _resp(*parts: str | bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else part.encode("utf-8", "surrogateescape")
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Replies:
    """RESP replies read off a raw socket (``_socket`` has no ``makefile``)."""

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("Redis closed the connection")
        self.buf += chunk

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def next(self) -> str:
        line = self._line()
        if not line:
            raise ConnectionError("Redis sent an empty reply")
        kind, rest = line[:1], line[1:].decode("utf-8", "replace")
        if kind == b"-":
            raise ConnectionError(f"Redis error: {rest}")
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return ""
            while len(self.buf) < size + 2:
                self._fill()
            data, self.buf = self.buf[:size], self.buf[size + 2:]
            return data.decode("utf-8", "replace")
        return rest


#: Characters of the URL forms read without urllib (``re`` and ``urllib.parse`` cost ~10 ms to import).
_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def _plain(text: str, more: str = "") -> bool:
    return all(c in _PLAIN or c in more for c in text)


def _fast_target(url: str) -> tuple[str, str, int, str | None, str | None, str] | None:
    """(scheme, host or socket path, port, user, password, db) of the plain URL forms ``dispatcher up`` writes.

    ``unix:///path?db=N`` (the embedded Redis) and ``redis://[user:password@]host[:port][/db]`` with plain
    characters only, read exactly as ``urllib.parse.urlsplit`` reads them (a property test holds the two
    equal); any other form returns None and is left to urllib.
    """
    if url.startswith("unix:///"):
        path, _, query = url[len("unix://"):].partition("?")
        if not _plain(path, "/") or (query and not (query.startswith("db=") and query[3:].isdigit()
                                                    and query[3:].isascii())):
            return None
        return "unix", path, 0, None, None, query[3:]
    if not url.startswith("redis://"):
        return None
    netloc, _, db = url[len("redis://"):].partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    user = password = None
    if at:
        user, colon, password = userinfo.partition(":")
        if not colon or not _plain(user) or not _plain(password):
            return None
    host, colon, port = hostport.partition(":")
    if not host or not _plain(host) or not _plain(db) or (colon and not (port.isdigit() and port.isascii())):
        return None
    if colon and not 0 < int(port) <= 65535:
        return None
    return "redis", host.lower(), int(port) if colon else 6379, user, password, db


def _target(url: str) -> tuple[str, str, int, str | None, str | None, str]:
    """(scheme, host or socket path, port, user, password, db) of a redis://, rediss:// or unix:// URL."""
    return _fast_target(url) or _urllib_target(url)


def _urllib_target(url: str) -> tuple[str, str, int, str | None, str | None, str]:
    from urllib.parse import parse_qs, unquote, urlsplit

    parsed = urlsplit(url)
    user = unquote(parsed.username) if parsed.username is not None else None
    password = unquote(parsed.password) if parsed.password is not None else None
    query_db = parse_qs(parsed.query).get("db", [""])[0]
    if parsed.scheme == "unix":
        return "unix", parsed.path, 0, user, password, query_db
    db = query_db or parsed.path.strip("/")
    return parsed.scheme, parsed.hostname or "127.0.0.1", parsed.port or 6379, user, password, db


def _connect(scheme: str, host: str, port: int) -> _socket.socket:
    # _socket, not socket: the socket module's imports (enum, selectors) cost more than the whole report.
    if scheme == "unix":
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.settimeout(SOCKET_TIMEOUT_S)
        try:
            sock.connect(host)
        except BaseException:
            sock.close()
            raise
        return sock
    if scheme == "rediss":
        import socket  # only for rediss: it costs milliseconds, and this runs in the agent's critical path
        import ssl

        plain = socket.create_connection((host, port), timeout=SOCKET_TIMEOUT_S)
        return ssl.create_default_context().wrap_socket(plain, server_hostname=host)  # type: ignore[return-value]
    error: OSError = OSError(f"no address for {host!r}")
    # An ASCII host name as bytes: a str one makes getaddrinfo import the idna codec (and re), ~10 ms.
    name: str | bytes = host.encode("ascii") if host.isascii() else host
    for family, kind, proto, _, address in _socket.getaddrinfo(name, port, 0, _socket.SOCK_STREAM):
        sock = _socket.socket(family, kind, proto)
        sock.settimeout(SOCKET_TIMEOUT_S)
        try:
            sock.connect(address)
        except OSError as exc:  # as socket.create_connection: try the next address
            sock.close()
            error = exc
            continue
        return sock
    raise error


def _commands(url: str) -> list[tuple[str, ...]]:
    """AUTH and SELECT implied by a redis://, rediss:// or unix:// URL."""
    _, _, _, user, password, db = _target(url)
    cmds: list[tuple[str, ...]] = []
    if password:
        cmds.append(("AUTH", user, password) if user else ("AUTH", password))
    if db and db != "0":
        cmds.append(("SELECT", db))
    return cmds


def _payload(raw: bytes) -> bytes:
    """``raw`` cut at PAYLOAD_CAP bytes on a character boundary, NUL bytes dropped (hook.sh's rules)."""
    raw = raw[:PAYLOAD_CAP]
    if len(raw) == PAYLOAD_CAP:
        # Drop a multi-byte UTF-8 character cut in two (at most 3 continuation bytes back).
        for back in range(1, 4):
            if len(raw) >= back and raw[-back] & 0xC0 == 0xC0:
                width = 2 if raw[-back] < 0xE0 else 3 if raw[-back] < 0xF0 else 4
                if width > back:
                    raw = raw[:-back]
                break
            if len(raw) >= back and raw[-back] & 0xC0 != 0x80:
                break
    return raw.replace(b"\0", b"")


def report(event: str, raw: str | bytes, env: Mapping[str, str]) -> str | None:
    """XADD one hook report; returns the stream id, or None when not configured for it."""
    session = env.get("AQ_SESSION", "")
    url = env.get("AQ_REDIS_URL", "")
    if not session or not url:
        _warn(f"dispatcher hook {event}: AQ_SESSION/AQ_REDIS_URL not set, nothing reported")
        return None
    data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "replace")
    # Plain RESP over a socket, not redis-py: importing redis-py costs more than the whole report,
    # and UserPromptSubmit hooks sit in the agent's critical path.
    xadd = ("XADD", KEY_PREFIX + session, "MAXLEN", "~", str(MAXLEN), "*",
            "event", event, "session", session, "task", env.get("AQ_TASK", ""),
            "time", repr(time.time()), "payload", _payload(data))
    cmds = [*_commands(url), xadd]
    scheme, host, port, _, _, _ = _target(url)
    sock = _connect(scheme, host, port)
    try:
        sock.sendall(b"".join(_resp(*c) for c in cmds))
        replies = _Replies(sock)
        answers = [replies.next() for _ in cmds]
    finally:
        sock.close()
    return answers[-1]


def main(argv: list[str] | None = None, stdin: io.IOBase | None = None,
         env: Mapping[str, str] | None = None) -> int:
    """Entry point; always returns 0 so the agent is never blocked by reporting."""
    args = list(sys.argv[1:] if argv is None else argv)
    event = args[0] if args else "Unknown"
    try:
        source = stdin if stdin is not None else sys.stdin.buffer
        raw = source.read(PAYLOAD_CAP)
    except (OSError, ValueError, AttributeError) as exc:
        _warn(f"dispatcher hook {event}: cannot read stdin: {exc}")
        raw = b""
    try:
        report(event, raw, os.environ if env is None else env)
    except Exception as exc:  # never fail the agent, whatever went wrong
        _warn(f"dispatcher hook {event}: not reported: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
