"""A small fake of the Anthropic Messages API for driving the real Claude Code CLI.

Usage::

    with FakeAnthropicAPI() as api:
        api.script(Text("Hello"), BashToolUse("mv a b", then="Moved."), Error429("slow down"))
        env["ANTHROPIC_BASE_URL"] = api.base_url
        ...
        turn = api.wait_for_request(lambda r: r.is_turn and "hi" in r.last_user_text())

Every request is recorded in ``api.requests`` (a list of :class:`Recorded`).
``POST /v1/messages`` answers with a Server-Sent-Events stream (or plain JSON when the
request has ``stream: false``).  Scripted responses are consumed only by *turn*
requests -- the ones that carry tools, i.e. the agent's main loop -- so that the
CLI's side queries (title generation, quota probes, ...) never eat a scripted reply;
side queries and turns with an empty script get a short default text.  Any other
endpoint gets ``200 {}``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "FakeAnthropicAPI",
    "Recorded",
    "Text",
    "BashToolUse",
    "Error429",
    "Overloaded529",
    "Response",
]

DEFAULT_TEXT = "OK."


# --------------------------------------------------------------------------- responses


@dataclass
class Text:
    """A plain assistant text reply.

    ``delay`` seconds are waited before the first byte; if ``gate`` is given the
    reply is held until ``gate.set()`` (or :meth:`FakeAnthropicAPI.release`) --
    that keeps the CLI in its *busy* state for as long as a test needs.
    """

    text: str
    delay: float = 0.0
    gate: threading.Event | None = None


@dataclass
class BashToolUse:
    """An assistant turn calling the ``Bash`` tool with ``command``.

    The CLI runs the command and sends a follow-up request carrying a
    ``tool_result``; that follow-up is answered with ``then`` (plain text).
    """

    command: str
    then: str = "Done."
    description: str = "Run a command"
    tool_name: str = "Bash"
    delay: float = 0.0
    gate: threading.Event | None = None


@dataclass
class Error429:
    """HTTP 429 with an Anthropic-style ``rate_limit_error`` body.

    ``times`` is how many consecutive turn requests get the 429 (the CLI retries
    on its own up to ~10 times; ``retry_after`` is sent as the ``retry-after``
    header, ``should_retry`` as ``x-should-retry`` -- false stops its retries).
    """

    message: str = "Rate limited by the fake API"
    times: int = 1
    retry_after: int = 0
    should_retry: bool = True
    status: int = 429
    error_type: str = "rate_limit_error"


def Overloaded529(message: str = "Overloaded", **kw: Any) -> Error429:  # noqa: N802 - reads like the others
    """HTTP 529 ``overloaded_error`` (same knobs as :class:`Error429`)."""
    return Error429(message, status=529, error_type="overloaded_error", **kw)


Response = Text | BashToolUse | Error429


# --------------------------------------------------------------------------- records


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    time: float = field(default_factory=time.time)

    # --- convenience accessors -----------------------------------------------------
    @property
    def is_messages(self) -> bool:
        return self.method == "POST" and self.path.rstrip("/").endswith("/v1/messages")

    @property
    def is_turn(self) -> bool:
        """A main-loop request of the agent (it offers tools)."""
        return self.is_messages and isinstance(self.body, dict) and bool(self.body.get("tools"))

    @property
    def model(self) -> str | None:
        return self.body.get("model") if isinstance(self.body, dict) else None

    @property
    def messages(self) -> list[dict]:
        return (self.body or {}).get("messages", []) if isinstance(self.body, dict) else []

    @property
    def system_text(self) -> str:
        system = (self.body or {}).get("system") if isinstance(self.body, dict) else None
        return _flatten_text(system)

    @property
    def context_text(self) -> str:
        """The system prompt and the text of every message: the CLI's environment block
        (``Primary working directory: …``) is in ``system`` in 2.1.197 but in a
        ``role: "system"`` message in 2.1.332."""
        return "\n".join([self.system_text, *(_flatten_text(m.get("content")) for m in self.messages)])

    @property
    def tool_names(self) -> list[str]:
        tools = (self.body or {}).get("tools") or [] if isinstance(self.body, dict) else []
        return [t.get("name", "") for t in tools]

    def user_texts(self) -> list[str]:
        """Text blocks of all user messages, in order (tool results excluded)."""
        out: list[str] = []
        for m in self.messages:
            if m.get("role") != "user":
                continue
            content = m.get("content")
            if isinstance(content, str):
                out.append(content)
                continue
            for block in content or []:
                if block.get("type") == "text":
                    out.append(block.get("text", ""))
        return out

    def last_user_text(self) -> str:
        """All text blocks of the last user message joined with newlines."""
        for m in reversed(self.messages):
            if m.get("role") != "user":
                continue
            content = m.get("content")
            if isinstance(content, str):
                return content
            return "\n".join(b.get("text", "") for b in content or [] if b.get("type") == "text")
        return ""

    def tool_results(self) -> list[dict]:
        """``tool_result`` blocks of the last user message."""
        for m in reversed(self.messages):
            if m.get("role") != "user":
                continue
            content = m.get("content")
            if isinstance(content, list):
                return [b for b in content if b.get("type") == "tool_result"]
            return []
        return []


def _flatten_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n".join(_flatten_text(v) for v in value)
    if isinstance(value, dict):
        if "text" in value:
            return str(value["text"])
        if "content" in value:
            return _flatten_text(value["content"])
    return ""


# --------------------------------------------------------------------------- server


class FakeAnthropicAPI:
    """Threaded HTTP server on 127.0.0.1 (random port) faking the Messages API."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.Condition()
        self._script: list[Response] = []
        self._pending_then: dict[str, str] = {}  # tool_use id -> follow-up text
        self._ids = 0
        self.requests: list[Recorded] = []
        self.gate = threading.Event()  # default gate for Text(..., gate=api.gate)
        self._httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeAnthropicAPI:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-api", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        # Let held replies finish so handler threads do not linger.
        self.gate.set()
        with self._lock:
            for r in self._script:
                if getattr(r, "gate", None) is not None:
                    r.gate.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread = None

    def __enter__(self) -> FakeAnthropicAPI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- scripting -------------------------------------------------------------------
    def script(self, *responses: Response) -> None:
        """Queue responses for the next turn requests, in order."""
        with self._lock:
            self._script.extend(responses)

    def clear_script(self) -> None:
        """Drop the scripted responses not used yet (CLI versions retry differently)."""
        with self._lock:
            self._script.clear()

    def release(self) -> None:
        """Open the default gate ``api.gate`` (replies created with ``gate=api.gate``)."""
        self.gate.set()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._script)

    # --- assertions helpers -------------------------------------------------------------
    def turns(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.is_turn]

    def wait_for_request(
        self, pred: Callable[[Recorded], bool], timeout: float = 30.0
    ) -> Recorded:
        """Block until a recorded request satisfies ``pred``; return it."""
        deadline = time.monotonic() + timeout
        with self._lock:
            seen = 0
            while True:
                for r in self.requests[seen:]:
                    if pred(r):
                        return r
                seen = len(self.requests)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"no matching request within {timeout}s; got {len(self.requests)} requests: "
                        + ", ".join(f"{r.method} {r.path}" for r in self.requests[-10:])
                    )
                self._lock.wait(left)

    # --- internals -----------------------------------------------------------------------
    def _record(self, rec: Recorded) -> None:
        with self._lock:
            self.requests.append(rec)
            self._lock.notify_all()

    def _next_id(self, prefix: str) -> str:
        with self._lock:
            self._ids += 1
            return f"{prefix}_fake{self._ids:06d}"

    def _follow_up(self, rec: Recorded) -> Response | None:
        """A tool_result for one of our tool calls -> its scripted follow-up text (call with the lock held)."""
        if rec.is_turn:
            for block in rec.tool_results():
                then = self._pending_then.pop(block.get("tool_use_id", ""), None)
                if then is not None:
                    return Text(then)
        return None

    def _choose(self, rec: Recorded) -> Response:
        """Pick the response for a /v1/messages request."""
        with self._lock:
            follow_up = self._follow_up(rec)
            if follow_up is not None:
                return follow_up
            if not rec.is_turn or not self._script:
                return Text(DEFAULT_TEXT)
            head = self._script[0]
            if isinstance(head, Error429):
                head.times -= 1
                if head.times <= 0:
                    self._script.pop(0)
                return head
            return self._script.pop(0)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # silence
                pass

            def _read_body(self) -> Any:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                if not raw:
                    return None
                try:
                    return json.loads(raw)
                except ValueError:
                    return raw.decode("utf-8", "replace")

            def _json(self, status: int, obj: Any, extra: dict[str, str] | None = None) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("request-id", api._next_id("req"))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                body = self._read_body() if self.command in ("POST", "PUT", "PATCH") else None
                rec = Recorded(self.command, parts.path, parts.query, dict(self.headers.items()), body)
                api._record(rec)
                if rec.is_messages and isinstance(body, dict):
                    self._messages(rec)
                elif parts.path.rstrip("/").endswith("/count_tokens"):
                    self._json(200, {"input_tokens": 10})
                else:
                    self._json(200, {})

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815

            def do_HEAD(self) -> None:  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            # --- /v1/messages ---------------------------------------------------------
            def _messages(self, rec: Recorded) -> None:
                resp = api._choose(rec)
                if isinstance(resp, Error429):
                    self._json(
                        resp.status,
                        {"type": "error", "error": {"type": resp.error_type, "message": resp.message}},
                        {"retry-after": str(resp.retry_after),
                         "x-should-retry": "true" if resp.should_retry else "false"},
                    )
                    return
                if resp.gate is not None:
                    resp.gate.wait(timeout=120)
                if resp.delay:
                    time.sleep(resp.delay)  # simulated slowness of the model, not synchronisation
                model = rec.model or "claude-sonnet-4-5"
                if isinstance(resp, BashToolUse):
                    tool_id = api._next_id("toolu")
                    with api._lock:
                        api._pending_then[tool_id] = resp.then
                    blocks = [
                        {
                            "type": "tool_use",
                            "id": tool_id,
                            "name": resp.tool_name,
                            "input": {"command": resp.command, "description": resp.description},
                        }
                    ]
                    stop_reason = "tool_use"
                else:
                    blocks = [{"type": "text", "text": resp.text}]
                    stop_reason = "end_turn"
                if rec.body.get("stream"):
                    self._stream(model, blocks, stop_reason)
                else:
                    self._json(200, self._message_obj(model, blocks, stop_reason))

            def _message_obj(self, model: str, blocks: list[dict], stop_reason: str | None) -> dict:
                return {
                    "id": api._next_id("msg"),
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": blocks,
                    "stop_reason": stop_reason,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 10, "output_tokens": 5},
                }

            def _stream(self, model: str, blocks: list[dict], stop_reason: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.send_header("request-id", api._next_id("req"))
                self.end_headers()
                self.close_connection = True

                def ev(name: str, data: dict) -> None:
                    self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
                    self.wfile.flush()

                start = self._message_obj(model, [], None)
                start["usage"] = {"input_tokens": 10, "output_tokens": 1}
                ev("message_start", {"type": "message_start", "message": start})
                for i, b in enumerate(blocks):
                    if b["type"] == "text":
                        ev("content_block_start", {"type": "content_block_start", "index": i,
                                                   "content_block": {"type": "text", "text": ""}})
                        ev("content_block_delta", {"type": "content_block_delta", "index": i,
                                                   "delta": {"type": "text_delta", "text": b["text"]}})
                    else:
                        ev("content_block_start", {"type": "content_block_start", "index": i,
                                                   "content_block": {**b, "input": {}}})
                        ev("content_block_delta", {"type": "content_block_delta", "index": i,
                                                   "delta": {"type": "input_json_delta",
                                                             "partial_json": json.dumps(b["input"])}})
                    ev("content_block_stop", {"type": "content_block_stop", "index": i})
                ev("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                     "usage": {"output_tokens": 5}})
                ev("message_stop", {"type": "message_stop"})

        return Handler

