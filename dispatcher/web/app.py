"""The fleet page's HTTP side (Starlette): pages, a live stream (server-sent events), a few actions.

Every request needs HTTP basic auth. Every parameter is hostile: task refs go
through the task-file validators, session names must be exactly a pool name,
numbers are bounded. Actions are POSTs that must carry the page's custom
header (a cross-site form or ``fetch`` cannot send one without CORS, which
this server never grants) and, when the browser says where it comes from, an
``Origin``/``Sec-Fetch-Site`` of this very page.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import redis
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from dispatcher.agent.tmux import Tmux
from dispatcher.cli.client import send_task
from dispatcher.core import defaults as d
from dispatcher.core.config import Settings
from dispatcher.core.errors import ClaimError, DispatcherError
from dispatcher.flows.retry import retry_task
from dispatcher.store import credentials, events, pause
from dispatcher.store.redis_conn import client
from dispatcher.web import fleet

logger = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
#: The header the page's own script sets on every action.
CSRF_HEADER = "x-aq-csrf"
_EVENT_ID = re.compile(r"\d{1,20}-\d{1,20}\Z")
_SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                                 b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BasicAuth:
    """ASGI middleware: 401 unless the request carries the credentials; security headers on every response."""

    def __init__(self, app: ASGIApp, user: str, password: str) -> None:
        self.app, self.user, self.password = app, user, password

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + _SECURITY_HEADERS
            await send(message)

        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        if not credentials.check_header(header, self.user, self.password):
            deny = Response("authentication required\n", status_code=401, media_type="text/plain",
                            headers={"WWW-Authenticate": 'Basic realm="agent-queue fleet", charset="UTF-8"'})
            await deny(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


def _same_origin(request: Request) -> bool:
    """True when an action comes from this page's script (custom header; Origin, if sent, is this host)."""
    if request.headers.get(CSRF_HEADER) != "1":
        return False
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "") != ""


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _json_body(request: Request) -> dict[str, Any] | JSONResponse:
    """The action's JSON object, or the error response to send."""
    if not _same_origin(request):
        return _error(403, "cross-site request refused (actions need the page's X-AQ-CSRF header)")
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return _error(415, "send application/json")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > d.WEB_MAX_BODY:
            return _error(413, "request body too large")
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return _error(400, "body is not JSON")
    return data if isinstance(data, dict) else _error(400, "body must be a JSON object")


def _sse(kind: str, data: str, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return head + f"event: {kind}\n" + "".join(f"data: {line}\n" for line in data.splitlines()) + "\n"


def create_app(settings: Settings, *, r: redis.Redis | None = None, tmux: Tmux | None = None,
               auth: tuple[str, str] | None = None, refresh: float = d.WEB_REFRESH_S) -> ASGIApp:
    """The fleet page application for ``settings`` (auth: (user, password); default from credentials)."""
    user, password = auth or credentials.load_or_create(settings.state_dir, settings.flower.basic_auth)
    r = r if r is not None else client(settings=settings, timeout=2.0)
    tmux = tmux or Tmux(settings.tmux.socket_name)
    snaps = fleet.Snapshots(settings, r, tmux, max_age=refresh)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def session_page(request: Request) -> Response:
        if not settings.pool.contains(request.path_params["name"]):
            return _error(404, "no such pool session")
        return FileResponse(STATIC / "session.html")

    async def api_snapshot(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(snaps.get))

    async def api_screen(request: Request) -> Response:
        name = request.path_params["name"]
        if not settings.pool.contains(name):
            return _error(404, "no such pool session")
        try:
            history = min(max(int(request.query_params.get("history", "0")), 0), 5000)
        except ValueError:
            return _error(400, "history must be a number of lines")
        try:
            text = await run_in_threadpool(tmux.capture, name, history=history)
        except DispatcherError as exc:
            return _error(404, f"cannot read {name}: {exc}")
        return JSONResponse({"session": name, "text": text.rstrip(),
                             "attach": f"tmux -L {settings.tmux.socket_name} attach -t ={name}"})

    async def api_stream(request: Request) -> Response:
        last = request.headers.get("last-event-id")
        last = last if last and _EVENT_ID.match(last) else None

        async def gen() -> AsyncIterator[str]:
            cursor = last
            yield f"retry: {int(refresh * 2000)}\n\n"
            while True:
                snap = await run_in_threadpool(snaps.get)
                yield _sse("snapshot", json.dumps(snap))
                for ev in await run_in_threadpool(lambda: fleet.recent_events(snaps.redis(), cursor)):  # noqa: B023 (awaited here)
                    cursor = ev["id"]
                    yield _sse("event", json.dumps(ev), ev["id"])
                if cursor is None:
                    cursor = "0-0"  # no event yet: the next one is new, whatever its id
                await anyio.sleep(refresh)

        return StreamingResponse(gen(), media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no"})

    async def _redis_or_503() -> redis.Redis | JSONResponse:
        live = await run_in_threadpool(snaps.redis)
        return live if live is not None else _error(503, "Redis unreachable; is 'dispatcher up' running?")

    async def _body_and_redis(request: Request) -> tuple[dict[str, Any], redis.Redis] | JSONResponse:
        """A pool action's JSON body and a live Redis, or the error response that refuses the action."""
        body = await _json_body(request)
        if isinstance(body, JSONResponse):
            return body
        live = await _redis_or_503()
        return live if isinstance(live, JSONResponse) else (body, live)

    async def act_retry(request: Request) -> Response:
        body = await _json_body(request)
        if isinstance(body, JSONResponse):
            return body
        ref = body.get("task")
        if not isinstance(ref, str) or len(ref) > 300 or ref != ref.strip():
            return _error(400, "give the task as {\"task\": \"project:task_id\"}")
        live = await run_in_threadpool(snaps.redis)
        try:
            path = await run_in_threadpool(retry_task, settings, live, ref)
        except (DispatcherError, ClaimError) as exc:
            return _error(400, str(exc))
        if live is not None:
            await run_in_threadpool(send_task, settings, "full_scan")
        return JSONResponse({"requeued": path.name})

    async def act_pause(request: Request) -> Response:
        got = await _body_and_redis(request)
        if isinstance(got, JSONResponse):
            return got
        body, live = got
        until, reason = body.get("until") or "", body.get("reason") or ""
        if not isinstance(until, str) or not isinstance(reason, str) or len(until) > 64 or len(reason) > 500:
            return _error(400, "until and reason must be short strings")
        now = time.time()
        try:
            at = pause.parse_until(until, now) if until.strip() else math.inf
        except ValueError as exc:
            return _error(400, str(exc))
        held = pause.pause(live, at, reason.strip(), pause.OPERATOR, account=settings.host.account)
        events.emit(live, "paused", detail=held.describe() + " (fleet page)")
        return JSONResponse({"paused": held.describe()})

    async def act_resume(request: Request) -> Response:
        got = await _body_and_redis(request)
        if isinstance(got, JSONResponse):
            return got
        _, live = got
        lifted, projects = pause.resume(live, settings.host.account)
        was = lifted.describe() if lifted is not None and lifted.until > time.time() else "not paused"
        events.emit(live, "unpaused", detail=f"by operator on the fleet page ({was})")
        await run_in_threadpool(send_task, settings, "full_scan")
        return JSONResponse({"resumed": was, "holds_lifted": projects})

    app = Starlette(routes=[
        Route("/", index),
        Route("/session/{name}", session_page),
        Route("/api/snapshot", api_snapshot),
        Route("/api/screen/{name}", api_screen),
        Route("/api/stream", api_stream),
        Route("/api/retry", act_retry, methods=["POST"]),
        Route("/api/pause", act_pause, methods=["POST"]),
        Route("/api/resume", act_resume, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ])
    return BasicAuth(app, user, password)
