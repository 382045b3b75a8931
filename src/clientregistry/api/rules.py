"""The admin API's decision rules versions and re-matches (``/admin/rules/versions``,
``/admin/rematches``; the rules in force are described at ``GET /admin/rules``).

==========================================  ======  ======================================
route                                       role    what
==========================================  ======  ======================================
POST   /admin/rules/check                   admin   check a rules file (nothing stored)
POST   /admin/rules/versions                admin   check and store a version (201)
GET    /admin/rules/versions                admin   the rules in force and every version
GET    /admin/rules/versions/{id}           admin   one version with its content
POST   /admin/rules/versions/{id}/dry-run   admin   re-match under it, changing nothing
POST   /admin/rules/versions/{id}/activate  admin   re-match under it and put it in force
POST   /admin/rules/restore                 admin   put the previous rules back in force
GET    /admin/rematches                     admin   re-matches, newest first
GET    /admin/rematches/{id}                admin   state, step, counts of changes
GET    /admin/rematches/{id}/report         admin   every change (CSV)
POST   /admin/rematches/{id}/cancel         admin   a dry run, or a change not switched on
==========================================  ======  ======================================

A rules file is the body (``application/json``), checked with the messages of ``clientregistry
rules check``. Dry runs and activations are jobs the server's job runner runs (202 with the
job at once; ``GET /admin/rematches/{id}`` follows it); an activation switches every worker
over to the new rules while the server keeps serving. Every call is audited.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from clientregistry.api.auth import AdminUser, ApiError, client_address
from clientregistry.api.deps import Context
from clientregistry.api.params import Offset, RowId
from clientregistry.registry import rematch, rules_store
from clientregistry.registry.actor import Actor, Refused
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.rematch_plan import PlanSummary
from clientregistry.store.enums import JobOrigin
from clientregistry.store.models import User

router = APIRouter(prefix="/admin", tags=["rules"])

_RULES_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


class RulesCheckModel(BaseModel):
    ok: bool
    source: str
    problems: list[str]
    warnings: list[str]
    description: list[str]
    messages: list[str]
    """The lines ``clientregistry rules check`` prints."""


class RulesVersionModel(BaseModel):
    id: int
    created_at: Any
    created_by: str
    source: str
    note: str | None
    sha256: str
    active: bool
    pending: bool


class RulesVersionContent(RulesVersionModel):
    content: Any
    """The rules (JSON) as stored."""


class RulesInForce(BaseModel):
    active: str
    """The rules in force (a version, or the configuration's)."""
    active_version: int | None
    pending_version: int | None
    generation: int
    previous_version: int | None
    """What ``POST /admin/rules/restore`` puts back."""
    versions: list[RulesVersionModel]


class RematchModel(BaseModel):
    id: int
    state: str
    origin: str
    version: int
    dry_run: bool
    phase: str | None
    created_by: str
    created_at: Any
    updated_at: Any
    finished_at: Any
    summary: PlanSummary
    applied: int
    error: str | None
    cancel_requested: bool


class RematchPage(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[RematchModel]


def _actor(request: Request, user: User) -> Actor:
    return Actor(user.username, user.role, client_address(request))


def _refused(error: Refused) -> ApiError:
    return ApiError(error.status, error.message)


async def _rules_body(request: Request) -> tuple[bytes, str]:
    media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media not in ("application/json", "application/fhir+json", ""):
        raise ApiError(415, "send the rules as application/json")
    limit = rules_store.MAX_RULES_BYTES
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"a rules file is at most {limit} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"a rules file is at most {limit} bytes")
    return body, request.query_params.get("source") or "uploaded rules"


def _version_model(view: rules_store.RulesVersionView) -> RulesVersionModel:
    return RulesVersionModel.model_validate(view.to_json())


def _rematch_model(status: rematch.RematchStatus) -> RematchModel:
    return RematchModel.model_validate(status.to_json())


# ----------------------------------------------------------------------------- rules


@router.post("/rules/check", response_model=RulesCheckModel, openapi_extra=_RULES_BODY)
async def check(request: Request, context: Context, user: AdminUser) -> RulesCheckModel:
    """Check a rules file as ``clientregistry rules check`` does; nothing is stored."""
    body, source = await _rules_body(request)
    checked = rules_store.check_rules(body, source)
    return RulesCheckModel(
        ok=checked.ok,
        source=checked.source,
        problems=list(checked.problems),
        warnings=list(checked.warnings),
        description=list(checked.description),
        messages=checked.messages(),
    )


@router.post(
    "/rules/versions", status_code=201, response_model=RulesVersionModel, openapi_extra=_RULES_BODY
)
async def store(
    request: Request,
    context: Context,
    user: AdminUser,
    source: Annotated[str | None, Query(max_length=255)] = None,
    note: Annotated[str | None, Query(max_length=2000)] = None,
) -> RulesVersionModel:
    """Check a rules file and store it as a version (400 with every problem when it is not
    valid; the same file again gives its version back). It is not in force until
    activated."""
    body, name = await _rules_body(request)
    try:
        view = rules_store.store_rules(context, _actor(request, user), body, source or name, note)
    except Refused as error:
        raise _refused(error) from None
    return _version_model(view)


@router.get("/rules/versions", response_model=RulesInForce)
def in_force(request: Request, context: Context, user: AdminUser) -> RulesInForce:
    """The rules in force, the change under way if any, and every stored version."""
    versions = rules_store.list_versions(context, _actor(request, user))
    rules = context.in_force
    return RulesInForce(
        active=rules.active.source if rules is not None else "",
        active_version=None if rules is None else rules.active.version,
        pending_version=None if rules is None or rules.pending is None else rules.pending.version,
        generation=context.generation,
        previous_version=rules_store.previous_version(context),
        versions=[_version_model(v) for v in versions],
    )


@router.get("/rules/versions/{version_id}", response_model=RulesVersionContent)
def version(
    version_id: RowId, request: Request, context: Context, user: AdminUser
) -> RulesVersionContent:
    """One stored version, with its content."""
    import json

    try:
        view, content = rules_store.get_version(context, _actor(request, user), version_id)
    except Refused as error:
        raise _refused(error) from None
    return RulesVersionContent(**view.to_json(), content=json.loads(content))


def _start(
    request: Request, context: RegistryContext, user: User, version_id: int, dry_run: bool
) -> Response:
    try:
        job_id = rematch.start_rematch(
            context, _actor(request, user), version_id, dry_run=dry_run, origin=JobOrigin.SERVER
        )
    except Refused as error:
        raise _refused(error) from None
    status = rematch.rematch_status(context, job_id)
    return JSONResponse(
        _rematch_model(status).model_dump(mode="json"),
        status_code=202,
        headers={"Location": f"/admin/rematches/{job_id}"},
    )


@router.post("/rules/restore", status_code=202, response_model=RematchModel)
def restore(request: Request, context: Context, user: AdminUser) -> Response:
    """Put the rules in force before the present ones back in force (a re-match)."""
    previous = rules_store.previous_version(context)
    if previous is None:
        raise ApiError(409, "no earlier rules to restore")
    return _start(request, context, user, previous, dry_run=False)


@router.post("/rules/versions/{version_id}/dry-run", status_code=202, response_model=RematchModel)
def dry_run(version_id: RowId, request: Request, context: Context, user: AdminUser) -> Response:
    """Match every record again under this version and report what would change."""
    return _start(request, context, user, version_id, dry_run=True)


@router.post("/rules/versions/{version_id}/activate", status_code=202, response_model=RematchModel)
def activate(version_id: RowId, request: Request, context: Context, user: AdminUser) -> Response:
    """Put this version in force: every record is matched again under it while the server
    keeps serving (decisions people made stay)."""
    return _start(request, context, user, version_id, dry_run=False)


# ----------------------------------------------------------------------------- re-matches


def _audit(context: RegistryContext, request: Request, user: User, job_id: int | None) -> None:
    from clientregistry.registry.actor import Reading, audit_read

    entity = None if job_id is None else f"BulkJob/{job_id}"
    audit_read(context, _actor(request, user), Reading("rematch-read", entity))


@router.get("/rematches", response_model=RematchPage)
def list_rematches(
    request: Request,
    context: Context,
    user: AdminUser,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> RematchPage:
    total, items = rematch.list_rematches(context, offset, limit)
    _audit(context, request, user, None)
    return RematchPage(
        total=total, offset=offset, limit=limit, items=[_rematch_model(i) for i in items]
    )


def _status(context: RegistryContext, job_id: int) -> rematch.RematchStatus:
    try:
        return rematch.rematch_status(context, job_id)
    except Refused as error:
        raise _refused(error) from None


@router.get("/rematches/{job_id}", response_model=RematchModel)
def get_rematch(job_id: RowId, request: Request, context: Context, user: AdminUser) -> RematchModel:
    """A re-match's state, step and counts (persons merged and split, records moving,
    review items opened and closed)."""
    status = _status(context, job_id)
    _audit(context, request, user, job_id)
    return _rematch_model(status)


@router.post("/rematches/{job_id}/cancel", response_model=RematchModel)
def cancel(job_id: RowId, request: Request, context: Context, user: AdminUser) -> RematchModel:
    """Cancel a dry run, or a change of rules not yet switched on (409 after)."""
    try:
        return _rematch_model(rematch.cancel_rematch(context, _actor(request, user), job_id))
    except Refused as error:
        raise _refused(error) from None


@router.get(
    "/rematches/{job_id}/report",
    responses={200: {"content": {"text/csv": {}}, "description": "A line per change"}},
)
def report(job_id: RowId, request: Request, context: Context, user: AdminUser) -> Response:
    """Every change of a re-match (its dry run's, or those it made), as CSV."""
    _status(context, job_id)
    _audit(context, request, user, job_id)
    return StreamingResponse(
        rematch.report_csv(context, job_id),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="rematch-{job_id}.csv"'},
    )
