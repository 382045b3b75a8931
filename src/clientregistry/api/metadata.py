"""``GET /fhir/metadata``: the CapabilityStatement, listing exactly the routes that exist."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from clientregistry import __version__
from clientregistry.api.responses import fhir_response
from clientregistry.fhir.capability import capability_statement

router = APIRouter(prefix="/fhir")


@router.get("/metadata")
def metadata(request: Request) -> Response:
    base = str(request.base_url).rstrip("/") + "/fhir"
    statement = capability_statement(
        base,
        __version__,
        interactions=["read", "vread", "history-instance", "create", "update"],
        system_interactions=["batch", "transaction"],
        conditional_update=True,
        update_create=True,
        mutual_tls=True,
    )
    return fhir_response(statement, 200)
