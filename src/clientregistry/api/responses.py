"""FHIR JSON responses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import Response

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
