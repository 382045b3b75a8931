"""Submitting a Patient: store it, match it, link it to a golden record — one transaction.

The main flow of the registry (OpenCR's ``POST /fhir/Patient``). The caller's own identifier
(its internal id) finds the source record: none means create, one means update (the stored
resource is replaced, its links dropped, and it is matched again). Matching uses the blocking
index kept in the database, updated in the same transaction, and the classification OpenCR
uses. Concurrent submissions of one person are serialised per blocking key (advisory locks on
PostgreSQL; SQLite has a single writer), so they cannot both create a golden record.

A record whose place a person decided (``SourceRecord.human_adjudicated``: joined, broken out
or resolved by a reviewer — OpenCR's ``humanAdjudication``) keeps its golden record when it is
updated: matching still runs, but an automatic result that disagrees (an auto match under
another golden record) becomes a conflict in the review queue instead of moving the record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from clientregistry.fhir import codes
from clientregistry.fhir.errors import conflict
from clientregistry.fhir.patient import require_internal_identifier, source_record_resource
from clientregistry.matching.classify import Classification, classify
from clientregistry.matching.features import Features
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.search_tokens import search_tokens
from clientregistry.settings import ClientSystemConfig
from clientregistry.store.blocking_index import DatabaseBlockingIndex
from clientregistry.store.enums import IssueKind, IssueStatus, LinkKind, MatchStatus
from clientregistry.store.locks import lock_blocking_keys
from clientregistry.store.models import (
    BrokenMatch,
    GoldenRecord,
    Link,
    MatchIssue,
    SearchToken,
    SourceRecord,
    SourceRecordVersion,
)
from clientregistry.store.term_counts import bump_features


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """What a submission did: the source record, its golden record, and why."""

    record_id: str
    golden_id: str
    created: bool
    version: int
    resource: dict[str, Any]
    status: MatchStatus
    score: float | None
    rule_set: str | None
    potential: int
    conflicts: int


def _now() -> datetime:
    return datetime.now(UTC)


def match_tags(status: MatchStatus) -> list[Mapping[str, str]]:
    """OpenCR's tags for a record's match status."""
    return {
        MatchStatus.AUTO: [codes.AUTOMATCH_TAG],
        MatchStatus.POTENTIAL: [codes.POTENTIAL_MATCH_TAG],
        MatchStatus.CONFLICT: [codes.CONFLICT_MATCH_TAG],
        MatchStatus.NONE: [],
    }[status]


def broken_with(session: Session, record_id: str) -> set[str]:
    """Ids of the records known not to be the same person as ``record_id``."""
    rows = session.execute(
        select(BrokenMatch.record_a, BrokenMatch.record_b).where(
            (BrokenMatch.record_a == record_id) | (BrokenMatch.record_b == record_id)
        )
    )
    return {b if a == record_id else a for a, b in rows}


def source_resource(
    record: SourceRecord, client: ClientSystemConfig | None, broken: set[str]
) -> dict[str, Any]:
    """The FHIR form of a stored source record."""
    tags = match_tags(record.match_status)
    if record.human_adjudicated:
        tags = [*tags, codes.HUMAN_ADJUDICATION_TAG]
    return source_record_resource(
        record.resource,
        record.id,
        record.version,
        record.last_updated,
        record.client_system,
        client.display_name if client else None,
        record.golden_id,
        tags,
        broken_matches=sorted(broken),
    )


def keep_golden(result: Classification, golden_id: str) -> Classification:
    """``result`` re-read for a record that stays in ``golden_id`` (a person's decision).

    Candidates under ``golden_id`` count as its auto matches; auto matches under any other
    golden record are conflicts (the automatic result disagrees with the person); potential
    matches elsewhere stay potential matches.
    """
    kept = Classification(golden_id)
    for candidate in [*result.auto, *result.conflicts, *result.potential]:
        if candidate.golden_id == golden_id:
            kept.auto.append(candidate)
        elif candidate.score.decision == "auto":
            kept.conflicts.append(candidate)
        else:
            kept.potential.append(candidate)
    for items in (kept.auto, kept.conflicts, kept.potential):
        items.sort(key=lambda c: -c.strength)
    return kept


class Submitter:
    """The submit use case over a :class:`RegistryContext`."""

    def __init__(self, context: RegistryContext) -> None:
        self.context = context

    def submit(
        self,
        session: Session,
        patient: Mapping[str, Any],
        client: ClientSystemConfig,
        *,
        url_id: str | None = None,
    ) -> SubmitResult:
        """Create or update the caller's record and match it; the caller owns the transaction."""
        context = self.context
        system, value = require_internal_identifier(patient, [client.internal_id_system])
        matcher = context.matcher
        features = matcher.extractor.extract(patient)
        keys = matcher.blocker.keys(features)
        # Serialise on the caller's identifier (two submissions of one record) and on every
        # blocking key the record has now or had before (two submissions of one person).
        lock_blocking_keys(session, [f"record|{system}|{value}"])
        existing = session.scalars(
            select(SourceRecord).where(
                SourceRecord.internal_system == system, SourceRecord.internal_value == value
            )
        ).one_or_none()
        self._lock_keys(session, existing, keys)
        if (
            url_id is not None
            and existing is None
            and session.get(GoldenRecord, url_id) is not None
        ):
            raise conflict(
                f"Patient/{url_id} is a golden record; source records cannot take its id",
                ["Patient.id"],
            )
        if url_id is not None and existing is not None and existing.id != url_id:
            raise conflict(
                f"Patient/{url_id} is not the record of {system}|{value} "
                f"(that is Patient/{existing.id})",
                ["Patient.identifier"],
            )
        index = DatabaseBlockingIndex(session)
        now = _now()
        stored = dict(patient)
        if existing is None:
            record = SourceRecord(
                client_system=client.name,
                internal_system=system,
                internal_value=value,
                version=1,
                last_updated=now,
                resource=stored,
                features=features,
                match_status=MatchStatus.NONE,
            )
            if url_id is not None:
                record.id = url_id
            session.add(record)
            session.flush()
            old_golden: str | None = None
        else:
            record = existing
            old_golden = record.golden_id
            index.remove_record(record.id)
            bump_features(session, context.term_counts, record.features, -1)
            context.term_counts.remove(record.features)
            record.version += 1
            record.last_updated = now
            record.resource = stored
            record.features = features
            session.execute(delete(Link).where(Link.source_record_id == record.id))
            session.execute(
                delete(MatchIssue).where(
                    MatchIssue.status == IssueStatus.OPEN,
                    (MatchIssue.record_id == record.id) | (MatchIssue.other_record_id == record.id),
                )
            )
        session.add(
            SourceRecordVersion(
                record_id=record.id, version=record.version, resource=stored, last_updated=now
            )
        )
        _store_search_tokens(session, record.id, stored, replace=existing is not None)
        broken = broken_with(session, record.id) if existing is not None else set()
        result = self._classify(session, index, record.id, features, keys, old_golden, broken)
        adjudicated = bool(record.human_adjudicated) and old_golden is not None
        if adjudicated and old_golden is not None:
            # A person placed this record: it stays; disagreement goes to the review queue.
            result = keep_golden(result, old_golden)
        golden_id = self._place(session, record, result, old_golden, now)
        status = (
            MatchStatus.CONFLICT
            if result.conflicts
            else MatchStatus.POTENTIAL
            if result.potential
            else MatchStatus.AUTO
            if result.auto
            else MatchStatus.NONE
        )
        record.match_status = status
        best = result.auto[0] if result.auto else None
        rule_set = None
        if best is not None:
            rule_set = matcher.rules.rule_sets[best.score.rule_set].name
        session.add(
            Link(
                source_record_id=record.id,
                golden_id=golden_id,
                kind=LinkKind.MANUAL if adjudicated else LinkKind.AUTO,
                score=None if best is None else best.score.score,
                rule_set=rule_set,
                created_at=now,
            )
        )
        queues = ((IssueKind.POTENTIAL, result.potential), (IssueKind.CONFLICT, result.conflicts))
        for kind, items in queues:
            for item in items:
                session.add(
                    MatchIssue(
                        record_id=record.id,
                        other_record_id=str(item.record_id),
                        kind=kind,
                        score=item.score.score,
                        created_at=now,
                    )
                )
        index.add(record.id, keys)
        bump_features(session, context.term_counts, features, 1)
        context.term_counts.add(features)
        session.flush()
        return SubmitResult(
            record_id=record.id,
            golden_id=golden_id,
            created=existing is None,
            version=record.version,
            resource=source_resource(record, client, broken),
            status=status,
            score=None if best is None else best.score.score,
            rule_set=rule_set,
            potential=len(result.potential),
            conflicts=len(result.conflicts),
        )

    def _lock_keys(self, session: Session, existing: SourceRecord | None, keys: list[str]) -> None:
        """Lock the new keys and the stored record's current ones (which another update may
        have changed while this one waited, hence the re-read)."""
        locked = set(keys)
        lock_blocking_keys(session, keys)
        for _ in range(3):
            if existing is None:
                return
            session.refresh(existing)
            current = set(self.context.matcher.blocker.keys(existing.features))
            missing = current - locked
            if not missing:
                return
            lock_blocking_keys(session, sorted(missing))
            locked |= missing

    def _classify(
        self,
        session: Session,
        index: DatabaseBlockingIndex,
        record_id: str,
        features: Features,
        keys: list[str],
        old_golden: str | None,
        broken: set[str],
    ) -> Classification:
        matcher = self.context.matcher
        found = index.candidates(keys, matcher.candidate_limit + 1)
        ids = [c for c in found.ids if c != record_id and c not in broken]
        if not ids:
            return Classification(None)
        rows = session.execute(
            select(SourceRecord.id, SourceRecord.golden_id, SourceRecord.features).where(
                SourceRecord.id.in_(ids)
            )
        ).all()
        # Nor may it join a golden record that holds a record it is broken from (through a
        # third record that matches both): "not the same person" holds for the golden record.
        excluded = _goldens_of(session, broken)
        stored = [
            (rid, golden, feats)
            for rid, golden, feats in rows
            if golden is not None and golden not in excluded
        ]
        scored = matcher.candidates(features, stored, self.context.term_counts.tf)
        return classify(scored, current_golden=old_golden, broken=broken)

    def _place(
        self,
        session: Session,
        record: SourceRecord,
        result: Classification,
        old_golden: str | None,
        now: datetime,
    ) -> str:
        """Choose the record's golden record; retire one that re-matching emptied."""
        created = False
        if result.golden_id is not None:
            golden_id = str(result.golden_id)
        elif old_golden is not None and not _others_in(session, old_golden, record.id):
            golden_id = old_golden  # it linked only this record: keep it
        else:
            golden = GoldenRecord(version=1, last_updated=now, active=True)
            session.add(golden)
            session.flush()
            golden_id = golden.id
            created = True
        record.golden_id = golden_id
        changed = set() if created else {golden_id}
        if old_golden is not None and old_golden != golden_id:
            changed.add(old_golden)
        for gid in changed:
            touched = session.get(GoldenRecord, gid)
            if touched is None:
                continue
            touched.version += 1
            touched.last_updated = now
            if gid == old_golden and gid != golden_id and not _others_in(session, gid, record.id):
                touched.replaced_by = golden_id  # emptied by re-matching: point to successor
                touched.active = False
        return golden_id


def _store_search_tokens(
    session: Session, record_id: str, resource: Mapping[str, Any], *, replace: bool
) -> None:
    """Replace the record's search tokens with those of ``resource`` (one bulk insert)."""
    if replace:
        session.execute(delete(SearchToken).where(SearchToken.record_id == record_id))
    rows = [
        {"kind": kind, "value": value, "record_id": record_id}
        for kind, value in search_tokens(resource)
    ]
    if rows:
        session.execute(insert(SearchToken), rows)


def _goldens_of(session: Session, record_ids: set[str]) -> set[str]:
    """The golden records of ``record_ids``."""
    if not record_ids:
        return set()
    rows = session.scalars(
        select(SourceRecord.golden_id).where(SourceRecord.id.in_(sorted(record_ids)))
    )
    return {golden for golden in rows if golden is not None}


def _others_in(session: Session, golden_id: str, record_id: str) -> bool:
    """Whether a golden record has source records besides ``record_id``."""
    return (
        session.scalar(
            select(SourceRecord.id)
            .where(SourceRecord.golden_id == golden_id, SourceRecord.id != record_id)
            .limit(1)
        )
        is not None
    )
