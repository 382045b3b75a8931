"""The reviewer's use cases: the queues, a review item, a record with its candidates, the link
actions (break, revert a break, join, resolve, confirm, undo) and a dry-run match.

Each opens its own transactions and audits on behalf of an
:class:`~clientregistry.registry.actor.Actor`: reads as ``R`` events in a transaction of
their own after the read (:func:`~clientregistry.registry.actor.audit_read`), actions as
``U`` events with their change log in the action's own transaction, which
``revert`` undoes. The admin API (:mod:`clientregistry.api.admin`) and the web UI
(:mod:`clientregistry.ui`) both call these, so a person's action is the same whichever way
it is made.

An action may carry a ``reason`` (a break, a join, a resolution…): it is kept in the audit
event and shown in the person's history.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from clientregistry.registry import links, review
from clientregistry.registry.actor import Actor, Reading, audit_read, not_found
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.links import ActionOutcome, LinkEditor, Resolution
from clientregistry.registry.review import (
    AutoPage,
    CandidateItem,
    DryRun,
    IssueItem,
    IssuePage,
    IssueQueueKind,
    QueueCounts,
    RecordSummary,
    RecordView,
)
from clientregistry.store.db import transaction
from clientregistry.store.enums import AuditAction, IssueKind, IssueStatus, MatchStatus
from clientregistry.store.models import MatchIssue

MAX_REASON_LENGTH = 1000
"""The longest reason kept with an action."""
SIZES_SECONDS = 5.0
_SIZES: weakref.WeakKeyDictionary[Engine, tuple[float, QueueCounts]] = weakref.WeakKeyDictionary()
_SIZES_LOCK = threading.Lock()


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


class Thresholds(BaseModel):
    rule_set: str
    potential: float
    auto: float


class IssueReview(BaseModel):
    """What a reviewer needs to decide one item: the pair, the engine's explanation of it,
    the thresholds, and where the queue goes next."""

    item: IssueItem
    record: RecordView = Field(description="The item's record, with its candidates")
    other: RecordSummary
    other_resource: dict[str, Any] = Field(description="The other record as the API serves it")
    pair: CandidateItem | None = Field(description="The other record scored against this one")
    thresholds: list[Thresholds]
    next_id: int | None = Field(description="The next open item of the same queue")
    open_in_queue: int


class ActionResult(BaseModel):
    action: links.ActionName
    record_id: str | None
    golden_id: str | None = Field(description="The record's golden record after the action")
    audit_event_id: int = Field(description="POST /admin/audit/{id}/revert undoes the action")
    detail: dict[str, Any]
    changes: Changes


# ----------------------------------------------------------------------------- reading


def queue_counts(context: RegistryContext, actor: Actor) -> QueueCounts:
    """How many items each review queue holds, and the age of the oldest."""
    with transaction(context.sessions, write=False) as session:
        counts = review.queue_counts(session)
    audit_read(context, actor, Reading("queue-read"))
    return counts


def queue_sizes(context: RegistryContext) -> QueueCounts:
    """The queue counts a user interface shows on every page (no demographics, not audited),
    read at most every :data:`SIZES_SECONDS` per process; :func:`forget_queue_sizes` after a
    decision."""
    now = time.monotonic()
    with _SIZES_LOCK:
        cached = _SIZES.get(context.engine)
    if cached is None or now - cached[0] > SIZES_SECONDS:
        with transaction(context.sessions, write=False) as session:
            cached = (now, review.queue_counts(session))
        with _SIZES_LOCK:
            _SIZES[context.engine] = cached
    return cached[1]


def forget_queue_sizes(context: RegistryContext) -> None:
    with _SIZES_LOCK:
        _SIZES.pop(context.engine, None)


def auto_queue(context: RegistryContext, actor: Actor, offset: int, limit: int) -> AutoPage:
    """Records the engine linked to others by itself, most recent first."""
    with transaction(context.sessions, write=False) as session:
        page = review.auto_queue(session, offset, limit)
    audit_read(context, actor, Reading("queue-read", detail={"queue": "auto"}))
    return page


def issue_queue(
    context: RegistryContext, actor: Actor, kind: IssueQueueKind, offset: int, limit: int
) -> IssuePage:
    """Open review items of one kind (potential matches or conflicts), oldest first."""
    with transaction(context.sessions, write=False) as session:
        page = review.issue_queue(session, kind, offset, limit)
    audit_read(context, actor, Reading("queue-read", detail={"queue": kind}))
    return page


def issue(context: RegistryContext, actor: Actor, issue_id: int) -> IssueItem:
    """One review item (open or resolved)."""
    with transaction(context.sessions, write=False) as session:
        found = session.get(MatchIssue, issue_id)
        if found is None:
            raise not_found(f"no review item {issue_id}", issue=issue_id)
        item = review.issue_items(session, [found])[0]
    audit_read(context, actor, Reading("issue-read", detail={"issue": issue_id}))
    return item


def next_issue(session: Session, kind: IssueKind, after: MatchIssue | None) -> int | None:
    """The open item of ``kind`` to review after ``after`` (oldest first), else the oldest."""
    where = (MatchIssue.status == IssueStatus.OPEN) & (MatchIssue.kind == kind)
    order = (MatchIssue.created_at, MatchIssue.id)
    if after is not None:
        later = (MatchIssue.created_at > after.created_at) | (
            (MatchIssue.created_at == after.created_at) & (MatchIssue.id > after.id)
        )
        found = session.scalar(select(MatchIssue.id).where(where, later).order_by(*order).limit(1))
        if found is not None:
            return int(found)
        where = where & (MatchIssue.id != after.id)
    first = session.scalar(select(MatchIssue.id).where(where).order_by(*order).limit(1))
    return None if first is None else int(first)


def issue_review(context: RegistryContext, actor: Actor, issue_id: int) -> IssueReview:
    """One review item with everything needed to decide it."""
    with transaction(context.sessions, write=False) as session:
        found = session.get(MatchIssue, issue_id)
        if found is None:
            raise not_found(f"no review item {issue_id}", issue=issue_id)
        item = review.issue_items(session, [found])[0]
        view = review.record_view(session, context, found.record_id)
        other = review.record_view(session, context, found.other_record_id)
        assert view is not None and other is not None
        pair = next((c for c in view.candidates if c.record.id == found.other_record_id), None)
        kind = IssueKind(found.kind)
        open_count = session.scalar(
            select(func.count())
            .select_from(MatchIssue)
            .where(MatchIssue.status == IssueStatus.OPEN, MatchIssue.kind == kind)
        )
        result = IssueReview(
            item=item,
            record=view,
            other=other.record,
            other_resource=other.resource,
            pair=pair,
            thresholds=[
                Thresholds(
                    rule_set=rs.name, potential=rs.potential_threshold, auto=rs.auto_threshold
                )
                for rs in context.matcher.rules.rule_sets
            ],
            next_id=next_issue(session, kind, found),
            open_in_queue=int(open_count or 0),
        )
    audit_read(context, actor, Reading("issue-read", detail={"issue": issue_id}))
    return result


def thresholds(context: RegistryContext) -> list[Thresholds]:
    """Each rule set's potential and automatic thresholds."""
    return [
        Thresholds(rule_set=rs.name, potential=rs.potential_threshold, auto=rs.auto_threshold)
        for rs in context.matcher.rules.rule_sets
    ]


def first_issue(context: RegistryContext, kind: IssueQueueKind) -> int | None:
    """The oldest open item of a queue (no demographics: not audited)."""
    with transaction(context.sessions, write=False) as session:
        return next_issue(session, IssueKind(kind), None)


def record(context: RegistryContext, actor: Actor, record_id: str) -> RecordView:
    """A source record with its golden record, linked records, link history, broken
    matches, open review items and candidates (score, decision, per-field explanation)."""
    with transaction(context.sessions, write=False) as session:
        view = review.record_view(session, context, record_id)
        if view is None:
            raise not_found(f"no source record Patient/{record_id}", record=record_id)
    audit_read(context, actor, Reading("review-read", entity=f"Patient/{record_id}"))
    return view


def dry_run(context: RegistryContext, actor: Actor, patient: Mapping[str, Any]) -> DryRun:
    """What submitting ``patient`` would do now (classification, candidates, why); nothing
    is stored."""
    with transaction(context.sessions, write=False) as session:
        result = review.dry_run(session, context, patient)
    reading = Reading(
        "dry-run",
        entity=f"Patient/{result.record_id}" if result.record_id else None,
        detail={"status": result.status.value, "golden": result.golden_id},
        action=AuditAction.EXECUTE,
    )
    audit_read(context, actor, reading)
    return result


# ----------------------------------------------------------------------------- acting


def act(
    context: RegistryContext,
    actor: Actor,
    action: Callable[[LinkEditor], ActionOutcome],
    *,
    reason: str | None = None,
) -> ActionResult:
    """Run one link action in a transaction and audit it with its change log (and the
    reason, if given)."""
    with transaction(context.sessions) as session:
        editor = LinkEditor(session, context, actor.username)
        outcome = action(editor)
        if reason and reason.strip():
            outcome.detail["reason"] = reason.strip()[:MAX_REASON_LENGTH]
        event = links.audit_outcome(
            session, outcome, agent=actor.username, source_address=actor.source_address
        )
        event_id = event.id
    forget_queue_sizes(context)
    return ActionResult(
        action=outcome.action,
        record_id=outcome.record_id,
        golden_id=outcome.golden_id,
        audit_event_id=event_id,
        detail=outcome.detail,
        changes=Changes.model_validate(outcome.changes.to_json()),
    )


def break_record(
    context: RegistryContext, actor: Actor, record_id: str, *, reason: str | None = None
) -> ActionResult:
    """Detach a record into a new golden record; it is never matched with the others of its
    old golden record again."""
    return act(context, actor, lambda e: links.break_record(e, record_id), reason=reason)


def unbreak(
    context: RegistryContext,
    actor: Actor,
    record_id: str,
    others: list[str] | None = None,
    *,
    reason: str | None = None,
) -> ActionResult:
    """Revert a break: forget the broken matches (all, or with ``others``) and match again."""
    return act(context, actor, lambda e: links.unbreak(e, record_id, others), reason=reason)


def join(
    context: RegistryContext,
    actor: Actor,
    record_id: str,
    *,
    golden_id: str | None = None,
    with_record: str | None = None,
    reason: str | None = None,
) -> ActionResult:
    """Link a record by hand to a golden record (given, or that of ``with_record``)."""
    return act(
        context,
        actor,
        lambda e: links.join(e, record_id, golden_id, with_record),
        reason=reason,
    )


def resolve(
    context: RegistryContext,
    actor: Actor,
    issue_id: int,
    resolution: Resolution,
    *,
    golden_id: str | None = None,
    record_id: str | None = None,
    reason: str | None = None,
) -> ActionResult:
    """Settle a review item (keep, move, new, not a match); a second decision on the same
    item is refused (409, saying who decided it and when)."""
    return act(
        context,
        actor,
        lambda e: links.resolve_issue(
            e, issue_id, resolution, golden_id=golden_id, record_id=record_id
        ),
        reason=reason,
    )


def confirm(
    context: RegistryContext, actor: Actor, record_id: str, *, reason: str | None = None
) -> ActionResult:
    """Confirm an automatic link (the record leaves the queue of links to confirm)."""
    return act(context, actor, lambda e: links.confirm_record(e, record_id), reason=reason)


def revert(
    context: RegistryContext, actor: Actor, event_id: int, *, reason: str | None = None
) -> ActionResult:
    """Undo a link action from its audit event (409 when something it changed has changed
    since)."""
    return act(context, actor, lambda e: links.revert_event(e, event_id), reason=reason)
