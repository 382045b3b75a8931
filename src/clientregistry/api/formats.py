"""Content negotiation on the FHIR routes: JSON or XML, in and out, errors included.

An ASGI middleware (:class:`FhirFormats`, for paths under ``/fhir``) so that every route,
error handler and refusal answers in the format the caller asked for, while the routes
themselves speak only JSON:

* the response format: ``_format`` (``json``, ``xml`` or a media type) wins over ``Accept``
  (media ranges with ``q`` values; a ``fhirVersion`` parameter must be 4.0); without either
  (or with only wildcards) the format of the request body, else JSON. Anything this server
  cannot write is 406 (an OperationOutcome in JSON: the caller named no format we write);
* a request body in ``application/fhir+xml`` (or ``application/xml``, ``text/xml``) is read
  as FHIR XML (:func:`clientregistry.fhir.xml.xml_to_json`) and handed on as FHIR JSON;
* a JSON response to a caller that asked for XML is rewritten as FHIR XML
  (:func:`clientregistry.fhir.xml.json_to_xml`), ``Content-Type: application/fhir+xml``.

JSON callers pay for reading two headers and the query string.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final, Literal
from urllib.parse import parse_qsl

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request

from clientregistry.api.audit import audit_failure
from clientregistry.fhir.errors import (
    FhirError,
    internal_error,
    not_acceptable,
    payload_too_large,
)
from clientregistry.fhir.operation_outcome import from_error
from clientregistry.fhir.search_params import FORMATS, parse_format
from clientregistry.fhir.xml import json_to_xml, xml_to_json

log = logging.getLogger(__name__)

Format = Literal["json", "xml"]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

FHIR_JSON: Final = "application/fhir+json"
FHIR_XML: Final = "application/fhir+xml"
JSON_MEDIA: Final = frozenset({FHIR_JSON, "application/json", "application/json+fhir"})
XML_MEDIA: Final = frozenset({FHIR_XML, "application/xml", "text/xml", "application/xml+fhir"})
_WILDCARDS: Final = frozenset({"*/*", "application/*", "text/*"})
_FHIR_VERSIONS: Final = frozenset({"4.0", "4.0.1"})


def _media(value: str) -> tuple[str, dict[str, str]]:
    """``type/subtype`` (lowercase) and parameters of one media type or range."""
    kind, *raw = value.split(";")
    params = {}
    for item in raw:
        name, _, val = item.partition("=")
        params[name.strip().lower()] = val.strip().strip('"')
    return kind.strip().lower(), params


def body_format(content_type: str | None) -> Format | None:
    """The format of a request body by its ``Content-Type`` (None: neither)."""
    if not content_type:
        return None
    kind, _ = _media(content_type)
    return "xml" if kind in XML_MEDIA else "json" if kind in JSON_MEDIA else None


def accepted_format(accept: str | None, fallback: Format) -> Format:
    """The format an ``Accept`` header asks for (``fallback`` for none or wildcards only);
    406 when it accepts nothing this server writes."""
    if accept is None or not accept.strip():
        return fallback
    ranked: list[tuple[float, int, Format | None]] = []
    for position, item in enumerate(accept.split(",")):
        kind, params = _media(item)
        if not kind:
            continue
        try:
            quality = float(params.get("q", "1"))
        except ValueError:
            quality = 0.0
        version = params.get("fhirversion")
        if quality <= 0 or (version is not None and version not in _FHIR_VERSIONS):
            continue
        chosen: Format | None
        if kind in JSON_MEDIA:
            chosen = "json"
        elif kind in XML_MEDIA:
            chosen = "xml"
        elif kind in _WILDCARDS:
            chosen = None  # anything: the fallback
        else:
            continue
        ranked.append((-quality, position, chosen))
    if not ranked:
        raise not_acceptable(accept, sorted(FORMATS))
    ranked.sort(key=lambda r: (r[0], r[1]))
    best = ranked[0][2]
    return fallback if best is None else best


def negotiate(scope: Scope) -> tuple[Format, Format | None]:
    """(response format, request body format) of a request; 406 for an unwritable one."""
    headers = Headers(scope=scope)
    given = body_format(headers.get("content-type"))
    query = scope.get("query_string", b"")
    if b"_format" in query:
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
        formats = [value for name, value in pairs if name == "_format"]
        if formats:
            return parse_format(formats[0]), given
    return accepted_format(headers.get("accept"), given or "json"), given


class FhirFormats:
    """The middleware (see the module docstring); ``max_body_bytes`` bounds an XML body."""

    def __init__(self, app: ASGIApp, max_body_bytes: Callable[[Scope], int]) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/fhir"):
            await self.app(scope, receive, send)
            return
        try:
            wanted, given = negotiate(scope)
        except FhirError as error:
            await self._refuse(scope, send, error, "json")
            return
        if given == "xml":
            try:
                receive = await self._json_body(scope, receive)
            except FhirError as error:
                await self._refuse(scope, send, error, wanted)
                return
        if wanted == "json":
            await self.app(scope, receive, send)
        else:
            await self.app(scope, receive, _XmlResponses(send))

    async def _json_body(self, scope: Scope, receive: Receive) -> Receive:
        """Read the XML body (bounded) and hand the route FHIR JSON instead."""
        limit = self.max_body_bytes(scope)
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise payload_too_large(size, limit)
            chunks.append(chunk)
            more = message.get("more_body", False)
        resource = await run_in_threadpool(xml_to_json, b"".join(chunks), max_bytes=limit)
        body = orjson.dumps(resource)
        headers = MutableHeaders(scope=scope)
        headers["content-type"] = FHIR_JSON
        headers["content-length"] = str(len(body))
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()  # the disconnect, when it comes
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay

    async def _refuse(self, scope: Scope, send: Send, error: FhirError, wanted: Format) -> None:
        """Answer ``error`` here (it happened before any route), audited like the others."""
        context = getattr(scope.get("app"), "state", None)
        registry = getattr(context, "context", None)
        if registry is not None:
            await run_in_threadpool(
                audit_failure, registry, Request(scope), error.status, error.diagnostics
            )
        outcome = from_error(error)
        if wanted == "xml":
            body, media = json_to_xml(outcome), FHIR_XML
        else:
            body, media = orjson.dumps(outcome), FHIR_JSON
        await send(
            {
                "type": "http.response.start",
                "status": error.status,
                "headers": [
                    (b"content-type", f"{media}; charset=utf-8".encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _XmlResponses:
    """Wraps ``send``: a FHIR JSON response goes out as FHIR XML."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.start: Message | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = Headers(raw=message.get("headers", []))
            if headers.get("content-type", "").startswith(FHIR_JSON):
                self.start = message
                return
        elif message["type"] == "http.response.body" and self.start is not None:
            self.chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            await self._send_xml(b"".join(self.chunks))
            return
        await self.send(message)

    async def _send_xml(self, body: bytes) -> None:
        assert self.start is not None
        start = self.start
        if body:
            try:
                body = await run_in_threadpool(json_to_xml, orjson.loads(body))
            except Exception:
                log.exception("could not write a response as XML")
                failure = from_error(internal_error("The answer could not be written as XML"))
                body = await run_in_threadpool(json_to_xml, failure)
                start = {**start, "status": 500}
        headers = MutableHeaders(raw=list(start.get("headers", [])))
        headers["content-type"] = f"{FHIR_XML}; charset=utf-8"
        headers["content-length"] = str(len(body))
        await self.send({**start, "headers": headers.raw})
        await self.send({"type": "http.response.body", "body": body})


__all__ = ["FhirFormats", "accepted_format", "body_format", "negotiate"]
