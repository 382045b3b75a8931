"""What every request must be before a route sees it: headers of bounded size and number,
no NUL character in its path or query, and ``HEAD`` answered as ``GET`` without the body.

* **Headers** (RFC 6585 §5): more than :data:`MAX_HEADERS` header fields, one field (name
  and value) over :data:`MAX_HEADER_BYTES` or all of them over :data:`MAX_HEADERS_BYTES`
  is 431 (``too-costly``).
* **NUL** (``%00``): PostgreSQL cannot hold it and SQLite can; a path or query parameter
  with one is 400 naming the parameter, on both, before anything is looked up (not under
  ``/ui``, whose pages answer bad input with a page of their own).
* **HEAD** (RFC 9110 §9.3.2): every ``GET`` route answers ``HEAD`` with the status and headers
  ``GET`` would give (``Content-Length`` included) and no body.

Errors go through the application's own handlers (:mod:`clientregistry.api.edge_errors`):
OperationOutcomes on ``/fhir``, ``{"detail": …}`` on ``/auth`` and ``/admin``.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clientregistry.api.edge_errors import answer
from clientregistry.fhir.errors import FhirError, bad_request

MAX_HEADERS = 100
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS_BYTES = 64 * 1024


def header_problem(headers: list[tuple[bytes, bytes]]) -> str | None:
    """Why these request headers are refused (None: they are not)."""
    if len(headers) > MAX_HEADERS:
        return f"The request has {len(headers)} header fields; at most {MAX_HEADERS} are accepted"
    total = 0
    for name, value in headers:
        size = len(name) + len(value)
        if size > MAX_HEADER_BYTES:
            shown = name[:64].decode("latin-1")
            return f"The header field {shown!r} is {size} bytes; at most {MAX_HEADER_BYTES}"
        total += size
    if total > MAX_HEADERS_BYTES:
        return f"The request's header fields are {total} bytes; at most {MAX_HEADERS_BYTES}"
    return None


def nul_parameter(scope: Scope) -> str | None:
    """The query parameter (or ``path``) of this request holding a NUL character, if any."""
    if "\x00" in scope["path"]:
        return "path"
    query: bytes = scope.get("query_string", b"")
    if b"%00" not in query and b"\x00" not in query:
        return None
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            return name.replace("\x00", "")[:64] or "query"
    return "query"


class RequestLimits:
    """See the module docstring."""

    def __init__(self, app: ASGIApp, *, fastapi: FastAPI) -> None:
        self.app = app
        self.fastapi = fastapi

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = header_problem(scope["headers"])
        if problem is not None:
            error = FhirError(431, "too-costly", problem)
            await answer(self.fastapi, scope, receive, send, error)
            return
        parameter = None if scope["path"].startswith("/ui") else nul_parameter(scope)
        if parameter is not None:
            where = parameter if parameter in ("path", "query") else f"parameter {parameter!r}"
            error = bad_request(f"The {where} holds a NUL character (%00)", [parameter])
            await answer(self.fastapi, scope, receive, _without_body(send, scope), error)
            return
        if scope["method"] == "HEAD":
            await self.app({**scope, "method": "GET"}, receive, _without_body(send, scope))
            return
        await self.app(scope, receive, send)


def _without_body(send: Send, scope: Scope) -> Send:
    """``send`` for a ``HEAD`` request: the headers go out, the body does not."""
    if scope["method"] != "HEAD":
        return send

    async def headers_only(message: Message) -> None:
        if message["type"] == "http.response.body":
            if message.get("more_body", False):
                return
            message = {"type": "http.response.body", "body": b"", "more_body": False}
        await send(message)

    return headers_only
