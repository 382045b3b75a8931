"""Request bodies of the people's API (``/auth``, ``/admin``): the caller first, then a body
of bounded size without NUL characters.

FastAPI reads and parses a route's JSON body before it runs the route's dependencies, so
without this middleware anyone could make the server read and hold a body of any size before
being told 401. For every request under ``/auth`` or ``/admin`` that carries a body
(``POST``, ``PUT``, ``PATCH``, ``DELETE``), :class:`BodyGuard`:

1. **authenticates first**: unless the route signs people in (``POST /auth/token``), a request
   without a valid bearer token reaches its route with an empty body, and the route's
   dependency answers 401 (audited) — the body is never read, and the connection is closed
   after the answer (``Connection: close``) so that the rest of it is not read either;
2. **bounds the body**: more than ``limit`` bytes (a sign-in: 16 KiB), declared by
   ``Content-Length`` or received, is 413 (an upload to ``POST /admin/imports`` goes to its
   route, which streams it to a file under a limit of its own);
3. **refuses NUL characters**: a JSON or form body with a NUL (U+0000) in any key or string
   is 400 naming the field (``body.reason``): PostgreSQL cannot store one and SQLite can,
   so they are refused on both.

The body read under the limit is handed to the route unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clientregistry.api.admin_errors import is_api_path
from clientregistry.api.auth import MAX_LOGIN_BODY
from clientregistry.api.edge_errors import answer
from clientregistry.fhir.errors import bad_request, payload_too_large
from clientregistry.registry.context import RegistryContext
from clientregistry.security.tokens import user_for_token
from clientregistry.store.db import transaction

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SIGN_IN_PATHS = frozenset({"/auth/token"})
"""Routes that take credentials in their body (no bearer token to check first)."""
STREAMED_PATHS = frozenset({"/admin/imports"})
"""Routes that read their (large) body themselves, under a limit of their own."""
FORM = "application/x-www-form-urlencoded"


def nul_field(value: Any, where: str = "body") -> str | None:
    """Where the first NUL character in a decoded JSON value is (``body.a[0].b``), if any."""
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return path
        elif isinstance(item, dict):
            for key, child in item.items():
                if "\x00" in key:
                    return path
                stack.append((child, f"{path}.{key}"))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
    return None


def _body_nul_field(media: str, body: bytes) -> str | None:
    if media == FORM:
        if b"%00" not in body and b"\x00" not in body:
            return None  # the common case, without decoding anything
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        except (UnicodeDecodeError, ValueError):
            return None  # the route says what is wrong with it
        for name, value in pairs:
            if "\x00" in name:
                return "body"
            if "\x00" in value:
                return f"body.{name[:64]}"
        return None
    if b"\\u0000" not in body and b"\x00" not in body:
        return None
    try:
        return nul_field(orjson.loads(body))
    except orjson.JSONDecodeError:
        return "body" if b"\x00" in body else None


class BodyGuard:
    """See the module docstring. ``limit``: the largest body accepted (bytes)."""

    def __init__(self, app: ASGIApp, *, fastapi: FastAPI, limit: Callable[[], int]) -> None:
        self.app = app
        self.fastapi = fastapi
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in BODY_METHODS
            or not is_api_path(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        headers = {name: value for name, value in scope["headers"]}
        if scope["path"] not in SIGN_IN_PATHS and not await self._authenticated(headers):
            await self.app(scope, _empty_body(), _closing(send))
            return
        if scope["path"] in STREAMED_PATHS:
            await self.app(scope, receive, send)
            return
        limit = MAX_LOGIN_BODY if scope["path"] in SIGN_IN_PATHS else self.limit()
        declared = headers.get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > limit:
            error = payload_too_large(int(declared), limit)
            await answer(self.fastapi, scope, _empty_body(), _closing(send), error)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                error = payload_too_large(size, limit)
                await answer(self.fastapi, scope, _empty_body(), _closing(send), error)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        media = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        field = _body_nul_field(media, body)
        if field is not None:
            error = bad_request(f"{field}: a NUL character (U+0000) is not allowed", [field])
            await answer(self.fastapi, scope, _empty_body(), send, error)
            return
        sent = [False]

        async def replay() -> Message:
            if sent[0]:
                return await receive()  # (a disconnect)
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _authenticated(self, headers: dict[bytes, bytes]) -> bool:
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        context: RegistryContext = self.fastapi.state.context
        return await run_in_threadpool(_token_is_valid, context, token.strip())


def _token_is_valid(context: RegistryContext, token: str) -> bool:
    with transaction(context.sessions, write=False) as session:
        return user_for_token(session, token) is not None


def _empty_body() -> Receive:
    """A ``receive`` giving an empty body, then a disconnect (the real body stays unread)."""
    given = [False]

    async def receive() -> Message:
        if given[0]:
            return {"type": "http.disconnect"}
        given[0] = True
        return {"type": "http.request", "body": b"", "more_body": False}

    return receive


def _closing(send: Send) -> Send:
    """``send``, asking the server to close the connection after this answer (the rest of the
    request's body is left unread)."""

    async def closing(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), (b"connection", b"close")]
        await send(message)

    return closing
