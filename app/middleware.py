"""What happens around every request, as plain ASGI middleware (outermost first in ``create_app``):

- :class:`AccessLog`: a request id, one access log line and the request metrics per request;
- :class:`APIKeyAuth`: 401 without a valid API key, when keys are configured;
- :class:`Admission`: back-pressure, 503 ``overloaded`` once a worker holds ``SER_MAX_QUEUE`` requests.

Plain ASGI rather than Starlette's ``BaseHTTPMiddleware``: they answer before the body is read (an
unauthorised or refused upload is not received first) and add no task per request.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics
from app.errors import send_error

access_log = logging.getLogger("app.access")

REQUEST_ID_HEADER = "x-request-id"
# A client's request id is kept when it is short and plain (so it cannot forge log lines); otherwise a new one.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
# Seconds a refused client should wait: the queue of a worker drains in well under that at capacity.
RETRY_AFTER_S = 1


def route_of(scope: Scope) -> str:
    """The route template that answered (``/predict``), not the raw path, so that metrics' label values stay
    few; for a request refused before routing (401, 503 overloaded), the route whose template is its path;
    ``unmatched`` for paths no route knows (404)."""
    route = scope.get("route")
    if route is not None:
        return getattr(route, "path", None) or "unmatched"
    if scope.get("app") is not None and scope["path"] in _static_paths(scope["app"]):
        return scope["path"]
    return "unmatched"


def _static_paths(app) -> set[str]:
    """The paths of the app's routes without path parameters (all of this service's), including those of
    included routers (FastAPI keeps those behind a wrapper holding ``original_router``)."""
    paths = getattr(app.state, "static_paths", None)
    if paths is None:
        paths, stack = set(), list(app.router.routes)
        while stack:
            route = stack.pop()
            router = getattr(route, "original_router", None)
            if router is not None:
                stack.extend(router.routes)
            elif isinstance(getattr(route, "path", None), str) and "{" not in route.path:
                paths.add(route.path)
        app.state.static_paths = paths
    return paths


class AccessLog:
    """Times each request, echoes or creates its ``X-Request-ID``, counts it in the metrics and logs one line.

    Routes add what only they know to ``request.state``: ``audio_seconds`` and ``batch`` (the inputs in the
    model call that answered). The error code is read from the JSON body of any error answer, so every
    source of errors (routes, validation, the middleware below) is counted alike. No header or body content
    but that code is logged: never audio, never keys.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        given = dict(scope.get("headers") or []).get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1")
        request_id = given if _SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500  # unless an answer starts: an exception escapes to Starlette's error middleware
        error_body = bytearray()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            elif message["type"] == "http.response.body" and status >= 400 and len(error_body) < 4096:
                error_body.extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._record(scope, state, status, bytes(error_body), time.perf_counter() - start)

    @staticmethod
    def _record(scope: Scope, state: dict, status: int, error_body: bytes, seconds: float) -> None:
        route = route_of(scope)
        code = None
        if status >= 400:
            try:
                code = json.loads(error_body).get("code")
            except (ValueError, AttributeError):
                pass
            code = code or "error"
            metrics.ERRORS.labels(route, str(status), code).inc()
        metrics.REQUESTS.labels(route, scope["method"], str(status)).inc()
        metrics.LATENCY.labels(route).observe(seconds)
        audio_seconds = state.get("audio_seconds")
        if audio_seconds:
            metrics.AUDIO_SECONDS.inc(audio_seconds)
        fields = {"request_id": state["request_id"], "method": scope["method"], "route": route, "status": status,
                  "code": code, "audio_seconds": None if audio_seconds is None else round(audio_seconds, 3),
                  "latency_ms": round(seconds * 1000, 1), "batch": state.get("batch")}
        access_log.info("access", extra={"fields": fields})


def path_matcher(open_paths: list[str]):
    """``is_open(path)`` for SER_AUTH_OPEN_PATHS: exact paths, or prefixes where an entry ends with ``*``."""
    exact = {p for p in open_paths if not p.endswith("*")}
    prefixes = tuple(p[:-1] for p in open_paths if p.endswith("*"))
    return lambda path: path in exact or path.startswith(prefixes)


class APIKeyAuth:
    """Every request but those to ``open_paths`` needs one of ``keys``, as ``Authorization: Bearer <key>`` or
    ``X-API-Key: <key>``; otherwise 401 ``unauthorized`` with ``WWW-Authenticate: Bearer``.

    The key presented is compared with every configured key in constant time (``hmac.compare_digest``, no
    early exit), so the answer's timing says nothing about which key, or how much of one, was close.
    """

    def __init__(self, app: ASGIApp, keys: list[str], open_paths: list[str]):
        self.app = app
        self.keys = [key.encode() for key in keys]
        self.is_open = path_matcher(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        presented = self.presented(dict(scope.get("headers") or []))
        if presented is not None and self.valid(presented):
            await self.app(scope, receive, send)
            return
        detail = ("an API key is required: send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
                  if presented is None else "the API key sent is not valid")
        await send_error(send, 401, "unauthorized", detail, [(b"www-authenticate", b'Bearer realm="api"')])

    @staticmethod
    def presented(headers: dict[bytes, bytes]) -> bytes | None:
        authorization = headers.get(b"authorization", b"")
        scheme, _, credentials = authorization.partition(b" ")
        if scheme.lower() == b"bearer" and credentials.strip():
            return credentials.strip()
        key = headers.get(b"x-api-key", b"").strip()
        return key or None

    def valid(self, presented: bytes) -> bool:
        match = False
        for key in self.keys:  # all of them, whatever matched first
            match |= hmac.compare_digest(key, presented)
        return match


class Admission:
    """Back-pressure: at most ``max_pending`` requests to ``paths`` in this worker at once, from their first
    byte to their answer; one more is answered at once with 503 ``overloaded`` and ``Retry-After``, before
    its body is read, instead of waiting in an unbounded queue until every client times out."""

    def __init__(self, app: ASGIApp, max_pending: int, paths: set[str]):
        self.app = app
        self.max_pending = max_pending
        self.paths = paths
        self.pending = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        if self.pending >= self.max_pending:
            await send_error(send, 503, "overloaded",
                             f"the service is at capacity ({self.max_pending} requests in progress in this worker, "
                             f"SER_MAX_QUEUE): retry after {RETRY_AFTER_S} s",
                             [(b"retry-after", str(RETRY_AFTER_S).encode())])
            return
        self.pending += 1
        metrics.QUEUE_DEPTH.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            self.pending -= 1
            metrics.QUEUE_DEPTH.dec()
