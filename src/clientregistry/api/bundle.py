"""``POST /fhir``: batch and transaction Bundles of Patients.

A batch processes each entry in its own transaction (one failing entry does not stop the
others); a transaction processes all entries in one database transaction: all or nothing.
A transaction of more than :data:`REGISTRY_LOCK_ENTRIES` entries holds the whole registry
while it runs rather than a lock per blocking key of every entry (see
:mod:`clientregistry.store.locks`).

Each entry is a feed (:func:`clientregistry.registry.feed.feed`) with the entry's
``ifMatch`` and ``ifNoneExist``: the same ownership rules, version checks, conditional
creates and Resolve Duplicates as the single-Patient routes. ``Prefer: return=`` chooses
what each entry's response carries: its resource (``representation``), an OperationOutcome
(``OperationOutcome``) or neither (``minimal``, the default).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from clientregistry.api.audit import client_address
from clientregistry.api.body import read_body
from clientregistry.api.deps import Context, Submitter
from clientregistry.api.patient import carries_identifier, if_none_exist_of
from clientregistry.api.responses import fhir_response, preferences
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
from clientregistry.fhir.http import Return, parse_if_match
from clientregistry.fhir.operation_outcome import information
from clientregistry.registry.feed import feed
from clientregistry.registry.read import found_as
from clientregistry.registry.submit import Submitter as SubmitUseCase
from clientregistry.settings import ClientSystemConfig
from clientregistry.store.db import transaction
from clientregistry.store.locks import lock_registry

router = APIRouter(prefix="/fhir")

REGISTRY_LOCK_ENTRIES = 16
"""Above this many entries, a transaction Bundle takes the registry-wide lock."""


def max_bytes(context: Any) -> int:
    """The largest body a Bundle may have (sixteen times a Patient's)."""
    return int(context.settings.max_body_bytes) * 16


def _process(
    session: Session,
    context: Any,
    system: ClientSystemConfig,
    entry: BundleEntry,
    address: str | None,
    prefer: Return | None,
    *,
    commit: bool = False,
) -> EntryResponse:
    patient = entry.resource
    if_match = None
    if entry.if_match is not None:
        if_match = parse_if_match(entry.if_match, name=f"{entry.expression}.request.ifMatch")
    condition = if_none_exist_of(
        entry.if_none_exist, system, name=f"{entry.expression}.request.ifNoneExist"
    )
    if entry.kind == "conditional-update":
        assert entry.condition is not None
        cond_system, cond_value = entry.condition
        if cond_system != system.internal_id_system:
            raise forbidden(f"{system.name!r} may only update by its own identifier system")
        if not carries_identifier(patient, cond_system, cond_value):
            raise business_rule("The Patient must carry the identifier named in the condition")
    body_id = patient.get("id") if entry.kind == "conditional-update" else None
    fed = feed(
        session,
        context,
        SubmitUseCase(context).prepare(patient, system),
        url_id=entry.id if entry.kind == "update" else None,
        preferred_id=body_id if isinstance(body_id, str) else None,
        source_address=address,
        commit=commit,
        if_match=if_match,
        if_none_exist=condition,
    )
    if fed.existing is not None:
        return _existing_entry(session, context, system, fed.existing, prefer)
    result = fed.submitted
    assert result is not None
    what = "Created" if result.created else "Updated"
    return EntryResponse(
        status=201 if result.created else 200,
        id=result.record_id,
        version=result.version,
        cruid=result.golden_id,
        last_modified=result.last_updated,
        resource=result.resource if prefer == "representation" else None,
        outcome=information(f"{what} Patient/{result.record_id} (version {result.version})")
        if prefer == "OperationOutcome"
        else None,
    )


def _existing_entry(
    session: Session,
    context: Any,
    system: ClientSystemConfig,
    record_id: str,
    prefer: Return | None,
) -> EntryResponse:
    """A conditional create that found its Patient: 200, nothing stored."""
    resource, shown = found_as(session, context.settings, system, record_id)
    refer = [link for link in resource.get("link", []) if link["type"] == "refer"]
    cruid = refer[0]["other"]["reference"] if refer else None
    message = f"Patient/{record_id} matches ifNoneExist; nothing was stored"
    return EntryResponse(
        status=200,
        id=record_id,
        version=resource["meta"]["versionId"],
        cruid=cruid,
        resource=shown if prefer == "representation" and shown is not None else None,
        outcome=information(message) if prefer == "OperationOutcome" else None,
    )


@router.post("")
async def bundle(request: Request, context: Context, system: Submitter) -> Response:
    """A batch (each entry on its own) or a transaction (all or nothing) of Patients."""
    limit = max_bytes(context)
    body = await read_body(request, limit)
    parsed = parse_bundle(body, max_bytes=limit)
    prefer = preferences(request).return_
    address = client_address(request)
    responses = await run_in_threadpool(_process_all, context, system, parsed, address, prefer)
    result = response_bundle(parsed.type, responses, base=context.settings.fhir_base)
    return fhir_response(result, 200, location_headers(responses))


def _process_all(
    context: Any,
    system: ClientSystemConfig,
    parsed: ParsedBundle,
    address: str | None,
    prefer: Return | None,
) -> list[EntryResponse]:
    responses: list[EntryResponse] = []
    if parsed.type == "transaction":
        with transaction(context.sessions) as session:
            if len(parsed.entries) > REGISTRY_LOCK_ENTRIES:
                lock_registry(session)
            for entry in parsed.entries:
                assert isinstance(entry, BundleEntry)  # parse_bundle fails bad transactions
                try:
                    responses.append(_process(session, context, system, entry, address, prefer))
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
                        _process(session, context, system, entry, address, prefer, commit=True)
                    )
            except FhirError as error:
                responses.append(EntryResponse.from_error(error))
    return responses
