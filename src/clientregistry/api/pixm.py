"""PIXm: ``GET /fhir/Patient/$ihe-pix`` (ITI-83), identifier cross-references.

Include :data:`router` in the application *before* the Patient router: its
``GET /fhir/Patient/{patient_id}`` would otherwise take ``$ihe-pix`` for an id. Successful
lookups are audited here; refusals and failures by the application's error handler.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from clientregistry.api.deps import Context, CurrentSystem
from clientregistry.api.responses import fhir_response
from clientregistry.fhir.search_params import query_pairs
from clientregistry.registry.lookup import (
    READ_DEMOGRAPHICS,
    READ_IDENTIFIERS,
    Caller,
    record_lookup,
    require_permission,
)
from clientregistry.registry.pix import cross_reference, parse_pix_query
from clientregistry.store.db import transaction
from clientregistry.store.enums import AuditAction

router = APIRouter(prefix="/fhir")

ITI = "ITI-83"


def caller_of(request: Request, name: str) -> Caller:
    """Who is asking, for the audit trail."""
    return Caller(name, request.client.host if request.client else None)


@router.get("/Patient/$ihe-pix")
def ihe_pix(request: Request, context: Context, system: CurrentSystem) -> Response:
    """The identifiers and Patients of the person holding ``sourceIdentifier``."""
    require_permission(system, READ_IDENTIFIERS, READ_DEMOGRAPHICS)
    query = parse_pix_query(query_pairs(request.url.query))
    with transaction(context.sessions, write=False) as session:
        result = cross_reference(session, context.settings, query)
    record_lookup(
        context,
        caller_of(request, system.name),
        action=AuditAction.EXECUTE,
        interaction="operation",
        iti=ITI,
        entity=f"Patient/{result.golden_ids[0]}",
        detail={"query": request.url.query, "cruids": ",".join(result.golden_ids)},
    )
    return fhir_response(result.parameters, 200)
