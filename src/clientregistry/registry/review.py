"""What a reviewer reads: the queues, one record with its candidates, a dry-run match.

The answers are pydantic models, so that the admin API documents them in its OpenAPI schema.

Queues
    ``potential`` and ``conflict`` are the open review items (``MatchIssue``) of that kind;
    ``auto`` lists records the engine linked to others by itself (match status ``auto``, not
    placed by a person), newest first. Each queue shows only its own kind.

Candidates and explanations
    A record's candidates are found and scored as a submission would find them (blocking
    index, term frequencies); each comes with the engine's per-field explanation
    (:meth:`~clientregistry.matching.scoring.Scorer.explain`, one entry per rule set).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from clientregistry.fhir.patient import internal_identifier
from clientregistry.matching.classify import Classification
from clientregistry.matching.features import Features
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.submit import (
    broken_with,
    find_matches,
    keep_golden,
    source_resource,
)
from clientregistry.store.blocking_index import DatabaseBlockingIndex
from clientregistry.store.enums import IssueKind, IssueStatus, LinkKind, MatchStatus
from clientregistry.store.models import GoldenRecord, Link, MatchIssue, SourceRecord

MAX_CANDIDATES_SHOWN = 50
IssueQueueKind = Literal["potential", "conflict"]
CandidateRole = Literal["auto", "conflict", "potential", "broken", "none"]


# ----------------------------------------------------------------------------- models


class RecordSummary(BaseModel):
    """A source record in a few words (enough to recognise a person)."""

    id: str
    golden_id: str | None
    client_system: str
    internal_id: str = Field(description="The submitting system's own id, as system|value")
    name: str | None
    birth_date: str | None
    gender: str | None
    match_status: MatchStatus
    human_adjudicated: bool
    version: int
    last_updated: datetime


class IssueItem(BaseModel):
    """One review item: a pair of records and why it needs a person."""

    id: int
    kind: IssueKind
    status: IssueStatus
    score: float | None
    created_at: datetime
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    record: RecordSummary
    other: RecordSummary


class IssuePage(BaseModel):
    kind: IssueQueueKind
    total: int
    offset: int
    limit: int
    items: list[IssueItem]


class AutoItem(BaseModel):
    """A record the engine linked by itself, with the decision that linked it."""

    record: RecordSummary
    golden_id: str | None
    members: int = Field(description="Source records in its golden record, itself included")
    score: float | None
    rule_set: str | None
    linked_at: datetime | None


class AutoPage(BaseModel):
    kind: Literal["auto"] = "auto"
    total: int
    offset: int
    limit: int
    items: list[AutoItem]


class QueueCounts(BaseModel):
    potential: int
    conflict: int
    auto: int
    oldest_potential: datetime | None = Field(
        default=None, description="When the oldest open potential match was queued"
    )
    oldest_conflict: datetime | None = Field(
        default=None, description="When the oldest open conflict was queued"
    )
    oldest_auto: datetime | None = Field(
        default=None, description="The oldest automatic link still to confirm"
    )


class FieldExplanation(BaseModel):
    field: str
    algorithm: str
    left: str
    right: str
    similarity: float | None
    agrees: bool | None
    level: str
    contribution: float


class RuleSetExplanation(BaseModel):
    """One rule set's verdict on a pair, field by field."""

    rule_set: int
    name: str
    score: float
    decision: Literal["auto", "potential", "none"]
    blocked_by: str | None = None
    fields: list[FieldExplanation]


class CandidateItem(BaseModel):
    """A stored record scored against the record (or Patient) under review."""

    record: RecordSummary
    golden_id: str | None
    score: float
    decision: Literal["auto", "potential", "none"]
    rule_set: str | None
    same_golden: bool = Field(description="Already in the same golden record")
    broken: bool = Field(description="Marked as not the same person: matching ignores it")
    role: CandidateRole = Field(description="What the classification made of it")
    explanation: list[RuleSetExplanation]


class LinkItem(BaseModel):
    golden_id: str
    kind: LinkKind
    score: float | None
    rule_set: str | None
    created_at: datetime


class GoldenView(BaseModel):
    id: str
    version: int
    active: bool
    replaced_by: str | None
    last_updated: datetime
    members: list[RecordSummary]


class RecordView(BaseModel):
    """Everything a reviewer needs about one source record."""

    record: RecordSummary
    resource: dict[str, Any] = Field(description="The record as the FHIR API serves it")
    golden: GoldenView | None
    linked: list[RecordSummary] = Field(description="Other records of its golden record")
    links: list[LinkItem] = Field(description="Link decisions, newest first")
    broken_with: list[RecordSummary]
    issues: list[IssueItem] = Field(description="Open review items involving the record")
    candidates: list[CandidateItem]
    candidates_capped: bool


class DryRun(BaseModel):
    """What submitting a Patient would do now, and why. Nothing was stored."""

    action: Literal["create", "update"]
    record_id: str | None = Field(description="The existing record an update would replace")
    human_adjudicated: bool
    status: MatchStatus
    golden_id: str | None = Field(description="The golden record it would get (None: new)")
    new_golden: bool
    reason: str
    candidates: list[CandidateItem]
    candidates_capped: bool


# ----------------------------------------------------------------------------- summaries


def person_name(resource: Mapping[str, Any]) -> str | None:
    """A Patient's first name as one line (its ``text``, or given names and family)."""
    names = resource.get("name")
    if not isinstance(names, list):
        return None
    for entry in names:
        if not isinstance(entry, Mapping):
            continue
        text = entry.get("text")
        if isinstance(text, str) and text.strip():
            return text.strip()
        given = entry.get("given")
        parts = [g for g in given if isinstance(g, str)] if isinstance(given, list) else []
        family = entry.get("family")
        if isinstance(family, str):
            parts.append(family)
        if parts:
            return " ".join(parts)
    return None


def _text(resource: Mapping[str, Any], key: str) -> str | None:
    value = resource.get(key)
    return value if isinstance(value, str) else None


def summary(record: SourceRecord) -> RecordSummary:
    resource = record.resource
    return RecordSummary(
        id=record.id,
        golden_id=record.golden_id,
        client_system=record.client_system,
        internal_id=f"{record.internal_system}|{record.internal_value}",
        name=person_name(resource),
        birth_date=_text(resource, "birthDate"),
        gender=_text(resource, "gender"),
        match_status=record.match_status,
        human_adjudicated=bool(record.human_adjudicated),
        version=record.version,
        last_updated=record.last_updated,
    )


def _records(session: Session, ids: Sequence[str]) -> dict[str, SourceRecord]:
    if not ids:
        return {}
    rows = session.scalars(select(SourceRecord).where(SourceRecord.id.in_(set(ids))))
    return {r.id: r for r in rows}


def issue_items(session: Session, issues: Sequence[MatchIssue]) -> list[IssueItem]:
    ids = [i.record_id for i in issues] + [i.other_record_id for i in issues]
    records = _records(session, ids)
    return [
        IssueItem(
            id=i.id,
            kind=i.kind,
            status=i.status,
            score=i.score,
            created_at=i.created_at,
            resolved_at=i.resolved_at,
            resolved_by=i.resolved_by,
            record=summary(records[i.record_id]),
            other=summary(records[i.other_record_id]),
        )
        for i in issues
    ]


# ----------------------------------------------------------------------------- queues


def _auto_filter() -> Any:
    return (SourceRecord.match_status == MatchStatus.AUTO) & SourceRecord.human_adjudicated.is_(
        False
    )


def queue_counts(session: Session) -> QueueCounts:
    """How many items each queue holds, and how old its oldest is."""
    rows = session.execute(
        select(MatchIssue.kind, func.count(), func.min(MatchIssue.created_at))
        .where(MatchIssue.status == IssueStatus.OPEN)
        .group_by(MatchIssue.kind)
    ).all()
    counts = {IssueKind(kind): (int(n), oldest) for kind, n, oldest in rows}
    auto, oldest_auto = session.execute(
        select(func.count(), func.min(SourceRecord.last_updated)).where(_auto_filter())
    ).one()
    potential = counts.get(IssueKind.POTENTIAL, (0, None))
    conflict = counts.get(IssueKind.CONFLICT, (0, None))
    return QueueCounts(
        potential=potential[0],
        conflict=conflict[0],
        auto=int(auto or 0),
        oldest_potential=aware_utc(potential[1]),
        oldest_conflict=aware_utc(conflict[1]),
        oldest_auto=aware_utc(oldest_auto),
    )


def aware_utc(moment: Any) -> datetime | None:
    """An aggregate's timestamp as an aware UTC datetime (``min()`` skips the column type:
    SQLite hands back text)."""
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    assert isinstance(moment, datetime)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def issue_queue(session: Session, kind: IssueQueueKind, offset: int, limit: int) -> IssuePage:
    """Open review items of one kind, oldest first (first come, first reviewed)."""
    where = (MatchIssue.status == IssueStatus.OPEN) & (MatchIssue.kind == IssueKind(kind))
    total = session.scalar(select(func.count()).select_from(MatchIssue).where(where))
    issues = session.scalars(
        select(MatchIssue)
        .where(where)
        .order_by(MatchIssue.created_at, MatchIssue.id)
        .offset(offset)
        .limit(limit)
    ).all()
    return IssuePage(
        kind=kind,
        total=int(total or 0),
        offset=offset,
        limit=limit,
        items=issue_items(session, issues),
    )


def auto_queue(session: Session, offset: int, limit: int) -> AutoPage:
    """Records the engine linked by itself, most recently updated first."""
    total = session.scalar(select(func.count()).select_from(SourceRecord).where(_auto_filter()))
    records = session.scalars(
        select(SourceRecord)
        .where(_auto_filter())
        .order_by(SourceRecord.last_updated.desc(), SourceRecord.id)
        .offset(offset)
        .limit(limit)
    ).all()
    ids = [record.id for record in records]
    latest: dict[str, Link] = {}
    # Each record's newest link and each person's size, for the whole page at once (a query
    # per record cost ~2 ms of statement building each: 200 ms a page).
    for newest in session.scalars(
        select(Link)
        .where(Link.source_record_id.in_(ids))
        .order_by(Link.created_at.desc(), Link.id.desc())
    ):
        latest.setdefault(newest.source_record_id, newest)
    goldens = sorted({r.golden_id for r in records if r.golden_id is not None})
    sizes = dict(
        session.execute(
            select(SourceRecord.golden_id, func.count())
            .where(SourceRecord.golden_id.in_(goldens))
            .group_by(SourceRecord.golden_id)
        ).all()
    )
    items = []
    for record in records:
        link = latest.get(record.id)
        items.append(
            AutoItem(
                record=summary(record),
                golden_id=record.golden_id,
                members=int(sizes.get(record.golden_id, 0)),
                score=link.score if link else None,
                rule_set=link.rule_set if link else None,
                linked_at=link.created_at if link else None,
            )
        )
    return AutoPage(total=int(total or 0), offset=offset, limit=limit, items=items)


# ----------------------------------------------------------------------------- candidates


def _explained(
    context: RegistryContext,
    features: Features,
    others: Sequence[SourceRecord],
    *,
    golden_id: str | None,
    broken: set[str],
    roles: Mapping[str, CandidateRole],
) -> list[CandidateItem]:
    scorer = context.matcher.scorer
    tf = context.term_counts.tf
    items: list[tuple[float, CandidateItem]] = []
    for other in others:
        same = golden_id is not None and other.golden_id == golden_id
        fast = scorer.score(features, other.features, tf)
        interesting = fast is not None and fast.decision != "none"
        if not (interesting or same or other.id in broken or other.id in roles):
            continue
        results = scorer.explain(features, other.features, tf)
        best = scorer.best(results)
        role: CandidateRole = "broken" if other.id in broken else roles.get(other.id, "none")
        strength = float("-inf")
        if best is not None:
            strength = best.score - context.matcher.rules.rule_sets[best.rule_set].auto_threshold
        item = CandidateItem(
            record=summary(other),
            golden_id=other.golden_id,
            score=0.0 if best is None else round(best.score, 4),
            decision="none" if best is None else best.decision,
            rule_set=None if best is None else best.name,
            same_golden=same,
            broken=other.id in broken,
            role=role,
            explanation=[RuleSetExplanation.model_validate(r.to_json()) for r in results],
        )
        items.append((strength, item))
    items.sort(key=lambda pair: -pair[0])
    return [item for _, item in items[:MAX_CANDIDATES_SHOWN]]


def _candidate_records(
    session: Session, context: RegistryContext, features: Features, exclude: str | None
) -> tuple[list[SourceRecord], bool]:
    keys = context.matcher.blocker.keys(features)
    found = DatabaseBlockingIndex(session).candidates(keys, context.matcher.candidate_limit + 1)
    ids = [c for c in found.ids if c != exclude]
    records = _records(session, ids)
    return [records[i] for i in ids if i in records], found.capped


def _roles(result: Classification) -> dict[str, CandidateRole]:
    roles: dict[str, CandidateRole] = {}
    groups: tuple[tuple[CandidateRole, list[Any]], ...] = (
        ("potential", result.potential),
        ("conflict", result.conflicts),
        ("auto", result.auto),
    )
    for role, items in groups:
        for item in items:
            roles[str(item.record_id)] = role
    return roles


def _classify(
    session: Session,
    context: RegistryContext,
    record_id: str | None,
    features: Features,
    current_golden: str | None,
    broken: set[str],
) -> Classification:
    keys = context.matcher.blocker.keys(features)
    # The same candidate search and classification as a submission (one source of truth).
    return find_matches(session, context, record_id or "", features, keys, current_golden, broken)


def record_view(session: Session, context: RegistryContext, record_id: str) -> RecordView | None:
    """One record: its golden record and companions, link history, broken matches, open
    items and candidates with explanations; None when there is no such record."""
    record = session.get(SourceRecord, record_id)
    if record is None:
        return None
    broken = broken_with(session, record.id)
    golden = session.get(GoldenRecord, record.golden_id) if record.golden_id else None
    members = list(
        session.scalars(
            select(SourceRecord)
            .where(SourceRecord.golden_id == record.golden_id)
            .order_by(SourceRecord.id)
        )
        if record.golden_id
        else []
    )
    links = session.scalars(
        select(Link)
        .where(Link.source_record_id == record.id)
        .order_by(Link.created_at.desc(), Link.id.desc())
    ).all()
    mine = (MatchIssue.record_id == record.id) | (MatchIssue.other_record_id == record.id)
    issues = session.scalars(
        select(MatchIssue)
        .where(MatchIssue.status == IssueStatus.OPEN, mine)
        .order_by(MatchIssue.id)
    ).all()
    others, capped = _candidate_records(session, context, record.features, record.id)
    result = _classify(session, context, record.id, record.features, record.golden_id, broken)
    if record.human_adjudicated and record.golden_id is not None:
        result = keep_golden(result, record.golden_id)
    known = {o.id for o in others}
    others += [m for m in members if m.id != record.id and m.id not in known]
    candidates = _explained(
        context,
        record.features,
        others,
        golden_id=record.golden_id,
        broken=broken,
        roles=_roles(result),
    )
    client = context.settings.systems.get(record.client_system)
    broken_records = _records(session, sorted(broken))
    return RecordView(
        record=summary(record),
        resource=source_resource(record, client, broken),
        golden=None
        if golden is None
        else GoldenView(
            id=golden.id,
            version=golden.version,
            active=golden.active,
            replaced_by=golden.replaced_by,
            last_updated=golden.last_updated,
            members=[summary(m) for m in members],
        ),
        linked=[summary(m) for m in members if m.id != record.id],
        links=[
            LinkItem(
                golden_id=link.golden_id,
                kind=link.kind,
                score=link.score,
                rule_set=link.rule_set,
                created_at=link.created_at,
            )
            for link in links
        ],
        broken_with=[summary(broken_records[b]) for b in sorted(broken) if b in broken_records],
        issues=issue_items(session, issues),
        candidates=candidates,
        candidates_capped=capped,
    )


# ----------------------------------------------------------------------------- dry run


def _status(result: Classification) -> MatchStatus:
    if result.conflicts:
        return MatchStatus.CONFLICT
    if result.potential:
        return MatchStatus.POTENTIAL
    if result.auto:
        return MatchStatus.AUTO
    return MatchStatus.NONE


def dry_run(session: Session, context: RegistryContext, patient: Mapping[str, Any]) -> DryRun:
    """Match ``patient`` as a submission would, without storing anything."""
    matcher = context.matcher
    features = matcher.extractor.extract(patient)
    found = internal_identifier(patient, context.settings.record_id_systems)
    existing = None
    if found is not None:
        system, value = found
        existing = session.scalars(
            select(SourceRecord).where(
                SourceRecord.internal_system == system, SourceRecord.internal_value == value
            )
        ).one_or_none()
    record_id = existing.id if existing else None
    old_golden = existing.golden_id if existing else None
    broken = broken_with(session, existing.id) if existing else set()
    adjudicated = bool(existing and existing.human_adjudicated and old_golden)
    result = _classify(session, context, record_id, features, old_golden, broken)
    if adjudicated and old_golden is not None:
        result = keep_golden(result, old_golden)
    golden_id = None if result.golden_id is None else str(result.golden_id)
    alone = False
    if golden_id is None and existing is not None and old_golden is not None:
        alone = (
            session.scalar(
                select(SourceRecord.id)
                .where(SourceRecord.golden_id == old_golden, SourceRecord.id != existing.id)
                .limit(1)
            )
            is None
        )
        if alone:
            golden_id = old_golden
    others, capped = _candidate_records(session, context, features, record_id)
    candidates = _explained(
        context, features, others, golden_id=golden_id, broken=broken, roles=_roles(result)
    )
    status = _status(result)
    return DryRun(
        action="update" if existing else "create",
        record_id=record_id,
        human_adjudicated=adjudicated,
        status=status,
        golden_id=golden_id,
        new_golden=golden_id is None,
        reason=_reason(result, adjudicated, alone, broken),
        candidates=candidates,
        candidates_capped=capped,
    )


def _reason(result: Classification, adjudicated: bool, alone: bool, broken: set[str]) -> str:
    parts = []
    if adjudicated:
        parts.append("a person placed this record, so it stays in its golden record")
    if result.auto:
        best = result.auto[0]
        parts.append(
            f"auto match with Patient/{best.record_id} (score {best.score.score:.4g}) "
            f"decides golden record Patient/{result.golden_id}"
        )
    elif alone:
        parts.append("no auto match; it keeps the golden record it has alone")
    else:
        parts.append("no auto match; it would get a new golden record")
    if result.conflicts:
        parts.append(f"{len(result.conflicts)} auto match(es) under other golden records")
    if result.potential:
        parts.append(f"{len(result.potential)} potential match(es) for review")
    if broken:
        parts.append(f"{len(broken)} record(s) ignored as broken matches")
    return "; ".join(parts)
