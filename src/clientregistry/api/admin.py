"""The admin API (``/admin``, JSON): review queues, link management, audit trail, users.

Every route needs a bearer token from ``POST /auth/token`` and checks the caller's role on
the server (:mod:`clientregistry.api.auth`); a client certificate grants nothing here.

======================================  ========  ==========================================
route                                   role      what
======================================  ========  ==========================================
GET    /admin/queues                    reviewer  counts of the three queues
GET    /admin/queues/auto               reviewer  records the engine linked (paged)
GET    /admin/queues/{potential|conflict} reviewer  open review items of one kind (paged)
GET    /admin/issues/{id}               reviewer  one review item
POST   /admin/issues/{id}/resolve       reviewer  keep / move / new / not-a-match
GET    /admin/records/{id}              reviewer  record, golden record, links, candidates
POST   /admin/records/{id}/break        reviewer  detach into a new golden record
POST   /admin/records/{id}/unbreak      reviewer  forget broken matches, match again
POST   /admin/records/{id}/join         reviewer  link by hand to a chosen golden record
POST   /admin/records/{id}/confirm      reviewer  confirm an automatic link
POST   /admin/match/dry-run             reviewer  what submitting a Patient would do
POST   /admin/audit/{id}/revert         reviewer  undo a break/unbreak/join/resolve/revert
GET    /admin/audit                     auditor   the audit trail (paged, filtered)
GET    /admin/audit/verify              auditor   check the audit trail's hash chain
GET    /admin/audit/export              auditor   a time range as AuditEvent NDJSON or CSV
GET    /admin/audit/{id}                auditor   one audit event with its FHIR resource
GET    /admin/users                     admin     accounts
POST   /admin/users                     admin     add an account
PATCH  /admin/users/{username}          admin     role, disabled, password
GET    /admin/config                    admin     the running configuration (no secrets)
======================================  ========  ==========================================

``admin`` holds every role. Every request is audited (reads as ``R``, link changes as ``U``
with the change log that ``/admin/audit/{id}/revert`` undoes). Mount with :func:`mount`,
which adds :mod:`clientregistry.api.admin_people` (finding people, a person, the dashboard's
figures, the rules and the pair tester) and :mod:`clientregistry.api.auth_account` (one's own
password and language) too.

The routes are thin: each calls a use case of :mod:`clientregistry.registry` (the web UI
calls the same ones) and turns its :class:`~clientregistry.registry.actor.Refused` into an
:class:`~clientregistry.api.auth.ApiError`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from clientregistry.api import admin_people, auth, auth_account
from clientregistry.api.acting import actor, call
from clientregistry.api.auth import AdminUser, ApiError, AuditorUser, ReviewerUser
from clientregistry.api.body import read_body
from clientregistry.api.deps import Context
from clientregistry.api.params import Offset, RowId
from clientregistry.fhir.patient import parse_patient
from clientregistry.registry import (
    accounts,
    audit_integrity,
    audit_trail,
    configuration,
    review,
    reviewing,
)
from clientregistry.registry.accounts import UserChange, UserItem
from clientregistry.registry.actor import Reading, audit_read
from clientregistry.registry.audit_trail import AuditDetail, AuditPage, AuditQuery
from clientregistry.registry.configuration import ConfigView
from clientregistry.registry.links import Resolution
from clientregistry.registry.review import (
    AutoPage,
    DryRun,
    IssueItem,
    IssuePage,
    QueueCounts,
    RecordView,
)
from clientregistry.registry.reviewing import MAX_REASON_LENGTH, ActionResult
from clientregistry.security import users
from clientregistry.store.enums import Role

router = APIRouter(prefix="/admin", tags=["admin"])
NDJSON = "application/x-ndjson"

Limit = Annotated[int, Query(ge=1, le=200, description="Items per page")]


def mount(app: FastAPI) -> None:
    """Add ``/auth`` and ``/admin`` to the registry's application, with JSON errors."""
    auth.install_error_handler(app)
    app.include_router(auth.router)
    app.include_router(auth_account.router)
    app.include_router(router)
    app.include_router(admin_people.router)


# ----------------------------------------------------------------------------- request bodies

Reason = Annotated[
    str | None,
    Field(default=None, max_length=MAX_REASON_LENGTH, description="Why (kept in the audit)"),
]


class ReasonRequest(BaseModel):
    reason: Reason = None


class JoinRequest(BaseModel):
    """Exactly one of ``golden_id`` and ``record_id`` (join that record's golden record)."""

    golden_id: str | None = None
    record_id: str | None = None
    reason: Reason = None


class UnbreakRequest(BaseModel):
    others: list[str] | None = Field(
        default=None, max_length=1000, description="Records to forget the break with (default: all)"
    )
    reason: Reason = None


class ResolveRequest(BaseModel):
    resolution: Resolution
    golden_id: str | None = Field(
        default=None, description="'move' only: the target (default: the other record's)"
    )
    record_id: str | None = Field(
        default=None, description="Which record of the pair is placed (default: the item's)"
    )
    reason: Reason = None


class NewUser(BaseModel):
    username: str
    password: str = Field(min_length=1, max_length=users.MAX_PASSWORD_LENGTH)
    role: Role


# ----------------------------------------------------------------------------- queues


@router.get("/queues", response_model=QueueCounts)
def queues(request: Request, context: Context, user: ReviewerUser) -> QueueCounts:
    """How many items each review queue holds, and when the oldest was queued."""
    return call(lambda: reviewing.queue_counts(context, actor(request, user)))


@router.get("/queues/auto", response_model=AutoPage)
def auto_queue(
    request: Request, context: Context, user: ReviewerUser, offset: Offset = 0, limit: Limit = 50
) -> AutoPage:
    """Records the engine linked to others by itself, most recent first."""
    return call(lambda: reviewing.auto_queue(context, actor(request, user), offset, limit))


@router.get("/queues/{kind}", response_model=IssuePage)
def issue_queue(
    kind: review.IssueQueueKind,
    request: Request,
    context: Context,
    user: ReviewerUser,
    offset: Offset = 0,
    limit: Limit = 50,
) -> IssuePage:
    """Open review items of one kind (potential matches or conflicts), oldest first."""
    return call(lambda: reviewing.issue_queue(context, actor(request, user), kind, offset, limit))


@router.get("/issues/{issue_id}", response_model=IssueItem)
def issue(issue_id: RowId, request: Request, context: Context, user: ReviewerUser) -> IssueItem:
    """One review item (open or resolved)."""
    return call(lambda: reviewing.issue(context, actor(request, user), issue_id))


@router.post("/issues/{issue_id}/resolve", response_model=ActionResult)
def resolve(
    issue_id: RowId, body: ResolveRequest, request: Request, context: Context, user: ReviewerUser
) -> ActionResult:
    """Settle a review item; it leaves its queue. The decision sticks (human adjudication).
    An item already settled (by another reviewer, say) answers 409 saying by whom."""
    return call(
        lambda: reviewing.resolve(
            context,
            actor(request, user),
            issue_id,
            body.resolution,
            golden_id=body.golden_id,
            record_id=body.record_id,
            reason=body.reason,
        )
    )


# ----------------------------------------------------------------------------- records


@router.get("/records/{record_id}", response_model=RecordView)
def record(record_id: str, request: Request, context: Context, user: ReviewerUser) -> RecordView:
    """A source record with its golden record, linked records, link history, broken
    matches, open review items and candidates (score, decision, per-field explanation)."""
    return call(lambda: reviewing.record(context, actor(request, user), record_id))


@router.post("/records/{record_id}/break", response_model=ActionResult)
def break_record(
    record_id: str,
    request: Request,
    context: Context,
    user: ReviewerUser,
    body: ReasonRequest | None = None,
) -> ActionResult:
    """Detach the record into a new golden record; it is remembered as not the same person
    as every other record of its old golden record, and matching never links them again."""
    reason = body.reason if body else None
    return call(
        lambda: reviewing.break_record(context, actor(request, user), record_id, reason=reason)
    )


@router.post("/records/{record_id}/unbreak", response_model=ActionResult)
def unbreak(
    record_id: str,
    request: Request,
    context: Context,
    user: ReviewerUser,
    body: UnbreakRequest | None = None,
) -> ActionResult:
    """Revert a break: forget the broken matches and match the record again."""
    others = body.others if body else None
    reason = body.reason if body else None
    return call(
        lambda: reviewing.unbreak(context, actor(request, user), record_id, others, reason=reason)
    )


@router.post("/records/{record_id}/join", response_model=ActionResult)
def join(
    record_id: str, body: JoinRequest, request: Request, context: Context, user: ReviewerUser
) -> ActionResult:
    """Link the record by hand to a golden record; later updates keep it there."""
    return call(
        lambda: reviewing.join(
            context,
            actor(request, user),
            record_id,
            golden_id=body.golden_id,
            with_record=body.record_id,
            reason=body.reason,
        )
    )


@router.post("/records/{record_id}/confirm", response_model=ActionResult)
def confirm(
    record_id: str,
    request: Request,
    context: Context,
    user: ReviewerUser,
    body: ReasonRequest | None = None,
) -> ActionResult:
    """Confirm an automatic link: the record and its golden record's other records are
    marked as placed by a person; it leaves the queue of automatic links (409 if already
    confirmed)."""
    reason = body.reason if body else None
    return call(lambda: reviewing.confirm(context, actor(request, user), record_id, reason=reason))


_PATIENT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/fhir+json": {"schema": {"type": "object"}},
            "application/json": {"schema": {"type": "object"}},
        },
    }
}


@router.post("/match/dry-run", response_model=DryRun, openapi_extra=_PATIENT_BODY)
async def dry_run(request: Request, context: Context, user: ReviewerUser) -> DryRun:
    """What submitting this Patient would do now (classification, candidates, why).
    Nothing is stored."""
    limit = context.settings.max_body_bytes
    patient = parse_patient(await read_body(request, limit), max_bytes=limit)
    who = actor(request, user)
    return await run_in_threadpool(lambda: call(lambda: reviewing.dry_run(context, who, patient)))


# ----------------------------------------------------------------------------- audit


@router.get("/audit", response_model=AuditPage)
def audit_trail_page(
    request: Request,
    context: Context,
    user: AuditorUser,
    offset: Offset = 0,
    limit: Limit = 50,
    agent: Annotated[str | None, Query(max_length=128, description="Who")] = None,
    entity: Annotated[str | None, Query(max_length=255, description="Patient/<id>")] = None,
    event_type: Annotated[str | None, Query(max_length=64, description="What")] = None,
    outcome: Annotated[int | None, Query(ge=0, le=12, description="0, 4, 8 or 12")] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    person: Annotated[
        str | None,
        Query(max_length=64, description="A golden record: its events and its records'"),
    ] = None,
) -> AuditPage:
    """Audit events, newest first, optionally filtered."""
    query = AuditQuery(
        agent=agent,
        entity=entity,
        event_type=event_type,
        outcome=outcome,
        since=since,
        until=until,
        person=person,
    )
    return call(lambda: audit_trail.audit_page(context, actor(request, user), query, offset, limit))


class ChainCheck(BaseModel):
    """The audit chain's check (``clientregistry audit verify``)."""

    ok: bool
    checked: int = Field(description="Links that hold, from the first")
    head: int = Field(description="The chain's last link")
    broken_event: int | None = Field(default=None, description="The first broken link's event")
    broken_seq: int | None = None
    broken_recorded: datetime | None = None
    reason: str | None = None


@router.get("/audit/verify", response_model=ChainCheck)
def audit_verify(request: Request, context: Context, user: AuditorUser) -> ChainCheck:
    """Check the tamper-evident hash chain of the whole audit trail (``ok`` false names the
    first broken link)."""
    result = audit_integrity.verify_chain(context.sessions)
    broken = result.broken
    audit_read(context, actor(request, user), Reading("audit-verify", detail={"ok": result.ok}))
    return ChainCheck(
        ok=result.ok,
        checked=result.checked,
        head=result.head,
        broken_event=broken.id if broken else None,
        broken_seq=broken.seq if broken else None,
        broken_recorded=broken.recorded if broken else None,
        reason=broken.reason if broken else None,
    )


@router.get(
    "/audit/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The events recorded from ``from`` (included) to ``to`` (excluded;"
            " a date: that day included), in chain order: FHIR AuditEvents as NDJSON, or CSV",
            "content": {
                NDJSON: {"schema": {"type": "string"}},
                "text/csv": {"schema": {"type": "string"}},
            },
        }
    },
)
def audit_export(
    request: Request,
    context: Context,
    user: AuditorUser,
    start: Annotated[
        str, Query(alias="from", max_length=40, description="A date (2026-12-01) or ISO time")
    ],
    end: Annotated[
        str, Query(alias="to", max_length=40, description="A date (included) or ISO time")
    ],
    export_format: Annotated[
        audit_integrity.ExportFormat, Query(alias="format", description="ndjson or csv")
    ] = audit_integrity.ExportFormat.NDJSON,
) -> StreamingResponse:
    """Export a time range of the audit trail for an auditor (streamed)."""
    try:
        first = audit_integrity.parse_moment(start, end=False)
        last = audit_integrity.parse_moment(end, end=True)
    except ValueError as error:
        raise ApiError(400, str(error)) from None
    if last <= first:
        raise ApiError(400, "'to' must come after 'from'")
    audit_read(
        context,
        actor(request, user),
        Reading(
            "audit-export",
            detail={"from": first.isoformat(), "to": last.isoformat(), "format": export_format},
        ),
    )
    lines = audit_integrity.export_lines(context.sessions, first, last, export_format)
    media = NDJSON if export_format is audit_integrity.ExportFormat.NDJSON else "text/csv"
    name = f"audit-{first.date().isoformat()}-{last.date().isoformat()}.{export_format.value}"
    return StreamingResponse(
        lines,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/audit/{event_id}", response_model=AuditDetail)
def audit_event(
    event_id: RowId, request: Request, context: Context, user: AuditorUser
) -> AuditDetail:
    """One audit event, with the FHIR AuditEvent resource."""
    return call(lambda: audit_trail.audit_event(context, actor(request, user), event_id))


@router.post("/audit/{event_id}/revert", response_model=ActionResult)
def revert(
    event_id: RowId,
    request: Request,
    context: Context,
    user: ReviewerUser,
    body: ReasonRequest | None = None,
) -> ActionResult:
    """Undo a break, unbreak, join, resolution, confirmation or revert, from its audit event
    (409 when something it changed has changed since)."""
    reason = body.reason if body else None
    return call(lambda: reviewing.revert(context, actor(request, user), event_id, reason=reason))


# ----------------------------------------------------------------------------- users


@router.get("/users", response_model=list[UserItem])
def list_users(request: Request, context: Context, user: AdminUser) -> list[UserItem]:
    return call(lambda: accounts.list_accounts(context, actor(request, user)))


@router.post("/users", response_model=UserItem, status_code=201)
def add_user(body: NewUser, request: Request, context: Context, user: AdminUser) -> UserItem:
    """Add an account (the password must have at least 12 characters)."""
    return call(
        lambda: accounts.add_account(
            context, actor(request, user), body.username, body.password, body.role
        )
    )


@router.patch("/users/{username}", response_model=UserItem)
def change_user(
    username: str, body: UserChange, request: Request, context: Context, user: AdminUser
) -> UserItem:
    """Change an account's role, disable or enable it, or set its password (which logs it
    out). The last enabled admin can be neither demoted nor disabled."""
    return call(lambda: accounts.change_account(context, actor(request, user), username, body))


@router.get("/config", response_model=ConfigView)
def config(request: Request, context: Context, user: AdminUser) -> ConfigView:
    """The running configuration (the database password is hidden)."""
    return call(lambda: configuration.config_view(context, actor(request, user)))
