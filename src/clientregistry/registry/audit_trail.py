"""Reading the audit trail: a filtered page of events, newest first, and one event with its
FHIR AuditEvent resource (auditors and admins).

Filters: who (``agent``), what (``event_type``), the outcome (0 success, 4, 8, 12 failures),
a time range, one entity (``Patient/<id>``) or a person (a golden record: its own events and
those of the source records it holds now). A link action's event is ``revertible`` while it
succeeded and carries its change log; its ``detail`` holds each record's state before and
after.

A page is read by offset, or after a known event (``before``/``after`` an id: keyset paging,
what the web UI's pager follows, as cheap on the thousandth page as on the first). The total
can be bounded (``count_limit``): past it the page says "more than" instead of counting every
event of a trail that grows with every submission and read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, and_, func, or_, select
from sqlalchemy.orm import Session

from clientregistry.registry.actor import Actor, Reading, Refused, audit_read, not_found
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.links import REVERTIBLE
from clientregistry.store.db import transaction
from clientregistry.store.enums import AgentKind, AuditAction
from clientregistry.store.models import AuditEvent, SourceRecord

MAX_PERSON_RECORDS = 500
"""A person filter looks at the events of at most this many of its source records."""


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
    total_capped: bool = Field(
        default=False,
        description="More events than ``total`` pass the filters (a bounded count)",
    )


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Which events: every given filter must hold."""

    agent: str | None = None
    entity: str | None = None
    event_type: str | None = None
    outcome: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    person: str | None = None
    """A golden record id: events about it or about its source records."""

    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in self.__dataclass_fields__)


def audit_item(event: AuditEvent) -> AuditItem:
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
        revertible=event.event_type in REVERTIBLE and "changes" in detail and event.outcome == 0,
    )


def _conditions(session: Session, query: AuditQuery) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if query.agent is not None:
        conditions.append(AuditEvent.agent == query.agent)
    if query.entity is not None:
        conditions.append(AuditEvent.entity == query.entity)
    if query.event_type is not None:
        conditions.append(AuditEvent.event_type == query.event_type)
    if query.outcome is not None:
        conditions.extend(_outcome(query.outcome))
    for bound, is_start in ((query.since, True), (query.until, False)):
        if bound is None:
            continue
        if bound.tzinfo is None:
            raise Refused(
                400, "give since/until with a time zone (e.g. ...Z)", code="naive-datetime"
            )
        conditions.append(AuditEvent.recorded >= bound if is_start else AuditEvent.recorded < bound)
    if query.person is not None:
        members = session.scalars(
            select(SourceRecord.id)
            .where(SourceRecord.golden_id == query.person)
            .order_by(SourceRecord.id)
            .limit(MAX_PERSON_RECORDS)
        ).all()
        entities = [f"Patient/{query.person}", *(f"Patient/{m}" for m in members)]
        conditions.append(AuditEvent.entity.in_(entities))
    return conditions


def _outcome(outcome: int) -> list[ColumnElement[bool]]:
    """An outcome filter; a failure's also names the condition of the partial index
    ``ix_audit_event_failures`` (failures are few: that index holds them only), so that
    SQLite sees it applies."""
    if outcome == 0:
        return [AuditEvent.outcome == 0]
    return [AuditEvent.outcome == outcome, AuditEvent.outcome != 0]


def _count(
    session: Session, conditions: list[ColumnElement[bool]], count_limit: int | None
) -> tuple[int, bool]:
    """How many events pass ``conditions`` (at most ``count_limit``), and whether more do."""
    if count_limit is None:
        total = session.scalar(select(func.count()).select_from(AuditEvent).where(*conditions))
        return int(total or 0), False
    first = select(AuditEvent.id).where(*conditions).limit(count_limit + 1).subquery()
    total = int(session.scalar(select(func.count()).select_from(first)) or 0)
    return min(total, count_limit), total > count_limit


def audit_page(
    context: RegistryContext,
    actor: Actor,
    query: AuditQuery,
    offset: int,
    limit: int,
    *,
    before: int | None = None,
    after: int | None = None,
    count_limit: int | None = None,
) -> AuditPage:
    """Audit events passing ``query``, newest first: from ``offset``, or the ``limit`` events
    just older than event ``before`` (or just newer than event ``after``), ``offset`` then
    only numbering the page. With ``count_limit`` the total is counted up to it.

    Newest first is by id; with a time range, by the time recorded (then id): the range's
    index then yields a page in order, where ordering by id would sort every event of the
    range (a day's range held every submission of a bulk import)."""
    with transaction(context.sessions, write=False) as session:
        conditions = _conditions(session, query)
        total, capped = _count(session, conditions, count_limit)
        by_time = query.since is not None or query.until is not None
        key = (AuditEvent.recorded, AuditEvent.id) if by_time else (AuditEvent.id,)
        newest_first = True
        skip = offset
        if before is not None or after is not None:
            anchor = before if before is not None else after
            assert anchor is not None
            newest_first, skip = before is not None, 0
            conditions.append(_beyond(session, key, anchor, older=newest_first))
        order = [c.desc() if newest_first else c.asc() for c in key]
        # The page's ids first, then its events: an index holding the filtered column (and
        # the id) answers the first step alone, where reading whole events (each with its
        # FHIR resource) to sort them would read every event of a day's range.
        ids = list(
            session.scalars(
                select(AuditEvent.id).where(*conditions).order_by(*order).offset(skip).limit(limit)
            )
        )
        if not newest_first:
            ids.reverse()
        found = {e.id: e for e in session.scalars(select(AuditEvent).where(AuditEvent.id.in_(ids)))}
        events = [found[i] for i in ids]
        items = [audit_item(e) for e in events]
    audit_read(context, actor, Reading("audit-read", detail={"offset": offset}))
    return AuditPage(total=total, offset=offset, limit=limit, items=items, total_capped=capped)


def _beyond(
    session: Session, key: tuple[Any, ...], anchor: int, *, older: bool
) -> ColumnElement[bool]:
    """Events after event ``anchor`` in the page order ``key`` (older ones, or newer)."""
    if len(key) == 1:
        return AuditEvent.id < anchor if older else AuditEvent.id > anchor
    moment = session.scalar(select(AuditEvent.recorded).where(AuditEvent.id == anchor))
    if moment is None:  # no such event: by id alone
        return AuditEvent.id < anchor if older else AuditEvent.id > anchor
    if older:
        return or_(
            AuditEvent.recorded < moment,
            and_(AuditEvent.recorded == moment, AuditEvent.id < anchor),
        )
    return or_(
        AuditEvent.recorded > moment,
        and_(AuditEvent.recorded == moment, AuditEvent.id > anchor),
    )


def audit_event(context: RegistryContext, actor: Actor, event_id: int) -> AuditDetail:
    """One audit event, with its FHIR AuditEvent resource."""
    with transaction(context.sessions, write=False) as session:
        event = session.get(AuditEvent, event_id)
        if event is None:
            raise not_found(f"no audit event {event_id}", event=event_id)
        item = AuditDetail(**audit_item(event).model_dump(), resource=event.resource)
    audit_read(context, actor, Reading("audit-read", detail={"event": event_id}))
    return item
