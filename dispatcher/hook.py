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
import sys
import time
from typing import IO, Mapping, Sequence

from . import keys

logger = logging.getLogger("dispatcher.hook")

#: Payloads bigger than this are cut (a pasted task can be large; the tag is at its start).
MAX_PAYLOAD_BYTES = 64 * 1024
SOCKET_TIMEOUT_S = 1.0


def _payload(raw: str) -> dict[str, object]:
    try:
        data = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return {"raw": raw[:4096]}
    if not isinstance(data, dict):
        return {"raw": raw[:4096]}
    prompt = data.get("prompt")
    if isinstance(prompt, str) and len(prompt) > MAX_PAYLOAD_BYTES // 2:
        data["prompt"] = prompt[: MAX_PAYLOAD_BYTES // 2]
        data["prompt_truncated"] = True
    return data


def report(event: str, raw: str, env: Mapping[str, str]) -> str | None:
    """XADD one hook report; returns the stream id, or None when not configured for it."""
    session = env.get("AQ_SESSION", "")
    url = env.get("AQ_REDIS_URL", "")
    if not session or not url:
        logger.warning("dispatcher hook %s: AQ_SESSION/AQ_REDIS_URL not set, nothing reported", event)
        return None
    import redis  # imported late: a hook that is not configured stays fast

    body = json.dumps(_payload(raw), ensure_ascii=False)
    if len(body) > MAX_PAYLOAD_BYTES:
        body = json.dumps({"raw": body[:4096], "truncated": True})
    client = redis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=SOCKET_TIMEOUT_S)
    try:
        entry = client.xadd(
            keys.session_hooks(session),
            {"event": event, "session": session, "task": env.get("AQ_TASK", ""),
             "time": repr(time.time()), "payload": body},
            maxlen=keys.HOOKS_MAXLEN, approximate=True,
        )
    finally:
        client.close()
    return entry.decode() if isinstance(entry, bytes) else str(entry)


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
