"""``GET /fhir/metadata``: the CapabilityStatement, listing exactly the routes that exist."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from clientregistry import __version__
from clientregistry.api.responses import fhir_response
from clientregistry.fhir.capability import capability_statement

router = APIRouter(prefix="/fhir")

SEARCH_PARAMS = [
    "_id",
    "identifier",
    "family",
    "given",
    "name",
    "birthdate",
    "gender",
    "telecom",
    "address",
    "address-city",
    "address-postalcode",
    "address-state",
    "address-country",
    "mothersMaidenName",
    "active",
]


@router.get("/metadata")
def metadata(request: Request) -> Response:
    base = str(request.base_url).rstrip("/") + "/fhir"
    statement = capability_statement(
        base,
        __version__,
        interactions=["read", "vread", "history-instance", "create", "update", "search-type"],
        system_interactions=["batch", "transaction"],
        search_params=SEARCH_PARAMS,
        search_includes=["Patient:link"],
        operations=["ihe-pix", "match"],
        conditional_update=True,
        update_create=True,
        mutual_tls=True,
    )
    return fhir_response(statement, 200)
