"""Hook entry point run by Claude Code: ``python -m dispatcher.hook <Event>``.

Reads the JSON payload on stdin plus AQ_SESSION, AQ_TASK and AQ_REDIS_URL,
and XADDs one capped entry to the session's hook stream. It must never fail
or block the agent: every error is logged to stderr and the exit code is 0.
Nothing is printed on stdout (Claude adds a UserPromptSubmit hook's stdout
to the prompt's context).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import IO

from dispatcher.core import keys
from dispatcher.core.defaults import HOOK_MAX_PAYLOAD_BYTES as MAX_PAYLOAD_BYTES
from dispatcher.core.defaults import HOOK_SOCKET_TIMEOUT_S as SOCKET_TIMEOUT_S
from dispatcher.core.hook_payload import parse_payload

logger = logging.getLogger("dispatcher.hook")



def _resp(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode("utf-8")
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _reply(stream: IO[bytes]) -> str:
    line = stream.readline().rstrip(b"\r\n")
    if not line:
        raise ConnectionError("Redis closed the connection")
    kind, rest = line[:1], line[1:].decode("utf-8", "replace")
    if kind == b"-":
        raise ConnectionError(f"Redis error: {rest}")
    if kind == b"$":
        size = int(rest)
        return "" if size < 0 else stream.read(size + 2)[:-2].decode("utf-8", "replace")
    return rest


def _connect(url: str) -> socket.socket:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(SOCKET_TIMEOUT_S)
        sock.connect(parsed.path)
        return sock
    sock = socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=SOCKET_TIMEOUT_S)
    if parsed.scheme == "rediss":
        import ssl  # only for rediss: it costs milliseconds, and this runs in the agent's critical path

        sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parsed.hostname)
    return sock


def _commands(url: str) -> list[tuple[str, ...]]:
    """AUTH and SELECT implied by a redis://, rediss:// or unix:// URL."""
    parsed = urllib.parse.urlsplit(url)
    cmds: list[tuple[str, ...]] = []
    if parsed.password:
        user = urllib.parse.unquote(parsed.username or "")
        pw = urllib.parse.unquote(parsed.password)
        cmds.append(("AUTH", user, pw) if user else ("AUTH", pw))
    query_db = urllib.parse.parse_qs(parsed.query).get("db", [""])[0]
    db = query_db if parsed.scheme == "unix" else (query_db or parsed.path.strip("/"))
    if db and db != "0":
        cmds.append(("SELECT", db))
    return cmds


def report(event: str, raw: str, env: Mapping[str, str]) -> str | None:
    """XADD one hook report; returns the stream id, or None when not configured for it."""
    session = env.get("AQ_SESSION", "")
    url = env.get("AQ_REDIS_URL", "")
    if not session or not url:
        logger.warning("dispatcher hook %s: AQ_SESSION/AQ_REDIS_URL not set, nothing reported", event)
        return None
    body = json.dumps(parse_payload(raw), ensure_ascii=False)
    # Plain RESP over a socket, not redis-py: importing redis-py costs more than the whole report,
    # and UserPromptSubmit hooks sit in the agent's critical path.
    xadd = ("XADD", keys.session_hooks(session), "MAXLEN", "~", str(keys.HOOKS_MAXLEN), "*",
            "event", event, "session", session, "task", env.get("AQ_TASK", ""),
            "time", repr(time.time()), "payload", body)
    cmds = _commands(url) + [xadd]
    with _connect(url) as sock, sock.makefile("rb") as reader:
        sock.sendall(b"".join(_resp(*c) for c in cmds))
        replies = [_reply(reader) for _ in cmds]
    return replies[-1]


def main(argv: Sequence[str] | None = None, stdin: IO[str] | None = None,
         env: Mapping[str, str] | None = None) -> int:
    """Entry point; always returns 0 so the agent is never blocked by reporting."""
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(name)s: %(message)s")
    args = list(sys.argv[1:] if argv is None else argv)
    event = args[0] if args else "Unknown"
    try:
        raw = (stdin or sys.stdin).read(4 * MAX_PAYLOAD_BYTES)
    except (OSError, ValueError) as exc:
        logger.warning("dispatcher hook %s: cannot read stdin: %s", event, exc)
        raw = ""
    try:
        report(event, raw, os.environ if env is None else env)
    except Exception as exc:  # never fail the agent, whatever went wrong
        logger.warning("dispatcher hook %s: not reported: %s", event, exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
