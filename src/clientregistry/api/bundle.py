"""``POST /fhir``: batch and transaction Bundles of Patients.

A batch processes each entry in its own transaction (one failing entry does not stop the
others); a transaction processes all entries in one database transaction: all or nothing.
A transaction of more than :data:`REGISTRY_LOCK_ENTRIES` entries holds the whole registry
while it runs rather than a lock per blocking key of every entry (see
:mod:`clientregistry.store.locks`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from clientregistry.api.body import read_body
from clientregistry.api.deps import Context, Submitter
from clientregistry.api.patient import carries_identifier
from clientregistry.api.responses import fhir_response
from clientregistry.fhir.bundle import (
    BadEntry,
    BundleEntry,
    EntryResponse,
    ParsedBundle,
    location_headers,
    parse_bundle,
    response_bundle,
)
from clientregistry.fhir.errors import FhirError, business_rule, forbidden
from clientregistry.registry.submit import Submitter as SubmitUseCase
from clientregistry.settings import ClientSystemConfig
from clientregistry.store.db import transaction
from clientregistry.store.locks import lock_registry

router = APIRouter(prefix="/fhir")

REGISTRY_LOCK_ENTRIES = 16
"""Above this many entries, a transaction Bundle takes the registry-wide lock."""


def _process(
    session: Session,
    context: Any,
    system: ClientSystemConfig,
    entry: BundleEntry,
    address: str | None,
    *,
    commit: bool = False,
) -> EntryResponse:
    patient = entry.resource
    if entry.if_match is not None:
        raise FhirError(
            400, "not-supported", "request.ifMatch is not supported; send the entry without it"
        )
    if entry.kind == "conditional-update":
        assert entry.condition is not None
        cond_system, cond_value = entry.condition
        if cond_system != system.internal_id_system:
            raise forbidden(f"{system.name!r} may only update by its own identifier system")
        if not carries_identifier(patient, cond_system, cond_value):
            raise business_rule("The Patient must carry the identifier named in the condition")
    result = SubmitUseCase(context).submit(
        session,
        patient,
        system,
        url_id=entry.id if entry.kind == "update" else None,
        source_address=address,
        commit=commit,
    )
    return EntryResponse(
        status=201 if result.created else 200,
        id=result.record_id,
        version=result.version,
        cruid=result.golden_id,
    )


@router.post("")
async def bundle(request: Request, context: Context, system: Submitter) -> Response:
    """A batch (each entry on its own) or a transaction (all or nothing) of Patients."""
    limit = context.settings.max_body_bytes * 16
    body = await read_body(request, limit)
    parsed = parse_bundle(body, max_bytes=limit)
    address = request.client.host if request.client else None
    responses = await run_in_threadpool(_process_all, context, system, parsed, address)
    result = response_bundle(parsed.type, responses)
    return fhir_response(result, 200, location_headers(responses))


def _process_all(
    context: Any, system: ClientSystemConfig, parsed: ParsedBundle, address: str | None
) -> list[EntryResponse]:
    responses: list[EntryResponse] = []
    if parsed.type == "transaction":
        with transaction(context.sessions) as session:
            if len(parsed.entries) > REGISTRY_LOCK_ENTRIES:
                lock_registry(session)
            for entry in parsed.entries:
                assert isinstance(entry, BundleEntry)  # parse_bundle fails bad transactions
                try:
                    responses.append(_process(session, context, system, entry, address))
                except FhirError as error:
                    raise error.at(f"{entry.expression}.resource", replace="Patient") from None
    else:
        for entry in parsed.entries:
            if isinstance(entry, BadEntry):
                responses.append(EntryResponse.from_error(entry.error))
                continue
            try:
                with transaction(context.sessions) as session:
                    responses.append(
                        _process(session, context, system, entry, address, commit=True)
                    )
            except FhirError as error:
                responses.append(EntryResponse.from_error(error))
    return responses
