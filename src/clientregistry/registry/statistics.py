"""The dashboard's figures: records and persons per source system, submissions and their
outcomes per day, a histogram of match scores with the thresholds, the review queues' sizes
and ages, and reviewers' decisions per day.

All aggregates are computed in the database (days in UTC). Submissions and outcomes come from
the audit trail (each submission's event names its system and how it was matched: ``auto``,
``potential``, ``conflict`` or ``none`` — a new person); scores from the automatic links
(:class:`~clientregistry.store.models.Link`) and the review items; decisions from the audit
events of people's link actions.

What is kept, and when it is computed again (per process and database):

* **The trail's counts** (submissions and outcomes per day and system, decisions per day) are
  read from the audit trail incrementally (:class:`TrailCounts`): only the events chained
  since the last reading (``chain_seq`` above the last one read). The trail is append-only
  and its links are numbered in commit order without gaps (:mod:`~clientregistry.store.
  audit_chain`), so a count once made never changes and no event is missed: nothing to
  invalidate. Any period is a filter of the same counts.
* **The registry's figures** (records and persons per system, scores, queues) are computed
  whole (:class:`RegistryFigures`, scans that grow with the registry: seconds at 100,000
  persons) and kept; once they are :data:`CACHE_SECONDS` old the next request answers with
  them and a thread computes them again. Only the first computation of a process is waited
  for, and any page of the web UI starts it in the background (:func:`warm`).
* **A period's answer** (:class:`Statistics`) is put together from both, kept, and refreshed
  in the background when stale, as the registry's figures are: a dashboard reloaded by
  several people costs one computation, and a period not asked for yet costs a reading of
  the new events only.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
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

log = logging.getLogger(__name__)

CACHE_SECONDS: Final = 15.0
DEFAULT_DAYS: Final = 30
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


_Key = tuple[str, str]
"""A day (``YYYY-MM-DD``, UTC) and a series."""


@dataclass
class TrailCounts:
    """Counts per day of the audit trail's events up to link ``seq`` of its chain: each
    client system's successful submissions, their outcomes, and reviewers' actions."""

    seq: int = 0
    """The last link of the chain counted."""
    unchained: int = 0
    """The last event outside the chain counted (its id)."""
    submissions: Counter[_Key] = field(default_factory=Counter)
    outcomes: Counter[_Key] = field(default_factory=Counter)
    decisions: Counter[_Key] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def catch_up(self, session: Session) -> None:
        """Count the events chained since the last call (all of them the first time), and
        any event kept outside the chain (only when its head row was deleted) by id."""
        with self.lock:
            last = session.scalar(select(func.max(AuditEvent.chain_seq)))
            if last is not None and int(last) > self.seq:
                self._count(session, AuditEvent.chain_seq > self.seq, AuditEvent.chain_seq <= last)
                self.seq = int(last)
            outside = AuditEvent.chain_seq.is_(None)
            newest = session.scalar(select(func.max(AuditEvent.id)).where(outside))
            if newest is not None and int(newest) > self.unchained:
                self._count(
                    session, outside, AuditEvent.id > self.unchained, AuditEvent.id <= newest
                )
                self.unchained = int(newest)

    def _count(self, session: Session, *new: ColumnElement[bool]) -> None:
        day = _day(session, AuditEvent.recorded)
        # The event type as an expression, not the column: the new events' range is then the
        # only index to read (SQLite, without statistics, would take the event type's index
        # and read every submission ever made).
        kind = AuditEvent.event_type.concat("")
        submitted = (
            *new,
            AuditEvent.agent_kind == AgentKind.SYSTEM,
            kind.in_(("create", "update")),
            AuditEvent.outcome == 0,
        )
        decided = (
            *new,
            AuditEvent.agent_kind == AgentKind.USER,
            kind.in_(sorted(REVERTIBLE)),
            AuditEvent.outcome == 0,
        )
        for counter, series, where in (
            (self.submissions, AuditEvent.agent, submitted),
            (self.outcomes, _match_of(session), submitted),
            (self.decisions, AuditEvent.event_type, decided),
        ):
            rows = session.execute(
                select(day, series, func.count()).where(*where).group_by(day, series)
            )
            for on, name, n in rows:
                if on and name is not None:
                    counter[(str(on), str(name))] += int(n)

    def since(self, start: date) -> tuple[list[DayCount], list[DayCount], list[DayCount]]:
        """Submissions, outcomes and decisions of the days from ``start``."""
        with self.lock:
            return tuple(  # type: ignore[return-value]
                sorted(
                    (
                        DayCount(day=date.fromisoformat(on), series=name, count=n)
                        for (on, name), n in counter.items()
                        if on >= start.isoformat()
                    ),
                    key=_order,
                )
                for counter in (self.submissions, self.outcomes, self.decisions)
            )


def _order(item: DayCount) -> tuple[date, str]:
    return item.day, item.series


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


@dataclass(frozen=True, slots=True)
class RegistryFigures:
    """What the dashboard shows of the registry as it is now (no period)."""

    generated_at: datetime
    per_system: list[SystemCount]
    persons: int
    scores: ScoreHistogram
    queues: list[QueueAge]


def _registry_figures(context: RegistryContext, session: Session, now: datetime) -> RegistryFigures:
    persons = session.scalar(
        select(func.count()).select_from(GoldenRecord).where(GoldenRecord.active.is_(True))
    )
    return RegistryFigures(
        generated_at=now,
        per_system=_per_system(session),
        persons=int(persons or 0),
        scores=_histogram(context, session),
        queues=_queues(session, now),
    )


def _assemble(figures: RegistryFigures, trail: TrailCounts, days: int) -> Statistics:
    start = figures.generated_at.date() - timedelta(days=days - 1)
    submissions, outcomes, decisions = trail.since(start)
    return Statistics(
        generated_at=figures.generated_at,
        days=days,
        since=start,
        records=sum(s.records for s in figures.per_system),
        persons=figures.persons,
        per_system=figures.per_system,
        submissions=submissions,
        outcomes=outcomes,
        scores=figures.scores,
        queues=figures.queues,
        decisions=decisions,
    )


def compute(context: RegistryContext, days: int, *, now: datetime | None = None) -> Statistics:
    """The figures, computed now from scratch (no cache, no audit)."""
    moment = now or datetime.now(UTC)
    trail = TrailCounts()
    with transaction(context.sessions, write=False) as session:
        figures = _registry_figures(context, session, moment)
        trail.catch_up(session)
    return _assemble(figures, trail, days)


@dataclass
class _Kept:
    """One database's kept figures (in this process)."""

    trail: TrailCounts = field(default_factory=TrailCounts)
    figures: tuple[float, RegistryFigures] | None = None
    periods: dict[int, tuple[float, Statistics]] = field(default_factory=dict)


_KEPT: weakref.WeakKeyDictionary[Engine, _Kept] = weakref.WeakKeyDictionary()
_KEPT_LOCK = threading.Lock()
_FIRST = threading.Lock()
"""Held while a process computes its first registry figures (others wait for them)."""


def _kept(context: RegistryContext) -> _Kept:
    with _KEPT_LOCK:
        return _KEPT.setdefault(context.engine, _Kept())


def statistics(context: RegistryContext, actor: Actor, days: int = 30) -> Statistics:
    """The dashboard's figures over the last ``days`` days (at most :data:`MAX_DAYS`).

    Answered from what is kept (see the module's docstring): figures older than
    :data:`CACHE_SECONDS` are answered while a thread computes new ones for the next request
    (their ``generated_at`` says how old they are); only the first request of a process
    waits for the registry's figures, and the first for a period reads the trail's new
    events."""
    if not 1 <= days <= MAX_DAYS:
        raise Refused(400, f"days: from 1 to {MAX_DAYS}", code="bad-days")
    kept = _kept(context)
    with _KEPT_LOCK:
        cached = kept.periods.get(days)
    if cached is None:
        cached = _period(context, kept, days)
    elif time.monotonic() - cached[0] > CACHE_SECONDS:
        _refresh_in_background(context, days)
    audit_read(context, actor, Reading("statistics-read", detail={"days": days}))
    return cached[1]


def _period(context: RegistryContext, kept: _Kept, days: int) -> tuple[float, Statistics]:
    """A period asked for the first time: from the kept registry figures (computed if there
    are none yet, refreshed in the background if stale) and the trail's counts."""
    with _KEPT_LOCK:
        figures = kept.figures
    if figures is None:
        with _FIRST:  # one computation, however many requests wait for it
            with _KEPT_LOCK:
                figures = kept.figures
            if figures is None:
                figures = _refresh_figures(context, kept)
    elif time.monotonic() - figures[0] > CACHE_SECONDS:
        _refresh_in_background(context, days)
    with transaction(context.sessions, write=False) as session:
        kept.trail.catch_up(session)
    answer = (figures[0], _assemble(figures[1], kept.trail, days))
    with _KEPT_LOCK:
        kept.periods[days] = answer
    return answer


def _refresh_figures(context: RegistryContext, kept: _Kept) -> tuple[float, RegistryFigures]:
    started = time.monotonic()
    with transaction(context.sessions, write=False) as session:
        fresh = (started, _registry_figures(context, session, datetime.now(UTC)))
    with _KEPT_LOCK:
        kept.figures = fresh
    return fresh


def _refresh(context: RegistryContext, days: int) -> None:
    """Compute the registry's figures again (unless another period's refresh just did) and
    put the period's answer together anew."""
    kept = _kept(context)
    with _KEPT_LOCK:
        figures = kept.figures
    if figures is None or time.monotonic() - figures[0] > CACHE_SECONDS:
        figures = _refresh_figures(context, kept)
    with transaction(context.sessions, write=False) as session:
        kept.trail.catch_up(session)
    answer = (figures[0], _assemble(figures[1], kept.trail, days))
    with _KEPT_LOCK:
        kept.periods[days] = answer


def warm(context: RegistryContext) -> None:
    """Start computing this process's first figures in a thread, unless there are some (a
    page of the web UI calls it: by the time someone has signed in, the dashboard is ready)."""
    kept = _kept(context)
    with _KEPT_LOCK:
        if kept.figures is not None or kept.periods:
            return
    _in_background(context, DEFAULT_DAYS, lambda: _period(context, kept, DEFAULT_DAYS))


_REFRESHING: set[tuple[int, int]] = set()


def _refresh_in_background(context: RegistryContext, days: int) -> None:
    """Compute the figures again in a thread, unless one is at it already."""
    _in_background(context, days, lambda: _refresh(context, days))


def _in_background(context: RegistryContext, days: int, work: Callable[[], object]) -> None:
    key = (id(context.engine), days)
    with _KEPT_LOCK:
        if key in _REFRESHING:
            return
        _REFRESHING.add(key)

    def run() -> None:
        try:
            work()
        except Exception:  # the next request tries again; this one keeps the old figures
            log.exception("could not compute the dashboard's figures")
        finally:
            with _KEPT_LOCK:
                _REFRESHING.discard(key)

    threading.Thread(target=run, name="statistics", daemon=True).start()
