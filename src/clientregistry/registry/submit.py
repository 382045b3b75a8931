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

This is the registry's hot path, so it speaks SQLAlchemy Core on the session's connection,
with no ORM unit of work. A create is three statements that decide (the locks, the caller's
record, the blocking candidates with their records), then one statement per table written
and the audit event, run straight on the driver (:mod:`clientregistry.store.driver`) and, on
PostgreSQL, sent together in one round trip (pipeline mode) since none reads anything back.
What needs no database (the caller's identifier, features, blocking keys and their hashes,
search tokens) is worked out before the transaction by :meth:`Submitter.prepare`, so that a
SQLite writer holds the single write turn less long. It never loads ORM objects, so a
session that holds some (a Bundle, a review action) sees what it wrote once it reads them
again.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Connection, Select, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from clientregistry.fhir import codes
from clientregistry.fhir.errors import conflict
from clientregistry.fhir.patient import require_internal_identifier, source_record_resource
from clientregistry.matching.classify import Classification, classify
from clientregistry.matching.features import Features
from clientregistry.metrics import count_submission
from clientregistry.registry import audit
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.search_tokens import search_tokens
from clientregistry.settings import ClientSystemConfig
from clientregistry.store.blocking_index import (
    TOP_CANDIDATES,
    TOP_CANDIDATES_ARRAY,
    DatabaseBlockingIndex,
    key_hash,
    key_hashes,
)
from clientregistry.store.columns import UTCDateTime
from clientregistry.store.driver import (
    DriverInsert,
    DriverQuery,
    DriverStatement,
    PendingRows,
    pipelined,
)
from clientregistry.store.enums import IssueKind, IssueStatus, LinkKind, MatchStatus
from clientregistry.store.locks import take_key_locks
from clientregistry.store.models import (
    BrokenMatch,
    GoldenRecord,
    Link,
    MatchIssue,
    SearchToken,
    SourceRecord,
    SourceRecordVersion,
    new_id,
)
from clientregistry.store.term_counts import bump_many, feature_deltas

# The statements of a submission, built once (building one costs more than running it).
_EXISTING = select(
    SourceRecord.id,
    SourceRecord.version,
    SourceRecord.golden_id,
    SourceRecord.features,
    SourceRecord.human_adjudicated,
    SourceRecord.client_system,
).where(
    SourceRecord.internal_system == bindparam("system"),
    SourceRecord.internal_value == bindparam("value"),
)
_EXISTING_QUERY = DriverQuery(_EXISTING)
_IS_GOLDEN = select(GoldenRecord.id).where(GoldenRecord.id == bindparam("golden"))


def _candidate_rows(top: Select[str, int, int]) -> Select[str, str | None, Any]:
    candidates = top.subquery()
    return (
        select(SourceRecord.id, SourceRecord.golden_id, SourceRecord.features)
        .join(candidates, candidates.c.record_id == SourceRecord.id)
        .order_by(candidates.c.shared.desc(), SourceRecord.id)
    )


_CANDIDATE_ROWS = DriverQuery(
    _candidate_rows(TOP_CANDIDATES), postgresql=_candidate_rows(TOP_CANDIDATES_ARRAY)
)
"""The blocking candidates and their records, in one statement: parameters ``hashes`` and
``limit``."""
_OTHERS_IN = (
    select(SourceRecord.id)
    .where(SourceRecord.golden_id == bindparam("golden"), SourceRecord.id != bindparam("record"))
    .limit(1)
)
_INSERT_RECORD = DriverInsert(insert(SourceRecord))
_UPDATE_RECORD = DriverStatement(update(SourceRecord).where(SourceRecord.id == bindparam("record")))
_INSERT_VERSION = DriverInsert(insert(SourceRecordVersion))
_INSERT_LINK = DriverInsert(insert(Link))
_DELETE_LINKS = DriverStatement(delete(Link).where(Link.source_record_id == bindparam("record")))
_INSERT_ISSUES = DriverInsert(insert(MatchIssue))
_DELETE_OPEN_ISSUES = DriverStatement(
    delete(MatchIssue).where(
        MatchIssue.status == IssueStatus.OPEN,
        (MatchIssue.record_id == bindparam("record"))
        | (MatchIssue.other_record_id == bindparam("record")),
    )
)
_INSERT_TOKENS = DriverInsert(insert(SearchToken))
_DELETE_TOKENS = DriverStatement(
    delete(SearchToken).where(SearchToken.record_id == bindparam("record"))
)
_INSERT_GOLDEN = DriverInsert(insert(GoldenRecord))
_TOUCH_GOLDEN = DriverStatement(
    update(GoldenRecord)
    .where(GoldenRecord.id == bindparam("golden"))
    .values(version=GoldenRecord.version + 1, last_updated=bindparam("now", type_=UTCDateTime()))
)
_RETIRE_GOLDEN = DriverStatement(
    update(GoldenRecord)
    .where(GoldenRecord.id == bindparam("golden"))
    .values(
        version=GoldenRecord.version + 1,
        last_updated=bindparam("now", type_=UTCDateTime()),
        replaced_by=bindparam("successor"),
        active=False,
    )
)


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


class StoredRecord(Protocol):
    """What :func:`source_resource` reads of a source record (a model or a snapshot)."""

    @property
    def id(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def last_updated(self) -> datetime: ...
    @property
    def resource(self) -> dict[str, Any]: ...
    @property
    def client_system(self) -> str: ...
    @property
    def golden_id(self) -> str | None: ...
    @property
    def match_status(self) -> MatchStatus: ...
    @property
    def human_adjudicated(self) -> bool | None: ...


@dataclass(frozen=True, slots=True)
class RecordSnapshot:
    """A source record's state as plain values (see :class:`StoredRecord`)."""

    id: str
    version: int
    last_updated: datetime
    resource: dict[str, Any]
    client_system: str
    golden_id: str | None
    match_status: MatchStatus
    human_adjudicated: bool | None = False


@dataclass(frozen=True, slots=True)
class Submission:
    """What a submission derives from the Patient alone (:meth:`Submitter.prepare`): pure
    work done before the transaction, so that a writer holds SQLite's write lock less long."""

    patient: Mapping[str, Any]
    client: ClientSystemConfig
    system: str
    """The caller's internal identifier: its system and value."""
    value: str
    features: Features
    keys: list[str]
    hashes: list[int]
    """The blocking keys hashed (:func:`~clientregistry.store.blocking_index.key_hashes`)."""
    tokens: list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class _Existing:
    """The caller's record as stored before this submission."""

    id: str
    version: int
    golden_id: str | None
    features: Features
    human_adjudicated: bool
    client_system: str


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
    record: StoredRecord, client: ClientSystemConfig | None, broken: set[str]
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


def match_status(result: Classification) -> MatchStatus:
    """The record's status after ``result``: its most pressing review item, else auto/none."""
    if result.conflicts:
        return MatchStatus.CONFLICT
    if result.potential:
        return MatchStatus.POTENTIAL
    return MatchStatus.AUTO if result.auto else MatchStatus.NONE


def find_matches(
    session: Session,
    context: RegistryContext,
    record_id: str,
    features: Features,
    keys: list[str],
    old_golden: str | None,
    broken: set[str],
    *,
    candidates: PendingRows | None = None,
) -> Classification:
    """Score ``features`` against the blocking candidates and classify them (the one candidate
    search and classification that submissions, re-matching and review all use);
    ``candidates`` are the rows of ``keys`` (:func:`send_candidates`), when the caller has
    them."""
    matcher = context.matcher
    if candidates is None:
        candidates = send_candidates(session.connection(), context, key_hashes(keys))
    rows = candidates.all()
    # Nor may it join a golden record that holds a record it is broken from (through a
    # third record that matches both): "not the same person" holds for the golden record.
    excluded = golden_ids_of(session, broken)
    stored = [
        (rid, golden, feats)
        for rid, golden, feats in rows
        if rid != record_id and rid not in broken and golden is not None and golden not in excluded
    ]
    if not stored:
        return Classification(None)
    scored = matcher.candidates(features, stored, context.term_counts.tf)
    return classify(scored, current_golden=old_golden, broken=broken)


def send_candidates(
    connection: Connection, context: RegistryContext, hashes: list[int]
) -> PendingRows:
    """Query the records that share a blocking key (``hashes``) with a record: one more than
    the candidate limit, best first (inside :func:`~clientregistry.store.driver.pipelined`
    only queued)."""
    if not hashes:
        return PendingRows(rows=[])
    limit = context.matcher.candidate_limit + 1
    return _CANDIDATE_ROWS.send(connection, {"hashes": hashes, "limit": limit})


class Submitter:
    """The submit use case over a :class:`RegistryContext`."""

    def __init__(self, context: RegistryContext) -> None:
        self.context = context

    def prepare(self, patient: Mapping[str, Any], client: ClientSystemConfig) -> Submission:
        """Check the caller's identifier and derive features, blocking keys and search tokens
        (no database); an :class:`~clientregistry.fhir.errors.FhirError` when it is missing."""
        system, value = require_internal_identifier(patient, [client.internal_id_system])
        matcher = self.context.matcher
        features = matcher.extractor.extract(patient)
        keys = matcher.blocker.keys(features)
        return Submission(
            patient,
            client,
            system,
            value,
            features,
            keys,
            key_hashes(keys),
            search_tokens(patient),
        )

    def submit(
        self,
        session: Session,
        patient: Mapping[str, Any],
        client: ClientSystemConfig,
        *,
        url_id: str | None = None,
        source_address: str | None = None,
        commit: bool = False,
    ) -> SubmitResult:
        """Create or update the caller's record, match it and audit it (the caller calling
        from ``source_address``); the caller owns the transaction (``commit``: see
        :meth:`submit_prepared`)."""
        return self.submit_prepared(
            session,
            self.prepare(patient, client),
            url_id=url_id,
            source_address=source_address,
            commit=commit,
        )

    def submit_prepared(
        self,
        session: Session,
        submission: Submission,
        *,
        url_id: str | None = None,
        source_address: str | None = None,
        commit: bool = False,
        wait_for_locks: bool = True,
    ) -> SubmitResult:
        """:meth:`submit` for a Patient :meth:`prepare` has read already; ``commit`` commits
        the session's transaction with the writes (on PostgreSQL in the same round trip), for
        a caller whose transaction is this submission alone. Without ``wait_for_locks``, a
        lock held by another transaction raises
        :class:`~clientregistry.store.errors.WouldWait` instead of waiting for it (roll back
        and submit again, waiting, somewhere waiting blocks nothing else).

        First the reads, which decide everything (the caller's record, the candidates, the
        golden record); then the writes, which read nothing back. On PostgreSQL each goes in
        one round trip (:func:`~clientregistry.store.driver.pipelined`): ``BEGIN``, the
        locks, the caller's record and the candidates; then the writes (and ``COMMIT``). An
        update whose record loses blocking keys takes their locks, and reads its record
        again, after.
        """
        context = self.context
        matcher = context.matcher
        client = submission.client
        system, value = submission.system, submission.value
        features = submission.features
        session.flush()  # whatever the session holds goes first; from here on, Core only
        connection = session.connection()
        # Serialise on the caller's identifier (two submissions of one record) and on every
        # blocking key the record has now or had before (two submissions of one person).
        locked = sorted({key_hash(f"record|{system}|{value}"), *submission.hashes})
        with pipelined(connection):
            attempt = take_key_locks(session, locked, wait=wait_for_locks)
            found = _EXISTING_QUERY.send(connection, {"system": system, "value": value})
            # Read under the locks of every key they share with the record: what another
            # submission of this person could change is settled.
            candidates = send_candidates(connection, context, submission.hashes)
        attempt.check()  # what was read without every lock is not used
        existing = _existing_from(found.all())
        if attempt.by_keys:
            existing = self._lock_old_keys(
                session, connection, existing, set(locked), system, value, wait_for_locks
            )
        if url_id is not None and existing is None and _is_golden(connection, url_id):
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
        now = _now()
        if existing is None:
            record_id = url_id or new_id()
            version = 1
            old_golden: str | None = None
            broken: set[str] = set()
        else:
            record_id = existing.id
            version = existing.version + 1
            old_golden = existing.golden_id
            context.term_counts.remove(existing.features)  # the record no longer counts
            broken = broken_with(session, record_id)
        # The record's own (old) keys are still indexed: find_matches leaves it out.
        result = find_matches(
            session,
            context,
            record_id,
            features,
            submission.keys,
            old_golden,
            broken,
            candidates=candidates,
        )
        adjudicated = existing is not None and existing.human_adjudicated and old_golden is not None
        if adjudicated and old_golden is not None:
            # A person placed this record: it stays; disagreement goes to the review queue.
            result = keep_golden(result, old_golden)
        placement = _place(connection, record_id, result, old_golden)
        status = match_status(result)
        best = result.auto[0] if result.auto else None
        rule_set = None if best is None else matcher.rules.rule_sets[best.score.rule_set].name
        snapshot = RecordSnapshot(
            id=record_id,
            version=version,
            last_updated=now,
            resource=dict(submission.patient),
            client_system=client.name if existing is None else existing.client_system,
            golden_id=placement.golden_id,
            match_status=status,
            human_adjudicated=existing is not None and existing.human_adjudicated,
        )
        submitted = SubmitResult(
            record_id=record_id,
            golden_id=placement.golden_id,
            created=existing is None,
            version=version,
            resource=source_resource(snapshot, client, broken),
            status=status,
            score=None if best is None else best.score.score,
            rule_set=rule_set,
            potential=len(result.potential),
            conflicts=len(result.conflicts),
        )
        index = DatabaseBlockingIndex(session)
        counts = feature_deltas(context.term_counts, features, 1)
        with pipelined(connection, commit=session if commit else None):
            if existing is not None:
                index.remove_record(record_id)
                _DELETE_LINKS.execute(connection, {"record": record_id})
                _DELETE_OPEN_ISSUES.execute(connection, {"record": record_id})
                _DELETE_TOKENS.execute(connection, {"record": record_id})
                counts += feature_deltas(context.term_counts, existing.features, -1)
            placement.write(connection, now)
            row = {
                "version": version,
                "last_updated": now,
                "resource": snapshot.resource,
                "features": features,
                "golden_id": placement.golden_id,
                "match_status": status,
            }
            if existing is None:
                _INSERT_RECORD.execute(
                    connection,
                    {
                        "id": record_id,
                        "client_system": client.name,
                        "internal_system": system,
                        "internal_value": value,
                        "human_adjudicated": False,
                        **row,
                    },
                )
            else:
                _UPDATE_RECORD.execute(connection, {"record": record_id, **row})
            _INSERT_VERSION.execute(
                connection,
                {
                    "record_id": record_id,
                    "version": version,
                    "resource": snapshot.resource,
                    "last_updated": now,
                },
            )
            tokens = [
                {"kind": kind, "value": token, "record_id": record_id}
                for kind, token in submission.tokens
            ]
            _INSERT_TOKENS.execute(connection, tokens)
            _INSERT_LINK.execute(
                connection,
                {
                    "source_record_id": record_id,
                    "golden_id": placement.golden_id,
                    "kind": LinkKind.MANUAL if adjudicated else LinkKind.AUTO,
                    "score": submitted.score,
                    "rule_set": rule_set,
                    "created_at": now,
                },
            )
            issues = [
                {
                    "record_id": record_id,
                    "other_record_id": str(item.record_id),
                    "kind": kind,
                    "score": item.score.score,
                    "status": IssueStatus.OPEN,
                    "created_at": now,
                }
                for kind, items in (
                    (IssueKind.POTENTIAL, result.potential),
                    (IssueKind.CONFLICT, result.conflicts),
                )
                for item in items
            ]
            _INSERT_ISSUES.execute(connection, issues)
            index.add_hashes(record_id, submission.hashes)
            # Old and new values in one statement: unchanged ones sum to nothing.
            bump_many(session, counts)
            audit.record_submission(session, submitted, client.name, source_address)
        context.term_counts.add(features)
        count_submission(status.value)
        return submitted

    def _lock_old_keys(
        self,
        session: Session,
        connection: Connection,
        existing: _Existing | None,
        locked: set[int],
        system: str,
        value: str,
        wait: bool,
    ) -> _Existing | None:
        """Lock the stored record's keys too, when they are not among those ``locked`` (the
        new keys): an update takes it out of them. Another update may change the record
        while this one waits for them, hence the re-read; the record as it is now."""
        for _ in range(3):
            if existing is None:
                return None
            missing = set(key_hashes(self.context.matcher.blocker.keys(existing.features)))
            missing -= locked
            if not missing:
                return existing
            take_key_locks(session, sorted(missing), wait=wait).check()
            locked |= missing
            existing = _existing(connection, system, value)
        return existing


@dataclass(frozen=True, slots=True)
class _Placement:
    """Where a record goes (:func:`_place`) and the golden-record writes that takes."""

    golden_id: str
    new_golden: bool
    touched: list[str]
    """Golden records that gain or lose a member: a new version each."""
    retired: str | None
    """The record's old golden record, emptied: it points to ``golden_id`` from now on."""

    def write(self, connection: Connection, now: datetime) -> None:
        if self.new_golden:
            _INSERT_GOLDEN.execute(
                connection,
                {"id": self.golden_id, "version": 1, "last_updated": now, "active": True},
            )
        for golden in self.touched:
            _TOUCH_GOLDEN.execute(connection, {"golden": golden, "now": now})
        if self.retired is not None:
            _RETIRE_GOLDEN.execute(
                connection, {"golden": self.retired, "now": now, "successor": self.golden_id}
            )


def _place(
    connection: Connection, record_id: str, result: Classification, old_golden: str | None
) -> _Placement:
    """Choose the record's golden record; an old one that re-matching empties is retired."""
    new_golden = False
    if result.golden_id is not None:
        golden_id = str(result.golden_id)
        touched = [golden_id]
    elif old_golden is not None and not _others_in(connection, old_golden, record_id):
        golden_id = old_golden  # it linked only this record: keep it
        touched = [golden_id]
    else:
        golden_id = new_id()
        new_golden = True
        touched = []
    retired = None
    if old_golden is not None and old_golden != golden_id:
        if _others_in(connection, old_golden, record_id):
            touched.append(old_golden)
        else:
            retired = old_golden  # emptied by re-matching: it points to its successor
    return _Placement(golden_id, new_golden, touched, retired)


def _existing(connection: Connection, system: str, value: str) -> _Existing | None:
    return _existing_from(
        _EXISTING_QUERY.send(connection, {"system": system, "value": value}).all()
    )


def _existing_from(rows: list[tuple[Any, ...]]) -> _Existing | None:
    """The caller's record from the rows of :data:`_EXISTING` (at most one: the identifier
    is unique)."""
    if not rows:
        return None
    record_id, version, golden_id, features, adjudicated, client_system = rows[0]
    return _Existing(record_id, version, golden_id, features, bool(adjudicated), client_system)


def _is_golden(connection: Connection, record_id: str) -> bool:
    found = connection.execute(_IS_GOLDEN, {"golden": record_id})
    return found.first() is not None


def golden_ids_of(session: Session, record_ids: Collection[str]) -> set[str]:
    """The golden records of ``record_ids``."""
    if not record_ids:
        return set()
    rows = session.scalars(
        select(SourceRecord.golden_id).where(SourceRecord.id.in_(sorted(record_ids)))
    )
    return {golden for golden in rows if golden is not None}


def _others_in(connection: Connection, golden_id: str, record_id: str) -> bool:
    """Whether a golden record has source records besides ``record_id``."""
    found = connection.execute(_OTHERS_IN, {"golden": golden_id, "record": record_id})
    return found.first() is not None
