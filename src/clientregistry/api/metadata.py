"""``GET /fhir/metadata``: the CapabilityStatement, listing exactly the routes that exist.

Anyone may read it (FHIR clients ask before they authenticate); each read is audited, as the
client system when its certificate names one, else as ``anonymous``."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from clientregistry import __version__
from clientregistry.api.audit import audit_read
from clientregistry.api.deps import Context, request_system
from clientregistry.api.match import fhir_base
from clientregistry.api.responses import fhir_response
from clientregistry.fhir.capability import capability_statement
from clientregistry.fhir.errors import FhirError
from clientregistry.registry import search_query

router = APIRouter(prefix="/fhir")

SEARCH_PARAMS = sorted(
    {
        "_id",
        "_lastUpdated",
        *search_query.STRING_PARAMS,
        *search_query.TOKEN_PARAMS,
        *search_query.DATE_PARAMS,
    }
)
"""What registry/search_query.py searches on, so the statement cannot drift from it."""


@router.get("/metadata")
def metadata(request: Request, context: Context) -> Response:
    try:
        agent = request_system(request).name
    except FhirError:
        agent = "anonymous"
    audit_read(context, request, agent=agent, interaction="capabilities", entity=None)
    base = fhir_base(request)
    statement = capability_statement(
        base,
        __version__,
        interactions=["read", "vread", "history-instance", "create", "update", "search-type"],
        system_interactions=["batch", "transaction"],
        search_params=SEARCH_PARAMS,
        search_includes=sorted(search_query.INCLUDES),
        operations=["ihe-pix", "match", "merge"],
        conditional_update=True,
        conditional_create=True,
        update_create=True,
        mutual_tls=True,
    )
    return fhir_response(statement, 200)
