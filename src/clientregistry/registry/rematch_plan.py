"""Matching every record of the registry again under some decision rules, and what that
would change: the plan a re-match's dry run reports and its application carries out.

The records are read from the database and matched by the batch deduplication pipeline
(:mod:`clientregistry.batch.pipeline`: a reader process extracts features and blocks while
this one classifies), each against those before it, as the registry receives submissions,
with the registry's classification (conflicts stay apart) and the decisions people made:

* a record a person placed (``human_adjudicated``: joined, kept, moved) stays in its golden
  record; such records are read first, so that the persons people confirmed are there for
  every other record to match;
* two records known not to be the same person (a break, "not a match") never end up
  together: neither is a candidate of the other, nor of a person holding the other;
* a pair a person resolved in the review queue is not queued again;
* a record joins a person only if its records do not reject it
  (:mod:`~clientregistry.matching.cannot_link`), as a submission does.

The persons found keep the golden records they hold most records of (a confirmed person its
own); the others get new ones. :func:`plan_changes` compares that with the registry: every
record whose golden record, match status or review items change, with counts (persons
merged and split, records moving, review items opened and closed).
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from clientregistry.batch.pipeline import Prepared, prepare_in_background
from clientregistry.batch.readers import CsvMapping, ReadResult, SourceRecord
from clientregistry.errors import InvalidRecord
from clientregistry.matching.cannot_link import consistent
from clientregistry.matching.classify import Candidate, Classification, classify
from clientregistry.matching.matcher import Matcher
from clientregistry.matching.term_frequency import TermCounts
from clientregistry.registry.rules_in_force import MatcherSpec
from clientregistry.registry.submit import keep_golden, match_status
from clientregistry.store.db import create_engine_for
from clientregistry.store.enums import IssueKind, IssueStatus, MatchStatus
from clientregistry.store.models import BrokenMatch, MatchIssue, new_id
from clientregistry.store.models import SourceRecord as StoredRecord

REMATCH_ACTOR_PREFIX = "rematch:"
"""``resolved_by`` of review items a re-match closed (not a person's decision)."""


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class RegistryRecords:
    """Every record of the registry at ``url``, for the pipeline's reader process: the
    records people placed first, then the others, each in id order (creation order), read in
    one snapshot, each with ``(version, golden record, placed by a person, match status)``."""

    url: str

    def read(self) -> Iterator[ReadResult]:
        engine = create_engine_for(self.url)
        try:
            yield from _read(engine)
        finally:
            engine.dispose()


def _read(engine: Engine) -> Iterator[ReadResult]:
    with engine.connect() as connection, connection.begin():
        if engine.dialect.name == "postgresql":
            connection.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        for placed in (True, False):
            rows = connection.execution_options(yield_per=2000).execute(
                select(
                    StoredRecord.id,
                    StoredRecord.resource,
                    StoredRecord.version,
                    StoredRecord.golden_id,
                    StoredRecord.match_status,
                )
                .where(StoredRecord.human_adjudicated.is_(placed))
                .order_by(StoredRecord.id)
            )
            for record_id, resource, version, golden, status in rows:
                state = (version, golden, placed, MatchStatus(status).value)
                body = resource if isinstance(resource, dict) else {}
                yield SourceRecord(None, record_id, body, None, state)


# ----------------------------------------------------------------------------- the replay


@dataclass(slots=True)
class Placed:
    """Where the replay put one record."""

    record_id: str
    version: int
    golden_before: str | None
    status_before: MatchStatus
    cluster: int
    """The position of the record that made the person (or, for a confirmed person, of its
    first record)."""
    status: MatchStatus = MatchStatus.NONE
    score: float | None = None
    rule_set: str | None = None
    issues: list[tuple[str, str, float]] = field(default_factory=list)
    """Review items the record opens: ``(other record, kind, score)``."""


class Replay:
    """Places records one after another as the registry would (see the module notes)."""

    def __init__(
        self,
        matcher: Matcher,
        broken: dict[str, set[str]],
        resolved: set[frozenset[str]],
        *,
        term_counts: TermCounts | None = None,
    ) -> None:
        self.matcher = matcher
        self.broken = broken
        self.resolved = resolved
        self.ids: list[str] = []
        self.features: list[Any] = []
        self.cluster: list[int] = []
        self.positions: dict[str, int] = {}
        self.placed: list[Placed] = []
        self.term_counts = TermCounts(matcher.extractor) if term_counts is None else term_counts
        self._fixed_counts = term_counts is not None
        """Counts given by the caller (the Spark re-match sets them record by record) are
        used as they are; by default a record is scored and checked against a cluster's
        members with the counts of the records before it."""
        self._counted = 0
        self._members: dict[int, list[int]] = {}
        """Positions of each cluster's records (the cannot-link check)."""
        self._confirmed: dict[str, int] = {}
        """Golden record of a confirmed person -> its cluster."""
        self._autos = [rs.auto_threshold for rs in matcher.rules.rule_sets]
        self._names = [rs.name for rs in matcher.rules.rule_sets]

    def add(self, item: Prepared) -> None:
        record_id = item.record_id
        version, golden_before, placed_by_person, status_before = item.extra
        prepared = item.prepared
        position = len(self.ids)
        self._count_terms()  # before scoring and the cannot-link check, scored here or not
        if prepared.scored is None:
            counts, features = self.term_counts, self.features
            found = prepared.found
            ids = [] if found is None else found.ids
            likely = self.matcher.likely_matches(prepared.features, ids, features, counts.tf)
        else:
            likely = list(prepared.scored)
        not_with = self.broken.get(record_id, ())
        kept_apart = {
            self.cluster[self.positions[other]] for other in not_with if other in self.positions
        }
        autos, ids = self._autos, self.ids
        candidates = [
            Candidate(j, self.cluster[j], score, score.score - autos[score.rule_set])
            for j, score in likely
            if ids[j] not in not_with and self.cluster[j] not in kept_apart
        ]
        result = classify(candidates) if candidates else Classification(None)
        if result.golden_id is not None and not placed_by_person:
            cannot, stored, tf = self.matcher.cannot_links, self.features, self.term_counts.tf
            new = prepared.features

            def allowed(golden: object, _: list[Candidate]) -> bool:
                members = self._members.get(int(golden), ())  # type: ignore[call-overload]
                return not cannot.rejects(new, (stored[j] for j in members), tf)

            result = consistent(result, allowed)
        if placed_by_person and golden_before is not None:
            head = self._confirmed.setdefault(golden_before, position)
            result = keep_golden(result, head)
            cluster = head
        else:
            cluster = position if result.golden_id is None else int(result.golden_id)  # type: ignore[call-overload]
        result.potential = [c for c in result.potential if not self._settled(record_id, c)]
        result.conflicts = [c for c in result.conflicts if not self._settled(record_id, c)]
        best = result.auto[0] if result.auto else None
        outcome = Placed(
            record_id,
            version,
            golden_before,
            MatchStatus(status_before),
            cluster,
            match_status(result),
            None if best is None else best.score.score,
            None if best is None else self._names[best.score.rule_set],
            [
                (ids[int(c.record_id)], kind.value, c.score.score)  # type: ignore[call-overload]
                for kind, items in (
                    (IssueKind.POTENTIAL, result.potential),
                    (IssueKind.CONFLICT, result.conflicts),
                )
                for c in items
            ],
        )
        self.ids.append(record_id)
        self.features.append(prepared.features)
        self.cluster.append(cluster)
        self._members.setdefault(cluster, []).append(position)
        self.positions[record_id] = position
        self.placed.append(outcome)

    def _settled(self, record_id: str, candidate: Candidate) -> bool:
        other = self.ids[int(candidate.record_id)]  # type: ignore[call-overload]
        return frozenset((record_id, other)) in self.resolved

    def _count_terms(self) -> None:
        """Count the records replayed since the last call (unless the counts are fixed)."""
        counts, features = self.term_counts, self.features
        if self._fixed_counts:
            return
        for j in range(self._counted, len(features)):
            counts.add(features[j])
        self._counted = len(features)

    def all_term_counts(self) -> TermCounts:
        """Value counts of every record replayed."""
        self._count_terms()
        return self.term_counts


def human_decisions(session: Session) -> tuple[dict[str, set[str]], set[frozenset[str]]]:
    """The pairs known not to be one person, and the pairs a person resolved in review."""
    broken: dict[str, set[str]] = {}
    for a, b in session.execute(select(BrokenMatch.record_a, BrokenMatch.record_b)):
        broken.setdefault(a, set()).add(b)
        broken.setdefault(b, set()).add(a)
    resolved = {
        frozenset((a, b))
        for a, b, by in session.execute(
            select(MatchIssue.record_id, MatchIssue.other_record_id, MatchIssue.resolved_by).where(
                MatchIssue.status == IssueStatus.RESOLVED
            )
        )
        if not (by or "").startswith(REMATCH_ACTOR_PREFIX)
    }
    return broken, resolved


def replay(
    url: str,
    spec: MatcherSpec,
    broken: dict[str, set[str]],
    resolved: set[frozenset[str]],
    *,
    on_progress: Callable[[int], None] | None = None,
) -> Replay:
    """Match every record of the registry at ``url`` again under ``spec``'s rules
    (``on_progress`` is told how many are done, every thousand)."""
    matcher = spec.build()
    done = Replay(matcher, broken, resolved)
    with tempfile.TemporaryDirectory(prefix="clientregistry-rematch-") as directory:
        rules_path = Path(directory) / "rules.json"
        rules_path.write_text(json.dumps(spec.document), encoding="utf-8")
        records = prepare_in_background(
            RegistryRecords(url),
            CsvMapping(),
            rules_path,
            spec.record_id_systems,
            spec.candidate_limit,
        )
        try:
            for item in records:
                if isinstance(item, InvalidRecord):  # (a stored record is always a Patient)
                    continue
                done.add(item)
                if on_progress is not None and len(done.ids) % 1000 == 0:
                    on_progress(len(done.ids))
        finally:
            close = getattr(records, "close", None)
            if close is not None:
                close()
    return done


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True, slots=True)
class Change:
    """One record's change."""

    record_id: str
    version: int
    golden_before: str | None
    golden_after: str
    new_golden: bool
    status_before: MatchStatus
    status_after: MatchStatus
    score: float | None
    rule_set: str | None
    issues: list[list[Any]]
    """Review items to open, the record's: ``[other record, kind, score]``."""
    issues_before: list[int]
    """Open review items of the record to close (ids)."""

    @property
    def moves(self) -> bool:
        return self.golden_before != self.golden_after


@dataclass(slots=True)
class PlanSummary:
    """What a re-match changes, counted."""

    records: int = 0
    records_moving: int = 0
    persons_before: int = 0
    persons_after: int = 0
    persons_merged: int = 0
    """Persons after that hold the records of several persons before."""
    persons_split: int = 0
    """Persons before whose records end up in several persons."""
    new_persons: int = 0
    persons_retired: int = 0
    review_items_opened: int = 0
    review_items_closed: int = 0
    status_changes: int = 0
    changes: int = 0

    def to_json(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> PlanSummary:
        known = {k: int(v) for k, v in (data or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)


def plan_changes(
    done: Replay, open_issues: dict[str, list[tuple[int, str, str]]]
) -> tuple[list[Change], PlanSummary]:
    """The changes of a replay against the registry (``open_issues``: each record's open
    review items ``(id, other record, kind)``)."""
    placed = done.placed
    confirmed_heads = set(done._confirmed.values())
    members: dict[int, list[Placed]] = {}
    for record in placed:
        members.setdefault(record.cluster, []).append(record)
    goldens = _assign_goldens(placed, members, confirmed_heads)
    before_pairs = {
        (frozenset((record_id, other)), kind)
        for record_id, items in open_issues.items()
        for _, other, kind in items
    }
    after_pairs = {
        (frozenset((record.record_id, other)), kind)
        for record in placed
        for other, kind, _ in record.issues
    }
    changes: list[Change] = []
    summary = PlanSummary(records=len(placed))
    for record in placed:
        golden_after, new = goldens[record.cluster]
        opened = [
            [other, kind, score]
            for other, kind, score in record.issues
            if (frozenset((record.record_id, other)), kind) not in before_pairs
        ]
        closed = [
            issue_id
            for issue_id, other, kind in open_issues.get(record.record_id, ())
            if (frozenset((record.record_id, other)), kind) not in after_pairs
        ]
        moves = golden_after != record.golden_before
        if moves or record.status != record.status_before or opened or closed:
            changes.append(
                Change(
                    record.record_id,
                    record.version,
                    record.golden_before,
                    golden_after,
                    new,
                    record.status_before,
                    record.status,
                    record.score,
                    record.rule_set,
                    opened,
                    closed,
                )
            )
        summary.records_moving += moves
        summary.status_changes += record.status != record.status_before
        summary.review_items_opened += len(opened)
        summary.review_items_closed += len(closed)
    before_persons: dict[str, set[str]] = {}
    for record in placed:
        if record.golden_before is not None:
            before_persons.setdefault(record.golden_before, set()).add(goldens[record.cluster][0])
    after_sources: dict[str, set[str]] = {}
    for record in placed:
        if record.golden_before is not None:
            after_sources.setdefault(goldens[record.cluster][0], set()).add(record.golden_before)
    summary.persons_before = len(before_persons)
    summary.persons_after = len(members)
    summary.persons_merged = sum(1 for sources in after_sources.values() if len(sources) > 1)
    summary.persons_split = sum(1 for targets in before_persons.values() if len(targets) > 1)
    summary.new_persons = sum(1 for _, new in goldens.values() if new)
    kept = {golden for golden, _ in goldens.values()}
    summary.persons_retired = sum(1 for golden in before_persons if golden not in kept)
    summary.changes = len(changes)
    return changes, summary


def _assign_goldens(
    placed: list[Placed], members: dict[int, list[Placed]], confirmed_heads: set[int]
) -> dict[int, tuple[str, bool]]:
    """The golden record of each person found (see :func:`plan_changes`)."""
    chosen: dict[int, tuple[str, bool]] = {}
    taken: set[str] = set()
    for head in sorted(confirmed_heads):
        golden = placed[head].golden_before
        if golden is not None:
            chosen[head] = (golden, False)
            taken.add(golden)
    shares = Counter(
        (cluster, record.golden_before)
        for cluster, records in members.items()
        if cluster not in chosen
        for record in records
        if record.golden_before is not None
    )
    for (cluster, golden), _ in sorted(shares.items(), key=lambda item: (-item[1], item[0][0])):
        if cluster in chosen or golden is None or golden in taken:
            continue
        chosen[cluster] = (golden, False)
        taken.add(golden)
    for cluster in sorted(members):
        if cluster not in chosen:
            chosen[cluster] = (new_id(), True)
    return chosen


def open_issues_by_record(session: Session) -> dict[str, list[tuple[int, str, str]]]:
    """Every open review item, under its record: ``(id, other record, kind)``."""
    found: dict[str, list[tuple[int, str, str]]] = {}
    rows = session.execute(
        select(
            MatchIssue.id, MatchIssue.record_id, MatchIssue.other_record_id, MatchIssue.kind
        ).where(MatchIssue.status == IssueStatus.OPEN)
    )
    for issue_id, record_id, other, kind in rows:
        found.setdefault(record_id, []).append((int(issue_id), other, IssueKind(kind).value))
    return found
