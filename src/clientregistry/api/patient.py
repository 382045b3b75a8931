"""The FHIR Patient routes point-of-service systems use: submit, update, read, history.

Bodies are read, validated and prepared for matching on the event loop; the submission's
transaction runs through :func:`~clientregistry.api.writes.run_short_write` (on the loop:
on SQLite once it has the write turn; on PostgreSQL unless ``writes_in_thread_pool``), and
reads run in the thread pool.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request, Response

from clientregistry.api.audit import audit_read, client_address
from clientregistry.api.body import read_body
from clientregistry.api.deps import Context, CurrentSystem, Submitter
from clientregistry.api.responses import fhir_response
from clientregistry.api.writes import run_short_write
from clientregistry.fhir.datatypes import etag
from clientregistry.fhir.errors import bad_request, business_rule, forbidden, not_found
from clientregistry.fhir.patient import parse_patient, require_id
from clientregistry.fhir.search_params import parse_identifier_condition
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.read import history, read_patient
from clientregistry.registry.submit import Submission, SubmitResult
from clientregistry.registry.submit import Submitter as SubmitUseCase
from clientregistry.settings import ClientSystemConfig
from clientregistry.store.db import transaction

router = APIRouter(prefix="/fhir")

FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def _check_id(patient_id: str) -> None:
    if not FHIR_ID.fullmatch(patient_id):
        raise bad_request(
            f"{patient_id[:80]!r} is not a valid FHIR id (1-64 letters, digits, '-' or '.')",
            ["Patient.id"],
        )


def _submit(
    context: RegistryContext,
    submission: Submission,
    address: str | None,
    url_id: str | None = None,
    *,
    gate_held: bool = False,
    wait_for_locks: bool = True,
) -> SubmitResult:
    with transaction(context.sessions, gate_held=gate_held) as session:
        return SubmitUseCase(context).submit_prepared(
            session,
            submission,
            url_id=url_id,
            source_address=address,
            commit=True,
            wait_for_locks=wait_for_locks,
        )


async def _submit_patient(
    request: Request,
    context: RegistryContext,
    system: ClientSystemConfig,
    patient: dict[str, Any],
    url_id: str | None = None,
) -> Response:
    submission = SubmitUseCase(context).prepare(patient, system)
    address = client_address(request)
    result = await run_short_write(context, _submit, context, submission, address, url_id)
    return _submitted(result)


def _submitted(result: SubmitResult) -> Response:
    headers = {
        "Location": f"Patient/{result.record_id}",
        "LocationCRUID": f"Patient/{result.golden_id}",
        "ETag": etag(result.version),
        "Last-Modified": str(result.resource.get("meta", {}).get("lastUpdated", "")),
    }
    return fhir_response(result.resource, 201 if result.created else 200, headers)


async def _patient_body(request: Request, context: RegistryContext) -> dict[str, Any]:
    limit = context.settings.max_body_bytes
    return parse_patient(await read_body(request, limit), max_bytes=limit)


@router.post("/Patient")
async def create_patient(request: Request, context: Context, system: Submitter) -> Response:
    """Create or update the caller's record (by its internal identifier) and match it."""
    patient = await _patient_body(request, context)
    return await _submit_patient(request, context, system, patient)


@router.put("/Patient/{patient_id}")
async def update_patient(
    patient_id: str, request: Request, context: Context, system: Submitter
) -> Response:
    """Update (or create with this id) the caller's record."""
    _check_id(patient_id)
    patient = await _patient_body(request, context)
    require_id(patient, patient_id)
    return await _submit_patient(request, context, system, patient, patient_id)


@router.put("/Patient")
async def conditional_update(request: Request, context: Context, system: Submitter) -> Response:
    """ITI-104: ``PUT Patient?identifier=system|value`` — the identifier must be the caller's."""
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
    return await _submit_patient(request, context, system, patient)


def carries_identifier(patient: dict[str, Any], system: str, value: str) -> bool:
    return any(
        isinstance(i, dict) and i.get("system") == system and i.get("value") == value
        for i in patient.get("identifier") or []
    )


def _read_allowed(system: ClientSystemConfig, is_golden: bool) -> None:
    needed = "read-identifiers" if is_golden else "read-demographics"
    if needed not in system.permissions:
        raise forbidden(
            f"{system.name!r} may not read {'golden records' if is_golden else 'demographics'}"
        )


@router.get("/Patient/{patient_id}")
def read(patient_id: str, request: Request, context: Context, system: CurrentSystem) -> Response:
    """A golden record (for callers allowed identifiers) or a source record (demographics)."""
    _check_id(patient_id)
    with transaction(context.sessions, write=False) as session:
        resource, is_golden = read_patient(session, context.settings, patient_id)
    _read_allowed(system, is_golden)
    audit_read(
        context, request, agent=system.name, interaction="read", entity=f"Patient/{patient_id}"
    )
    return fhir_response(resource, 200, {"ETag": etag(resource["meta"]["versionId"])})


@router.get("/Patient/{patient_id}/_history")
def read_history(
    patient_id: str, request: Request, context: Context, system: CurrentSystem
) -> Response:
    """Every version of a source record, newest first."""
    _check_id(patient_id)
    _read_allowed(system, False)
    with transaction(context.sessions, write=False) as session:
        versions = history(session, context.settings, patient_id)
    audit_read(
        context,
        request,
        agent=system.name,
        interaction="history-instance",
        entity=f"Patient/{patient_id}",
    )
    base = str(request.base_url).rstrip("/") + "/fhir"
    entries = []
    for number, version in enumerate(versions):
        vid = version["meta"]["versionId"]
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
                    "etag": etag(vid),
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
    _read_allowed(system, False)
    with transaction(context.sessions, write=False) as session:
        versions = history(session, context.settings, patient_id)
    for resource in versions:
        if resource["meta"]["versionId"] == version_id:
            audit_read(
                context,
                request,
                agent=system.name,
                interaction="vread",
                entity=f"Patient/{patient_id}",
                detail={"version": version_id},
            )
            return fhir_response(resource, 200, {"ETag": etag(version_id)})
    raise not_found("Patient", patient_id, version_id)
