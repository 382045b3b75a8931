"""``POST /fhir/Patient/$match`` (FHIR R4 Patient/$match, PDQm ITI-119).

Include :data:`router` in the application before the Patient router (see
:mod:`clientregistry.api.pixm`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from clientregistry.api.body import read_body
from clientregistry.api.deps import Context, CurrentSystem, request_context
from clientregistry.api.pixm import caller_of
from clientregistry.api.responses import fhir_response
from clientregistry.fhir.json_body import load_object
from clientregistry.fhir.search_params import not_supported, parse_format, query_pairs
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.lookup import (
    READ_DEMOGRAPHICS,
    READ_IDENTIFIERS,
    record_lookup,
    require_permission,
)
from clientregistry.registry.person_match import (
    MatchRequest,
    match_bundle,
    match_people,
    parse_match_request,
    select_matches,
)
from clientregistry.settings import ClientSystemConfig
from clientregistry.store.db import transaction
from clientregistry.store.enums import AuditAction

router = APIRouter(prefix="/fhir")

ITI = "ITI-119"


def fhir_base(request: Request) -> str:
    """The FHIR base URL (``server.base_url`` + ``/fhir``): the base of ``fullUrl`` and paging
    links, never taken from the request's ``Host`` header."""
    return request_context(request).settings.fhir_base


def _only_format(query: str) -> None:
    for name, value in query_pairs(query):
        if name != "_format":
            raise not_supported(f"$match takes its parameters in the body, not {name!r}")
        parse_format(value)


def _run(
    context: RegistryContext, system: ClientSystemConfig, request: MatchRequest, base: str
) -> tuple[dict[str, Any], list[str]]:
    demographics = READ_DEMOGRAPHICS in system.permissions
    with transaction(context.sessions, write=False) as session:
        matches = select_matches(match_people(session, context, request.patient), request)
        bundle = match_bundle(
            session, context.settings, matches, demographics=demographics, base=base
        )
    return bundle, [f"{m.golden_id}:{m.grade}" for m in matches]


@router.post("/Patient/$match")
async def patient_match(request: Request, context: Context, system: CurrentSystem) -> Response:
    """The people the Patient may be, most likely first, each with its grade and score.

    Successful matches are audited here; refusals and failures by the application's error
    handler."""
    require_permission(system, READ_IDENTIFIERS, READ_DEMOGRAPHICS)
    _only_format(request.url.query)
    body = await read_body(request, context.settings.max_body_bytes)
    parsed = parse_match_request(load_object(body, max_bytes=context.settings.max_body_bytes))
    bundle, found = await run_in_threadpool(_run, context, system, parsed, fhir_base(request))
    await run_in_threadpool(
        record_lookup,
        context,
        caller_of(request, system.name),
        action=AuditAction.EXECUTE,
        interaction="operation",
        iti=ITI,
        entity=f"Patient/{found[0].split(':')[0]}" if found else None,
        detail={
            "results": len(found),
            "matches": ",".join(found),
            "onlyCertainMatches": parsed.only_certain,
        },
    )
    return fhir_response(bundle, 200)
