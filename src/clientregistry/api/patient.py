"""The FHIR Patient routes point-of-service systems use: submit, update, read, history.

Bodies are read, validated and prepared for matching on the event loop; the submission's
transaction runs through :func:`~clientregistry.api.writes.run_short_write` (on the loop:
on SQLite once it has the write turn; on PostgreSQL unless ``writes_in_thread_pool``), and
reads run in the thread pool. The rarer submissions that search or merge (a conditional create
with ``If-None-Exist``, a Resolve Duplicate) run in the thread pool too.

Versions: every response carrying a Patient has ``ETag: W/"<versionId>"`` and a
``Last-Modified`` HTTP date agreeing with its ``meta``; ``If-Match`` on an update (or a POST
that updates) with another version is 412 and changes nothing. Creates and updates answer
with OpenCR's ``Location: Patient/<id>`` and ``LocationCRUID: Patient/<golden id>``, the
absolute versioned URL in ``Content-Location``, and the body ``Prefer: return=`` asks for.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from clientregistry.api.audit import audit_read, client_address
from clientregistry.api.body import read_body
from clientregistry.api.deps import Context, CurrentSystem, Submitter
from clientregistry.api.responses import (
    fhir_response,
    preferences,
    version_headers,
    written_response,
)
from clientregistry.api.writes import run_short_write
from clientregistry.fhir.errors import bad_request, business_rule, forbidden, not_found
from clientregistry.fhir.http import Return, parse_if_match
from clientregistry.fhir.patient import parse_patient, require_id
from clientregistry.fhir.search_params import parse_identifier_condition, query_pairs
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.feed import Fed, feed
from clientregistry.registry.lookup import may_read_demographics, source_view
from clientregistry.registry.read import found_as, history, read_as
from clientregistry.registry.search_query import (
    PatientQuery,
    demographic_params,
    parse_patient_query,
)
from clientregistry.registry.submit import IfMatch, Submission, SubmitResult
from clientregistry.registry.submit import Submitter as SubmitUseCase
from clientregistry.settings import ClientSystemConfig
from clientregistry.store.db import transaction

router = APIRouter(prefix="/fhir")

FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def _check_id(patient_id: str, where: str = "Patient.id") -> None:
    if not FHIR_ID.fullmatch(patient_id):
        raise bad_request(
            f"{patient_id[:80]!r} is not a valid FHIR id (1-64 letters, digits, '-' or '.')",
            [where],
        )


def _submit(
    context: RegistryContext,
    submission: Submission,
    address: str | None,
    *,
    url_id: str | None = None,
    preferred_id: str | None = None,
    if_match: IfMatch | None = None,
    if_none_exist: PatientQuery | None = None,
    gate_held: bool = False,
    wait_for_locks: bool = True,
) -> Fed:
    with transaction(context.sessions, gate_held=gate_held) as session:
        return feed(
            session,
            context,
            submission,
            url_id=url_id,
            preferred_id=preferred_id,
            source_address=address,
            commit=True,
            wait_for_locks=wait_for_locks,
            if_match=if_match,
            if_none_exist=if_none_exist,
        )


def if_match_of(request: Request) -> IfMatch | None:
    """The version ``If-Match`` asks for (None without the header)."""
    value = request.headers.get("if-match")
    return None if value is None else parse_if_match(value)


def if_none_exist_of(
    value: str | None, system: ClientSystemConfig, *, name: str = "If-None-Exist"
) -> PatientQuery | None:
    """The condition of a conditional create: a Patient search (``identifier=system|value``,
    optionally after ``Patient?``), strictly parsed; by demographics only for a caller that may
    read them."""
    if value is None:
        return None
    text = value.strip()
    text = text.split("?", 1)[1] if "?" in text else text
    if not text:
        raise bad_request(f"{name}: the condition is empty (send e.g. identifier=system|value)")
    query = parse_patient_query(query_pairs(text))
    if not query.filters and not query.ids:
        raise bad_request(f"{name}: {value[:80]!r} has no search parameter to match on")
    searched = demographic_params(query)
    if searched and not may_read_demographics(system):
        raise forbidden(
            f"{system.name!r} may not search by demographics ({', '.join(searched)}); "
            "a condition by identifier or _id works"
        )
    return query


async def _submit_patient(
    request: Request,
    context: RegistryContext,
    system: ClientSystemConfig,
    patient: dict[str, Any],
    *,
    url_id: str | None = None,
    preferred_id: str | None = None,
    conditional_create: bool = False,
) -> Response:
    prefer = preferences(request).return_
    if_match = if_match_of(request)
    condition = (
        if_none_exist_of(request.headers.get("if-none-exist"), system)
        if conditional_create
        else None
    )
    submission = SubmitUseCase(context).prepare(patient, system)
    work = partial(
        _submit,
        context,
        submission,
        client_address(request),
        url_id=url_id,
        preferred_id=preferred_id,
        if_match=if_match,
        if_none_exist=condition,
    )
    if submission.survivor is None and condition is None:
        fed = await run_short_write(context, work)
    else:
        fed = await run_in_threadpool(work)
    base = context.settings.fhir_base
    if fed.existing is not None:
        return await run_in_threadpool(
            _existing_response, request, context, system, fed.existing, prefer
        )
    assert fed.submitted is not None
    return _submitted(fed.submitted, base, prefer)


def _submitted(result: SubmitResult, base: str, prefer: Return | None) -> Response:
    headers = {
        "Location": f"Patient/{result.record_id}",
        "LocationCRUID": f"Patient/{result.golden_id}",
        "Content-Location": f"{base}/Patient/{result.record_id}/_history/{result.version}",
        **version_headers(result.resource),
    }
    what = "Created" if result.created else "Updated"
    summary = (
        f"{what} Patient/{result.record_id} (version {result.version}); its golden record "
        f"is Patient/{result.golden_id}"
    )
    return written_response(
        result.resource, 201 if result.created else 200, headers, prefer, summary
    )


def _existing_response(
    request: Request,
    context: RegistryContext,
    system: ClientSystemConfig,
    record_id: str,
    prefer: Return | None,
) -> Response:
    """A conditional create that stored nothing: 200 with the Patient it found."""
    with transaction(context.sessions, write=False) as session:
        resource, shown = found_as(session, context.settings, system, record_id)
    audit_read(
        context,
        request,
        agent=system.name,
        interaction="create",
        entity=f"Patient/{record_id}",
        detail={"if-none-exist": "matched; nothing stored"},
    )
    version = resource["meta"]["versionId"]
    headers = {
        "Location": f"Patient/{record_id}",
        "Content-Location": f"{context.settings.fhir_base}/Patient/{record_id}/_history/{version}",
        **version_headers(resource),
    }
    golden = [link for link in resource.get("link", []) if link.get("type") == "refer"]
    if golden:
        headers["LocationCRUID"] = golden[0]["other"]["reference"]
    summary = f"Patient/{record_id} matches the If-None-Exist condition; nothing was stored"
    if shown is None:  # a record the caller may not read: the outcome says what happened
        said: Return = "minimal" if prefer == "minimal" else "OperationOutcome"
        return written_response({}, 200, headers, said, summary)
    return written_response(shown, 200, headers, prefer, summary)


async def _patient_body(request: Request, context: RegistryContext) -> dict[str, Any]:
    limit = context.settings.max_body_bytes
    return parse_patient(await read_body(request, limit), max_bytes=limit)


@router.post("/Patient")
async def create_patient(request: Request, context: Context, system: Submitter) -> Response:
    """Create or update the caller's record (by its internal identifier) and match it;
    ``If-None-Exist`` makes it a conditional create (one match: 200, nothing stored)."""
    patient = await _patient_body(request, context)
    return await _submit_patient(request, context, system, patient, conditional_create=True)


@router.put("/Patient/{patient_id}")
async def update_patient(
    patient_id: str, request: Request, context: Context, system: Submitter
) -> Response:
    """Update the caller's record, or create it with this id (update as create) when the
    caller's identifier is new and the id free (409 when another record has it)."""
    _check_id(patient_id)
    patient = await _patient_body(request, context)
    require_id(patient, patient_id)
    return await _submit_patient(request, context, system, patient, url_id=patient_id)


@router.put("/Patient")
async def conditional_update(request: Request, context: Context, system: Submitter) -> Response:
    """ITI-104: ``PUT Patient?identifier=system|value`` — the identifier must be the caller's.
    No record yet: it is created (with the body's id, if it has a free one)."""
    condition_system, condition_value = parse_identifier_condition(request.url.query)
    patient = await _patient_body(request, context)
    if condition_system != system.internal_id_system:
        raise forbidden(
            f"{system.name!r} may only update by its own identifier system "
            f"{system.internal_id_system}"
        )
    if not carries_identifier(patient, condition_system, condition_value):
        raise business_rule(
            "The Patient must carry the identifier named in the condition",
            ["Patient.identifier"],
        )
    body_id = patient.get("id")
    return await _submit_patient(
        request, context, system, patient, preferred_id=body_id if body_id else None
    )


def carries_identifier(patient: dict[str, Any], system: str, value: str) -> bool:
    return any(
        isinstance(i, dict) and i.get("system") == system and i.get("value") == value
        for i in patient.get("identifier") or []
    )


@router.get("/Patient/{patient_id}")
def read(patient_id: str, request: Request, context: Context, system: CurrentSystem) -> Response:
    """A golden record, or a source record: in full for callers allowed demographics,
    identifiers and links only for the others (see :mod:`clientregistry.registry.lookup`)."""
    _check_id(patient_id)
    with transaction(context.sessions, write=False) as session:
        resource, shown = read_as(session, context.settings, system, patient_id)
    audit_read(
        context, request, agent=system.name, interaction="read", entity=f"Patient/{patient_id}"
    )
    return fhir_response(shown, 200, version_headers(resource))


def _versions(
    context: RegistryContext, system: ClientSystemConfig, patient_id: str
) -> list[dict[str, Any]]:
    with transaction(context.sessions, write=False) as session:
        versions = history(session, context.settings, patient_id)
    return [source_view(system, version) for version in versions]


@router.get("/Patient/{patient_id}/_history")
def read_history(
    patient_id: str, request: Request, context: Context, system: CurrentSystem
) -> Response:
    """Every version of a source record, newest first (as :func:`read` shows them)."""
    _check_id(patient_id)
    versions = _versions(context, system, patient_id)
    audit_read(
        context,
        request,
        agent=system.name,
        interaction="history-instance",
        entity=f"Patient/{patient_id}",
    )
    base = context.settings.fhir_base
    entries = []
    for number, version in enumerate(versions):
        created = number == len(versions) - 1
        entries.append(
            {
                "fullUrl": f"{base}/Patient/{patient_id}",
                "resource": version,
                "request": {
                    "method": "POST" if created else "PUT",
                    "url": "Patient" if created else f"Patient/{patient_id}",
                },
                "response": {
                    "status": "201 Created" if created else "200 OK",
                    "etag": version_headers(version)["ETag"],
                    "lastModified": version["meta"]["lastUpdated"],
                },
            }
        )
    bundle = {"resourceType": "Bundle", "type": "history", "total": len(versions), "entry": entries}
    return fhir_response(bundle, 200)


@router.get("/Patient/{patient_id}/_history/{version_id}")
def read_version(
    patient_id: str, version_id: str, request: Request, context: Context, system: CurrentSystem
) -> Response:
    """One version of a source record (vread)."""
    _check_id(patient_id)
    for resource in _versions(context, system, patient_id):
        if resource["meta"]["versionId"] == version_id:
            audit_read(
                context,
                request,
                agent=system.name,
                interaction="vread",
                entity=f"Patient/{patient_id}",
                detail={"version": version_id},
            )
            return fhir_response(resource, 200, version_headers(resource))
    raise not_found("Patient", patient_id, version_id)
