"""FHIR JSON responses (the format middleware, :mod:`clientregistry.api.formats`, turns them
into XML for a caller that asks for XML), and the headers of a response that carries a
resource: ``ETag`` and ``Last-Modified`` agreeing with its ``meta``, ``Content-Location``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson
from fastapi import Request, Response

from clientregistry.fhir.datatypes import etag
from clientregistry.fhir.http import Preferences, Return, http_date, parse_prefer
from clientregistry.fhir.operation_outcome import information

FHIR_JSON = "application/fhir+json"


def fhir_response(
    resource: dict[str, Any], status: int, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(resource),
        status_code=status,
        media_type=f"{FHIR_JSON}; charset=utf-8",
        headers=dict(headers or {}),
    )


def version_headers(resource: Mapping[str, Any]) -> dict[str, str]:
    """``ETag: W/"<meta.versionId>"`` and ``Last-Modified`` (``meta.lastUpdated`` as an HTTP
    date) of a served resource."""
    meta = resource["meta"]
    return {
        "ETag": etag(meta["versionId"]),
        "Last-Modified": http_date(datetime.fromisoformat(meta["lastUpdated"])),
    }


def preferences(request: Request) -> Preferences:
    """The request's ``Prefer`` header(s)."""
    return parse_prefer(request.headers.getlist("prefer"))


def written_response(
    resource: dict[str, Any],
    status: int,
    headers: Mapping[str, str],
    prefer: Return | None,
    summary: str,
) -> Response:
    """The answer to a create or update as ``Prefer: return=`` asks: the resource (the
    default), nothing (``minimal``) or an OperationOutcome saying ``summary``."""
    if prefer == "minimal":
        return Response(status_code=status, headers=dict(headers))
    if prefer == "OperationOutcome":
        return fhir_response(information(summary), status, headers)
    return fhir_response(resource, status, headers)
