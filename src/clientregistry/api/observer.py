"""Following each request: its id, its metrics and its log line (one ASGI middleware).

* The **request id** (:mod:`clientregistry.request_id`): the caller's ``X-Request-Id`` when it
  looks like an id (a front proxy's, a client's own), else a new one; set for everything the
  request does (its log lines, its audit events) and returned in the response's
  ``X-Request-Id`` header, so that one request can be followed from the client to the log
  and the audit trail.
* **Metrics** (``metrics``: when the settings expose them): the request counted by method,
  route and status, and its duration.
* The **request log** (``log_requests``: ``server.access_log``): one line per request, with
  its id, method, route, status, duration, client system and address; JSON with
  ``server.log_format = "json"``. Routes, never paths: a path or query may hold identifiers
  and names, which have no place in a log.

A pure ASGI middleware (no ``BaseHTTPMiddleware``): it adds a header to the response's first
message and reads the clock twice, nothing more, on the submission hot path. Responses made
by Starlette's outermost error handler (an unexpected exception: 500) go out without the
header; the request's log lines still carry the id.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clientregistry import metrics
from clientregistry.request_id import HEADER, start_request

log = logging.getLogger("clientregistry.request")

_HEADER_KEY = HEADER.lower().encode("latin-1")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_of(scope: Scope) -> str:
    """The path template of the route that served the request (``unmatched`` for none)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class RequestObserver:
    """See the module docstring."""

    def __init__(self, app: ASGIApp, *, count: bool = False, log_requests: bool = False):
        self.app = app
        self.count = count
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = None
        for name, value in scope["headers"]:
            if name == _HEADER_KEY:
                incoming = value.decode("latin-1")
                break
        request_id = start_request(incoming)
        header = (_HEADER_KEY, request_id.encode("latin-1"))
        status = [500]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.count or self.log_requests:
                self._observe(scope, status[0], time.perf_counter() - started, request_id)

    def _observe(self, scope: Scope, status: int, seconds: float, request_id: str) -> None:
        method = scope["method"] if scope["method"] in _METHODS else "other"
        route = route_of(scope)
        if self.count:
            metrics.REQUESTS.labels(method, route, str(status)).inc()
            metrics.LATENCY.labels(method, route).observe(seconds)
        if self.log_requests:
            state: dict[str, Any] = scope.get("state") or {}
            client = scope.get("client")
            fields = {
                "request_id": request_id,
                "method": method,
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
                "agent": state.get("agent"),
                "client": client[0] if client else None,
            }
            log.info(
                "%s %s %d %.1f ms %s",
                method,
                route,
                status,
                seconds * 1000,
                fields["agent"] or "-",
                extra={"fields": fields},
            )
