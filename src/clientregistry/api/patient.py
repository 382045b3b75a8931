"""The FHIR Patient routes point-of-service systems use: submit, update, read, history."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from clientregistry.api.body import read_body
from clientregistry.api.deps import Context, CurrentSystem, Submitter
from clientregistry.api.responses import fhir_response
from clientregistry.fhir.datatypes import etag, instant
from clientregistry.fhir.errors import forbidden
from clientregistry.fhir.patient import parse_patient, require_id
from clientregistry.fhir.search_params import parse_identifier_condition
from clientregistry.registry import audit
from clientregistry.registry.read import history, read_patient
from clientregistry.registry.submit import SubmitResult
from clientregistry.registry.submit import Submitter as SubmitUseCase
from clientregistry.store.db import transaction
from clientregistry.store.enums import AgentKind, AuditAction

router = APIRouter(prefix="/fhir")


def _client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def _submit(
    request: Request,
    context: Any,
    system: Any,
    patient: dict[str, Any],
    url_id: str | None = None,
) -> SubmitResult:
    with transaction(context.sessions) as session:
        result = SubmitUseCase(context).submit(session, patient, system, url_id=url_id)
        audit.record(
            session,
            action=AuditAction.CREATE if result.created else AuditAction.UPDATE,
            outcome=0,
            interaction="create" if result.created else "update",
            agent=system.name,
            agent_kind=AgentKind.SYSTEM,
            source_address=_client_address(request),
            entity=f"Patient/{result.record_id}",
            detail={
                "cruid": result.golden_id,
                "match": result.status.value,
                "score": result.score,
                "rule": result.rule_set,
            },
        )
    return result


def _submitted(result: SubmitResult) -> Response:
    headers = {
        "Location": f"Patient/{result.record_id}",
        "LocationCRUID": f"Patient/{result.golden_id}",
        "ETag": etag(result.version),
        "Last-Modified": instant_header(result.resource),
    }
    return fhir_response(result.resource, 201 if result.created else 200, headers)


def instant_header(resource: dict[str, Any]) -> str:
    return str(resource.get("meta", {}).get("lastUpdated", ""))


@router.post("/Patient")
async def create_patient(request: Request, context: Context, system: Submitter) -> Response:
    """Create or update the caller's record (by its internal identifier) and match it."""
    body = await read_body(request, context.settings.max_body_bytes)
    patient = parse_patient(body, max_bytes=context.settings.max_body_bytes)
    return _submitted(_submit(request, context, system, patient))


@router.put("/Patient/{patient_id}")
async def update_patient(
    patient_id: str, request: Request, context: Context, system: Submitter
) -> Response:
    """Update (or create with this id) the caller's record."""
    body = await read_body(request, context.settings.max_body_bytes)
    patient = parse_patient(body, max_bytes=context.settings.max_body_bytes)
    require_id(patient, patient_id)
    return _submitted(_submit(request, context, system, patient, url_id=patient_id))


@router.put("/Patient")
async def conditional_update(request: Request, context: Context, system: Submitter) -> Response:
    """ITI-104: ``PUT Patient?identifier=system|value`` — the identifier must be the caller's."""
    condition_system, condition_value = parse_identifier_condition(request.url.query)
    body = await read_body(request, context.settings.max_body_bytes)
    patient = parse_patient(body, max_bytes=context.settings.max_body_bytes)
    if condition_system != system.internal_id_system:
        raise forbidden(
            f"{system.name!r} may only update by its own identifier system "
            f"{system.internal_id_system}"
        )
    identifiers = patient.get("identifier") or []
    if not any(
        isinstance(i, dict)
        and i.get("system") == condition_system
        and i.get("value") == condition_value
        for i in identifiers
    ):
        from clientregistry.fhir.errors import business_rule

        raise business_rule(
            "The Patient must carry the identifier named in the condition",
            ["Patient.identifier"],
        )
    return _submitted(_submit(request, context, system, patient))


def _read_allowed(system: Any, is_golden: bool) -> None:
    needed = "read-identifiers" if is_golden else "read-demographics"
    if needed not in system.permissions:
        raise forbidden(
            f"{system.name!r} may not read {'golden records' if is_golden else 'demographics'}"
        )


@router.get("/Patient/{patient_id}")
def read(patient_id: str, request: Request, context: Context, system: CurrentSystem) -> Response:
    with transaction(context.sessions, write=False) as session:
        resource, is_golden = read_patient(session, context.settings, patient_id)
        _read_allowed(system, is_golden)
        audit.record(
            session,
            action=AuditAction.READ,
            outcome=0,
            interaction="read",
            agent=system.name,
            agent_kind=AgentKind.SYSTEM,
            source_address=_client_address(request),
            entity=f"Patient/{patient_id}",
            detail={},
        )
    version = resource["meta"]["versionId"]
    return fhir_response(resource, 200, {"ETag": etag(version)})


@router.get("/Patient/{patient_id}/_history")
def read_history(
    patient_id: str, request: Request, context: Context, system: CurrentSystem
) -> Response:
    _read_allowed(system, False)
    with transaction(context.sessions, write=False) as session:
        versions = history(session, context.settings, patient_id)
        audit.record(
            session,
            action=AuditAction.READ,
            outcome=0,
            interaction="history-instance",
            agent=system.name,
            agent_kind=AgentKind.SYSTEM,
            source_address=_client_address(request),
            entity=f"Patient/{patient_id}",
            detail={},
        )
    bundle = {
        "resourceType": "Bundle",
        "type": "history",
        "total": len(versions),
        "entry": [
            {
                "fullUrl": f"Patient/{patient_id}",
                "resource": v,
                "request": {"method": "PUT", "url": f"Patient/{patient_id}"},
            }
            for v in versions
        ],
    }
    return fhir_response(bundle, 200)


@router.get("/Patient/{patient_id}/_history/{version_id}")
def read_version(
    patient_id: str, version_id: str, request: Request, context: Context, system: CurrentSystem
) -> Response:
    _read_allowed(system, False)
    with transaction(context.sessions, write=False) as session:
        versions = history(session, context.settings, patient_id)
    for resource in versions:
        if resource["meta"]["versionId"] == version_id:
            return fhir_response(resource, 200, {"ETag": etag(version_id)})
    from clientregistry.fhir.errors import not_found

    raise not_found("Patient", patient_id, version_id)


__all__ = ["instant", "router"]
