"""The dashboard's figures: records and persons per source system, submissions and their
outcomes per day, a histogram of match scores with the thresholds, the review queues' sizes
and ages, and reviewers' decisions per day.

All aggregates are computed in the database (days in UTC). Submissions and outcomes come from
the audit trail (each submission's event names its system and how it was matched: ``auto``,
``potential``, ``conflict`` or ``none`` — a new person); scores from the automatic links
(:class:`~clientregistry.store.models.Link`) and the review items; decisions from the audit
events of people's link actions. The answer is kept for :data:`CACHE_SECONDS` in each
process, so that a dashboard reloaded by several people costs one computation.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from pydantic import BaseModel, Field
from sqlalchemy import JSON, ColumnElement, Float, Integer, case, cast, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from clientregistry.registry.actor import Actor, Reading, Refused, audit_read
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.links import REVERTIBLE
from clientregistry.registry.review import aware_utc
from clientregistry.store.db import transaction
from clientregistry.store.dialect import dialect_name
from clientregistry.store.enums import AgentKind, IssueKind, IssueStatus, LinkKind
from clientregistry.store.models import AuditEvent, GoldenRecord, Link, MatchIssue, SourceRecord

CACHE_SECONDS: Final = 15.0
MAX_DAYS: Final = 366
BINS: Final = 24
OUTCOMES: Final = ("auto", "potential", "conflict", "none")
AGE_BUCKETS: Final = ((1, "under-1-day"), (7, "1-7-days"), (30, "7-30-days"))
"""Upper bounds (days) of the queue-age buckets; older items are ``over-30-days``."""


class SystemCount(BaseModel):
    system: str
    records: int
    persons: int = Field(description="Persons holding at least one record of the system")


class DayCount(BaseModel):
    day: date
    series: str
    count: int


class ScoreBin(BaseModel):
    start: float
    end: float
    auto: int = Field(description="Automatic links scored in the bin")
    review: int = Field(description="Potential matches and conflicts scored in the bin")


class ScoreHistogram(BaseModel):
    rule_set: str
    potential_threshold: float
    auto_threshold: float
    bins: list[ScoreBin]


class QueueAge(BaseModel):
    queue: str
    count: int
    oldest: datetime | None
    ages: dict[str, int] = Field(description="Open items by age")


class Statistics(BaseModel):
    generated_at: datetime
    days: int
    since: date
    records: int
    persons: int
    per_system: list[SystemCount]
    submissions: list[DayCount] = Field(description="Per day and client system")
    outcomes: list[DayCount] = Field(description="Per day: auto, potential, conflict, none")
    scores: ScoreHistogram
    queues: list[QueueAge]
    decisions: list[DayCount] = Field(description="Reviewers' actions per day and kind")


# ----------------------------------------------------------------------------- SQL helpers


def _day(session: Session, column: Any) -> ColumnElement[str]:
    """A timestamp's UTC day as ``YYYY-MM-DD`` text."""
    if dialect_name(session) == "sqlite":
        return func.substr(column, 1, 10)  # stored as 'YYYY-MM-DD HH:MM:SS...' in UTC
    return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")


def _match_of(session: Session) -> ColumnElement[str]:
    """A submission event's match status (``detail`` JSON text, key ``match``)."""
    if dialect_name(session) == "sqlite":
        return func.json_extract(AuditEvent.detail, "$.match")
    return func.json_extract_path_text(cast(AuditEvent.detail, JSON), "match")


def _days(rows: Any) -> list[DayCount]:
    return [
        DayCount(day=date.fromisoformat(day), series=str(series), count=int(n))
        for day, series, n in rows
        if day and series is not None
    ]


# ----------------------------------------------------------------------------- parts


def _per_system(session: Session) -> list[SystemCount]:
    rows = session.execute(
        select(
            SourceRecord.client_system,
            func.count(),
            func.count(SourceRecord.golden_id.distinct()),
        )
        .group_by(SourceRecord.client_system)
        .order_by(SourceRecord.client_system)
    ).all()
    return [SystemCount(system=s, records=int(r), persons=int(p)) for s, r, p in rows]


def _submissions(session: Session, since: datetime) -> tuple[list[DayCount], list[DayCount]]:
    day = _day(session, AuditEvent.recorded)
    submitted = (
        AuditEvent.recorded >= since,
        AuditEvent.agent_kind == AgentKind.SYSTEM,
        AuditEvent.event_type.in_(("create", "update")),
        AuditEvent.outcome == 0,
    )
    per_system = session.execute(
        select(day, AuditEvent.agent, func.count())
        .where(*submitted)
        .group_by(day, AuditEvent.agent)
    ).all()
    match = _match_of(session)
    outcomes = session.execute(
        select(day, match, func.count()).where(*submitted).group_by(day, match)
    ).all()
    return sorted(_days(per_system), key=_order), sorted(_days(outcomes), key=_order)


def _order(item: DayCount) -> tuple[date, str]:
    return item.day, item.series


def _decisions(session: Session, since: datetime) -> list[DayCount]:
    day = _day(session, AuditEvent.recorded)
    rows = session.execute(
        select(day, AuditEvent.event_type, func.count())
        .where(
            AuditEvent.recorded >= since,
            AuditEvent.agent_kind == AgentKind.USER,
            AuditEvent.event_type.in_(sorted(REVERTIBLE)),
            AuditEvent.outcome == 0,
        )
        .group_by(day, AuditEvent.event_type)
    ).all()
    return sorted(_days(rows), key=_order)


def _main_rule_set(context: RegistryContext, session: Session) -> Any:
    """The rule set most automatic links name (the first one when none does)."""
    rules = context.matcher.rules.rule_sets
    named = session.execute(
        select(Link.rule_set, func.count())
        .where(Link.kind == LinkKind.AUTO, Link.rule_set.is_not(None))
        .group_by(Link.rule_set)
        .order_by(func.count().desc())
        .limit(1)
    ).first()
    if named is not None:
        for rule_set in rules:
            if rule_set.name == named[0]:
                return rule_set
    return rules[0]


def _histogram(context: RegistryContext, session: Session) -> ScoreHistogram:
    rule_set = _main_rule_set(context, session)
    auto = (
        Link.kind == LinkKind.AUTO,
        Link.score.is_not(None),
        Link.rule_set == rule_set.name,
    )
    review = (MatchIssue.score.is_not(None),)
    bounds = [
        session.execute(select(func.min(Link.score), func.max(Link.score)).where(*auto)).one(),
        session.execute(
            select(func.min(MatchIssue.score), func.max(MatchIssue.score)).where(*review)
        ).one(),
    ]
    values = [float(v) for pair in bounds for v in pair if v is not None]
    values += [rule_set.potential_threshold, rule_set.auto_threshold]
    low, high = math.floor(min(values)) - 1, math.ceil(max(values)) + 1
    width = (high - low) / BINS
    counts = {i: [0, 0] for i in range(BINS)}
    for slot, column, where in ((0, Link.score, auto), (1, MatchIssue.score, review)):
        index = cast((cast(column, Float) - low) / width, Integer)
        table = Link if slot == 0 else MatchIssue
        rows = session.execute(
            select(index, func.count()).select_from(table).where(*where).group_by(index)
        ).all()
        for i, n in rows:
            counts[min(max(int(i), 0), BINS - 1)][slot] += int(n)
    return ScoreHistogram(
        rule_set=rule_set.name,
        potential_threshold=rule_set.potential_threshold,
        auto_threshold=rule_set.auto_threshold,
        bins=[
            ScoreBin(
                start=round(low + i * width, 3),
                end=round(low + (i + 1) * width, 3),
                auto=counts[i][0],
                review=counts[i][1],
            )
            for i in range(BINS)
        ],
    )


def _queues(session: Session, now: datetime) -> list[QueueAge]:
    ages = [
        func.sum(case((MatchIssue.created_at >= now - timedelta(days=d), 1), else_=0))
        for d, _ in AGE_BUCKETS
    ]
    rows = session.execute(
        select(MatchIssue.kind, func.count(), func.min(MatchIssue.created_at), *ages)
        .where(MatchIssue.status == IssueStatus.OPEN)
        .group_by(MatchIssue.kind)
    ).all()
    found = {IssueKind(row[0]): row for row in rows}
    out = []
    for kind in (IssueKind.POTENTIAL, IssueKind.CONFLICT):
        row = found.get(kind)
        count = int(row[1]) if row else 0
        newer = [int(v or 0) for v in row[3:]] if row else [0] * len(AGE_BUCKETS)
        buckets: dict[str, int] = {}
        previous = 0
        for (_, name), within in zip(AGE_BUCKETS, newer, strict=True):
            buckets[name] = within - previous
            previous = within
        buckets["over-30-days"] = count - previous
        out.append(
            QueueAge(
                queue=kind.value,
                count=count,
                oldest=aware_utc(row[2] if row else None),
                ages=buckets,
            )
        )
    return out


# ----------------------------------------------------------------------------- the use case

_CACHE: weakref.WeakKeyDictionary[Engine, dict[int, tuple[float, Statistics]]]
_CACHE = weakref.WeakKeyDictionary()
"""Per database (engine) and number of days: when computed, and the figures."""
_CACHE_LOCK = threading.Lock()


def compute(context: RegistryContext, days: int, *, now: datetime | None = None) -> Statistics:
    """The figures, computed now (no cache, no audit)."""
    moment = now or datetime.now(UTC)
    start = datetime.combine(moment.date() - timedelta(days=days - 1), datetime.min.time(), UTC)
    with transaction(context.sessions, write=False) as session:
        per_system = _per_system(session)
        persons = session.scalar(
            select(func.count()).select_from(GoldenRecord).where(GoldenRecord.active.is_(True))
        )
        submissions, outcomes = _submissions(session, start)
        return Statistics(
            generated_at=moment,
            days=days,
            since=start.date(),
            records=sum(s.records for s in per_system),
            persons=int(persons or 0),
            per_system=per_system,
            submissions=submissions,
            outcomes=outcomes,
            scores=_histogram(context, session),
            queues=_queues(session, moment),
            decisions=_decisions(session, start),
        )


def statistics(context: RegistryContext, actor: Actor, days: int = 30) -> Statistics:
    """The dashboard's figures over the last ``days`` days (at most :data:`MAX_DAYS`),
    computed at most every :data:`CACHE_SECONDS` per process."""
    if not 1 <= days <= MAX_DAYS:
        raise Refused(400, f"days: from 1 to {MAX_DAYS}", code="bad-days")
    now = time.monotonic()
    with _CACHE_LOCK:
        cached = _CACHE.get(context.engine, {}).get(days)
    if cached is None or now - cached[0] > CACHE_SECONDS:
        cached = (now, compute(context, days))
        with _CACHE_LOCK:
            _CACHE.setdefault(context.engine, {})[days] = cached
    audit_read(context, actor, Reading("statistics-read", detail={"days": days}))
    return cached[1]
