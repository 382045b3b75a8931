"""``POST /fhir/Patient/$merge``: merge a duplicate source record into its survivor (see
:mod:`clientregistry.registry.merge`).

Allowed to client systems whose ``permissions`` include ``merge`` (not in the defaults) and to
people with the reviewer (or admin) role, by bearer token. The answer is a ``Parameters``
with the ``input``, an ``outcome`` and the ``result`` (the target Patient after the merge;
without demographics for a caller that may not read them). ``preview=true`` changes nothing.
Include :data:`router` before the Patient router (see :mod:`clientregistry.api.pixm`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials

from clientregistry.api.audit import audit_read, client_address
from clientregistry.api.auth import bearer, current_user
from clientregistry.api.body import read_body
from clientregistry.api.deps import Context, request_system
from clientregistry.api.responses import fhir_response
from clientregistry.fhir.errors import FhirError, forbidden
from clientregistry.fhir.json_body import load_object
from clientregistry.fhir.operation_outcome import information
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.lookup import source_view
from clientregistry.registry.merge import Merged, MergeRequest, merge_patients, parse_merge_request
from clientregistry.security.users import has_role
from clientregistry.settings import ClientSystemConfig
from clientregistry.store.db import transaction
from clientregistry.store.enums import AgentKind, Role

router = APIRouter(prefix="/fhir")

MERGE = "merge"
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "A Parameters: input, outcome and result (the target Patient)"},
    400: {"description": "Malformed Parameters (OperationOutcome)"},
    401: {"description": "No valid client certificate or bearer token"},
    403: {"description": "The caller may not merge, or may not update the target"},
    409: {"description": "The records are known not to be the same person"},
    422: {"description": "A Patient is unknown, ambiguous, a golden record, or the same"},
}


def merger(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> tuple[ClientSystemConfig, AgentKind]:
    """Who merges: a reviewer or admin by bearer token, or a client system allowed to merge."""
    if credentials is None:
        system = request_system(request)
        if MERGE not in system.permissions:
            raise forbidden(f"{system.name!r} may not merge Patients (permission 'merge')")
        return system, AgentKind.SYSTEM
    user = current_user(request, credentials)
    if not has_role(user, (Role.REVIEWER,)):
        raise forbidden(f"{user.username!r} ({user.role.value}) may not merge Patients")
    person = ClientSystemConfig(
        name=user.username,
        display_name=user.username,
        internal_id_system="",
        permissions=(MERGE, "read-demographics"),
    )
    return person, AgentKind.USER


class _Previewed(Exception):
    """Leaves the transaction of a preview, which rolls it back."""

    def __init__(self, merged: Merged) -> None:
        self.merged = merged


def _merge(
    context: RegistryContext,
    request: MergeRequest,
    caller: ClientSystemConfig,
    kind: AgentKind,
    address: str | None,
) -> Merged:
    try:
        with transaction(context.sessions) as session:
            merged = merge_patients(
                session, context, request, caller, agent_kind=kind, source_address=address
            )
            if request.preview:
                raise _Previewed(merged)
    except _Previewed as previewed:
        return previewed.merged
    return merged


@router.post(
    "/Patient/$merge",
    summary="Merge a duplicate Patient into its survivor (FHIR Patient/$merge)",
    responses=_RESPONSES,
)
async def patient_merge(
    request: Request,
    context: Context,
    who: Annotated[tuple[ClientSystemConfig, AgentKind], Depends(merger)],
) -> Response:
    """The source record joins the target's golden record and is marked replaced by the
    target (``active: false``, ``replaced-by``); audited and revertible. ``preview=true``:
    the same answer, nothing changed."""
    caller, kind = who
    limit = context.settings.max_body_bytes * 2
    parsed = parse_merge_request(load_object(await read_body(request, limit), max_bytes=limit))
    address = client_address(request)
    merged = await run_in_threadpool(_merge, context, parsed, caller, kind, address)
    if parsed.preview:
        await run_in_threadpool(
            audit_read,
            context,
            request,
            agent=caller.name,
            interaction="merge-preview",
            entity=f"Patient/{merged.source_id}",
            detail={"target": merged.target_id},
        )
    verb = "would be" if parsed.preview else "is"
    summary = (
        f"Patient/{merged.source_id} {verb} replaced by Patient/{merged.target_id}; both "
        f"{verb} in golden record Patient/{merged.golden_id}"
    )
    try:
        result = source_view(caller, merged.result)
    except FhirError:
        result = None
    parameters: list[dict[str, Any]] = [
        {"name": "input", "resource": dict(parsed.parameters)},
        {"name": "outcome", "resource": information(summary)},
    ]
    if result is not None:
        parameters.append({"name": "result", "resource": result})
    return fhir_response({"resourceType": "Parameters", "parameter": parameters}, 200)
