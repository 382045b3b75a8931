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
POST   /admin/match/dry-run             reviewer  what submitting a Patient would do
POST   /admin/audit/{id}/revert         reviewer  undo a break/unbreak/join/resolve/revert
GET    /admin/audit                     auditor   the audit trail (paged, filtered)
GET    /admin/audit/{id}                auditor   one audit event with its FHIR resource
GET    /admin/users                     admin     accounts
POST   /admin/users                     admin     add an account
PATCH  /admin/users/{username}          admin     role, disabled, password
GET    /admin/config                    admin     the running configuration (no secrets)
======================================  ========  ==========================================

``admin`` holds every role. Every request is audited (reads as ``R``, link changes as ``U``
with the change log that ``/admin/audit/{id}/revert`` undoes). Mount with :func:`mount`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from clientregistry.api import auth
from clientregistry.api.auth import (
    AdminUser,
    ApiError,
    AuditorUser,
    ReviewerUser,
    client_address,
)
from clientregistry.api.body import read_body
from clientregistry.api.deps import Context
from clientregistry.fhir.patient import parse_patient
from clientregistry.registry import links, review
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.links import ActionOutcome, LinkEditor, LinkError, Resolution
from clientregistry.registry.review import (
    AutoPage,
    DryRun,
    IssueItem,
    IssuePage,
    QueueCounts,
    RecordView,
)
from clientregistry.security import users
from clientregistry.store.db import transaction
from clientregistry.store.enums import AgentKind, AuditAction, MatchStatus, Role
from clientregistry.store.models import AuditEvent, MatchIssue, User

router = APIRouter(prefix="/admin", tags=["admin"])

Offset = Annotated[int, Query(ge=0, description="Items to skip")]
Limit = Annotated[int, Query(ge=1, le=200, description="Items per page")]


def mount(app: FastAPI) -> None:
    """Add ``/auth`` and ``/admin`` to the registry's application, with JSON errors."""
    auth.install_error_handler(app)
    app.include_router(auth.router)
    app.include_router(router)


# ----------------------------------------------------------------------------- models


class RecordChangeModel(BaseModel):
    id: str
    golden_before: str | None
    golden_after: str | None
    adjudicated_before: bool
    adjudicated_after: bool
    status_before: MatchStatus
    status_after: MatchStatus


class Changes(BaseModel):
    """What an action changed (also kept in its audit event, to revert it)."""

    records: list[RecordChangeModel]
    broken_added: list[tuple[str, str]]
    broken_removed: list[tuple[str, str]]
    issues_resolved: list[int]
    issues_reopened: list[int]
    issues_created: list[int]
    goldens_created: list[str]


class ActionResult(BaseModel):
    action: links.ActionName
    record_id: str | None
    golden_id: str | None = Field(description="The record's golden record after the action")
    audit_event_id: int = Field(description="POST /admin/audit/{id}/revert undoes the action")
    detail: dict[str, Any]
    changes: Changes


class JoinRequest(BaseModel):
    """Exactly one of ``golden_id`` and ``record_id`` (join that record's golden record)."""

    golden_id: str | None = None
    record_id: str | None = None


class UnbreakRequest(BaseModel):
    others: list[str] | None = Field(
        default=None, description="Records to forget the break with (default: all)"
    )


class ResolveRequest(BaseModel):
    resolution: Resolution
    golden_id: str | None = Field(
        default=None, description="'move' only: the target (default: the other record's)"
    )
    record_id: str | None = Field(
        default=None, description="Which record of the pair is placed (default: the item's)"
    )


class AuditItem(BaseModel):
    id: int
    recorded: datetime
    action: AuditAction
    outcome: int
    event_type: str
    agent: str
    agent_kind: AgentKind
    source_address: str | None
    entity: str | None
    detail: dict[str, Any] | None
    revertible: bool


class AuditDetail(AuditItem):
    resource: dict[str, Any] | None


class AuditPage(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[AuditItem]


class UserItem(BaseModel):
    username: str
    role: Role
    disabled: bool
    created_at: datetime


class NewUser(BaseModel):
    username: str
    password: str = Field(min_length=1, max_length=users.MAX_PASSWORD_LENGTH)
    role: Role


class UserChange(BaseModel):
    role: Role | None = None
    disabled: bool | None = None
    password: str | None = Field(default=None, min_length=1, max_length=users.MAX_PASSWORD_LENGTH)


class RuleSetInfo(BaseModel):
    index: int
    name: str
    matching_type: str
    potential_threshold: float
    auto_threshold: float
    fields: list[str]


class SystemInfo(BaseModel):
    name: str
    display_name: str
    internal_id_system: str
    permissions: list[str]


class ConfigView(BaseModel):
    data_dir: str
    host: str
    port: int
    workers: int
    hostnames: list[str]
    database: str = Field(description="Database URL without its password")
    rules_source: str
    rule_sets: list[RuleSetInfo]
    candidate_limit: int
    max_body_bytes: int
    token_minutes: int
    systems: list[SystemInfo]


# ----------------------------------------------------------------------------- helpers


def _audit_read(
    session: Session,
    request: Request,
    user: User,
    event_type: str,
    entity: str | None = None,
    detail: dict[str, Any] | None = None,
    action: AuditAction = AuditAction.READ,
) -> None:
    links.record_action(
        session,
        agent=user.username,
        source_address=client_address(request),
        event_type=event_type,
        action=action,
        entity=entity,
        detail=detail or {},
    )


def _record_read(
    context: RegistryContext,
    request: Request,
    user: User,
    event_type: str,
    entity: str | None = None,
    detail: dict[str, Any] | None = None,
    action: AuditAction = AuditAction.READ,
) -> None:
    """Audit a read in a write transaction of its own, after the read's (a read transaction
    that writes would have to upgrade its lock, which SQLite refuses under load)."""
    with transaction(context.sessions) as session:
        _audit_read(session, request, user, event_type, entity, detail, action)


@contextmanager
def _errors() -> Iterator[None]:
    """Link and user errors as API errors."""
    try:
        yield
    except LinkError as error:
        raise ApiError(error.status, error.message) from None
    except users.UnknownUser as error:
        raise ApiError(404, error.message) from None
    except users.UserExists as error:
        raise ApiError(409, error.message) from None
    except users.UserError as error:
        raise ApiError(400, error.message) from None


def _act(
    request: Request,
    context: RegistryContext,
    user: User,
    action: Callable[[LinkEditor], ActionOutcome],
) -> ActionResult:
    """Run one link action in a transaction, audit it with its change log."""
    with _errors(), transaction(context.sessions) as session:
        editor = LinkEditor(session, context, user.username)
        outcome = action(editor)
        event = links.audit_outcome(
            session, outcome, agent=user.username, source_address=client_address(request)
        )
        event_id = event.id
    return ActionResult(
        action=outcome.action,
        record_id=outcome.record_id,
        golden_id=outcome.golden_id,
        audit_event_id=event_id,
        detail=outcome.detail,
        changes=Changes.model_validate(outcome.changes.to_json()),
    )


def _audit_item(event: AuditEvent) -> AuditItem:
    detail = event.detail or {}
    return AuditItem(
        id=event.id,
        recorded=event.recorded,
        action=event.action,
        outcome=event.outcome,
        event_type=event.event_type,
        agent=event.agent,
        agent_kind=event.agent_kind,
        source_address=event.source_address,
        entity=event.entity,
        detail=event.detail,
        revertible=event.event_type in links.REVERTIBLE
        and "changes" in detail
        and event.outcome == 0,
    )


def _user_item(user: User) -> UserItem:
    return UserItem(
        username=user.username, role=user.role, disabled=user.disabled, created_at=user.created_at
    )


# ----------------------------------------------------------------------------- queues


@router.get("/queues", response_model=QueueCounts)
def queues(request: Request, context: Context, user: ReviewerUser) -> QueueCounts:
    """How many items each review queue holds."""
    with transaction(context.sessions, write=False) as session:
        counts = review.queue_counts(session)
    _record_read(context, request, user, "queue-read")
    return counts


@router.get("/queues/auto", response_model=AutoPage)
def auto_queue(
    request: Request, context: Context, user: ReviewerUser, offset: Offset = 0, limit: Limit = 50
) -> AutoPage:
    """Records the engine linked to others by itself, most recent first."""
    with transaction(context.sessions, write=False) as session:
        page = review.auto_queue(session, offset, limit)
    _record_read(context, request, user, "queue-read", detail={"queue": "auto"})
    return page


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
    with transaction(context.sessions, write=False) as session:
        page = review.issue_queue(session, kind, offset, limit)
    _record_read(context, request, user, "queue-read", detail={"queue": kind})
    return page


@router.get("/issues/{issue_id}", response_model=IssueItem)
def issue(issue_id: int, request: Request, context: Context, user: ReviewerUser) -> IssueItem:
    """One review item (open or resolved)."""
    with transaction(context.sessions, write=False) as session:
        found = session.get(MatchIssue, issue_id)
        if found is None:
            raise ApiError(404, f"no review item {issue_id}")
        item = review.issue_items(session, [found])[0]
    _record_read(context, request, user, "issue-read", detail={"issue": issue_id})
    return item


@router.post("/issues/{issue_id}/resolve", response_model=ActionResult)
def resolve(
    issue_id: int, body: ResolveRequest, request: Request, context: Context, user: ReviewerUser
) -> ActionResult:
    """Settle a review item; it leaves its queue. The decision sticks (human adjudication)."""
    return _act(
        request,
        context,
        user,
        lambda editor: links.resolve_issue(
            editor, issue_id, body.resolution, golden_id=body.golden_id, record_id=body.record_id
        ),
    )


# ----------------------------------------------------------------------------- records


@router.get("/records/{record_id}", response_model=RecordView)
def record(record_id: str, request: Request, context: Context, user: ReviewerUser) -> RecordView:
    """A source record with its golden record, linked records, link history, broken
    matches, open review items and candidates (score, decision, per-field explanation)."""
    with transaction(context.sessions, write=False) as session:
        view = review.record_view(session, context, record_id)
        if view is None:
            raise ApiError(404, f"no source record Patient/{record_id}")
    _record_read(context, request, user, "review-read", entity=f"Patient/{record_id}")
    return view


@router.post("/records/{record_id}/break", response_model=ActionResult)
def break_record(
    record_id: str, request: Request, context: Context, user: ReviewerUser
) -> ActionResult:
    """Detach the record into a new golden record; it is remembered as not the same person
    as every other record of its old golden record, and matching never links them again."""
    return _act(request, context, user, lambda editor: links.break_record(editor, record_id))


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
    return _act(request, context, user, lambda editor: links.unbreak(editor, record_id, others))


@router.post("/records/{record_id}/join", response_model=ActionResult)
def join(
    record_id: str, body: JoinRequest, request: Request, context: Context, user: ReviewerUser
) -> ActionResult:
    """Link the record by hand to a golden record; later updates keep it there."""
    return _act(
        request,
        context,
        user,
        lambda editor: links.join(editor, record_id, body.golden_id, body.record_id),
    )


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
    with transaction(context.sessions, write=False) as session:
        result = review.dry_run(session, context, patient)
    _record_read(
        context,
        request,
        user,
        "dry-run",
        entity=f"Patient/{result.record_id}" if result.record_id else None,
        detail={"status": result.status.value, "golden": result.golden_id},
        action=AuditAction.EXECUTE,
    )
    return result


# ----------------------------------------------------------------------------- audit


@router.get("/audit", response_model=AuditPage)
def audit_trail(
    request: Request,
    context: Context,
    user: AuditorUser,
    offset: Offset = 0,
    limit: Limit = 50,
    agent: str | None = None,
    entity: str | None = None,
    event_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> AuditPage:
    """Audit events, newest first, optionally filtered."""
    conditions = []
    if agent is not None:
        conditions.append(AuditEvent.agent == agent)
    if entity is not None:
        conditions.append(AuditEvent.entity == entity)
    if event_type is not None:
        conditions.append(AuditEvent.event_type == event_type)
    for bound, is_start in ((since, True), (until, False)):
        if bound is None:
            continue
        if bound.tzinfo is None:
            raise ApiError(400, "give since/until with a time zone (e.g. ...Z)")
        conditions.append(AuditEvent.recorded >= bound if is_start else AuditEvent.recorded < bound)
    with transaction(context.sessions, write=False) as session:
        total = session.scalar(select(func.count()).select_from(AuditEvent).where(*conditions))
        events = session.scalars(
            select(AuditEvent)
            .where(*conditions)
            .order_by(AuditEvent.id.desc())
            .offset(offset)
            .limit(limit)
        ).all()
        items = [_audit_item(e) for e in events]
    _record_read(context, request, user, "audit-read", detail={"offset": offset})
    return AuditPage(total=int(total or 0), offset=offset, limit=limit, items=items)


@router.get("/audit/{event_id}", response_model=AuditDetail)
def audit_event(
    event_id: int, request: Request, context: Context, user: AuditorUser
) -> AuditDetail:
    """One audit event, with the FHIR AuditEvent resource."""
    with transaction(context.sessions, write=False) as session:
        event = session.get(AuditEvent, event_id)
        if event is None:
            raise ApiError(404, f"no audit event {event_id}")
        item = AuditDetail(**_audit_item(event).model_dump(), resource=event.resource)
    _record_read(context, request, user, "audit-read", detail={"event": event_id})
    return item


@router.post("/audit/{event_id}/revert", response_model=ActionResult)
def revert(event_id: int, request: Request, context: Context, user: ReviewerUser) -> ActionResult:
    """Undo a break, unbreak, join, resolution or revert, from its audit event (409 when
    something it changed has changed since)."""
    return _act(request, context, user, lambda editor: links.revert_event(editor, event_id))


# ----------------------------------------------------------------------------- users


@router.get("/users", response_model=list[UserItem])
def list_users(request: Request, context: Context, user: AdminUser) -> list[UserItem]:
    with transaction(context.sessions, write=False) as session:
        items = [_user_item(u) for u in users.list_users(session)]
    _record_read(context, request, user, "user-read")
    return items


@router.post("/users", response_model=UserItem, status_code=201)
def add_user(body: NewUser, request: Request, context: Context, user: AdminUser) -> UserItem:
    """Add an account (the password must have at least 12 characters)."""
    with _errors(), transaction(context.sessions) as session:
        created = users.add_user(session, body.username, body.password, body.role)
        item = _user_item(created)
        detail = {"username": created.username, "role": created.role.value}
        _audit_read(session, request, user, "user-add", None, detail, AuditAction.CREATE)
    return item


@router.patch("/users/{username}", response_model=UserItem)
def change_user(
    username: str, body: UserChange, request: Request, context: Context, user: AdminUser
) -> UserItem:
    """Change an account's role, disable or enable it, or set its password (which logs it
    out). The last enabled admin can be neither demoted nor disabled."""
    with _errors(), transaction(context.sessions) as session:
        target = users.require_user(session, username)
        before = {"role": target.role.value, "disabled": target.disabled}
        if body.password is not None:
            users.set_password(session, username, body.password)
        if body.role is not None:
            users.set_role(session, username, body.role)
        if body.disabled is not None:
            users.set_disabled(session, username, body.disabled)
        after = {"role": target.role.value, "disabled": target.disabled}
        detail = {
            "username": username,
            "before": before,
            "after": after,
            "password_changed": body.password is not None,
        }
        _audit_read(session, request, user, "user-change", None, detail, AuditAction.UPDATE)
        item = _user_item(target)
    return item


@router.get("/config", response_model=ConfigView)
def config(request: Request, context: Context, user: AdminUser) -> ConfigView:
    """The running configuration (the database password is hidden)."""
    settings = context.settings
    rules = context.matcher.rules
    view = ConfigView(
        data_dir=str(settings.data_dir),
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        hostnames=list(settings.hostnames),
        database=make_url(settings.database).render_as_string(hide_password=True),
        rules_source=rules.source,
        rule_sets=[
            RuleSetInfo(
                index=rs.index,
                name=rs.name,
                matching_type=rs.matching_type,
                potential_threshold=rs.potential_threshold,
                auto_threshold=rs.auto_threshold,
                fields=[f.name for f in rs.fields],
            )
            for rs in rules.rule_sets
        ],
        candidate_limit=settings.candidate_limit,
        max_body_bytes=settings.max_body_bytes,
        token_minutes=settings.token_minutes,
        systems=[
            SystemInfo(
                name=s.name,
                display_name=s.display_name,
                internal_id_system=s.internal_id_system,
                permissions=list(s.permissions),
            )
            for s in settings.systems.values()
        ],
    )
    _record_read(context, request, user, "config-read")
    return view
