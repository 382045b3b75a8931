"""Submitting a Patient: store it, match it, link it to a golden record — one transaction.

The main flow of the registry (OpenCR's ``POST /fhir/Patient``). The caller's own identifier
(its internal id) finds the source record: none means create, one means update (the stored
resource is replaced, its links dropped, and it is matched again). Matching uses the blocking
index kept in the database, updated in the same transaction, and the classification OpenCR
uses. Concurrent submissions of one person are serialised per blocking key (advisory locks on
PostgreSQL; SQLite has a single writer), so they cannot both create a golden record.

Ownership: a record belongs to the client system that created it. A submission never
updates another system's record (403), whatever route it comes by; ``PUT Patient/{id}`` may
create a record with the caller's id (update as create) unless the id is another record's
(409). ``If-Match`` (:meth:`Submitter.submit_prepared`'s ``if_match``) refuses a stale
version with 412 before anything is written; ``create_only`` (a conditional create) raises
:class:`RecordExists` instead of updating. These checks read nothing the submission does not
read anyway (the caller's record: its version and owner), except ``PUT Patient/{id}`` of a new
identifier, which looks the id up.

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

import operator
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from sqlalchemy import (
    CompoundSelect,
    Connection,
    Integer,
    Select,
    String,
    any_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, aliased

from clientregistry.errors import ClientRegistryError
from clientregistry.fhir import codes
from clientregistry.fhir.errors import FhirError, conflict, precondition_failed
from clientregistry.fhir.patient import (
    SurvivorReference,
    replaced_by_link,
    require_internal_identifier,
    source_record_resource,
)
from clientregistry.matching.cannot_link import MAX_MEMBERS, consistent
from clientregistry.matching.classify import Candidate, Classification, classify
from clientregistry.matching.features import Features
from clientregistry.matching.matcher import Matcher
from clientregistry.metrics import count_submission
from clientregistry.registry import audit
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.search_tokens import search_tokens
from clientregistry.settings import ClientSystemConfig
from clientregistry.store.blocking_index import (
    DEFAULT_BLOCK_LIMIT,
    SELECTED_CANDIDATES,
    SELECTED_CANDIDATES_ARRAY,
    DatabaseBlockingIndex,
    json_values,
    key_hash,
    key_hashes,
    ordered_key_hashes,
    rank_new_records,
    selection_params,
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
from clientregistry.store.locks import lock_registry, take_key_locks
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
_SUBSUMED = aliased(SourceRecord)
_EXISTING = select(
    SourceRecord.id,
    SourceRecord.version,
    SourceRecord.golden_id,
    SourceRecord.features,
    SourceRecord.human_adjudicated,
    SourceRecord.client_system,
    SourceRecord.replaced_by,
    exists(select(_SUBSUMED.id).where(_SUBSUMED.replaced_by == SourceRecord.id)).label("survives"),
).where(
    SourceRecord.internal_system == bindparam("system"),
    SourceRecord.internal_value == bindparam("value"),
)
_EXISTING_QUERY = DriverQuery(_EXISTING)
_IS_GOLDEN = select(GoldenRecord.id).where(GoldenRecord.id == bindparam("golden"))
_STORED_IDENTIFIERS = DriverQuery(
    select(SourceRecord.internal_value).where(
        SourceRecord.internal_system == bindparam("system"),
        SourceRecord.internal_value.in_(json_values("values")),
    ),
    postgresql=select(SourceRecord.internal_value).where(
        SourceRecord.internal_system == bindparam("system"),
        SourceRecord.internal_value == any_(bindparam("values", type_=ARRAY(String))),
    ),
)
_RECORDS_BY_ID = DriverQuery(
    select(SourceRecord.id, SourceRecord.golden_id, SourceRecord.features).where(
        SourceRecord.id.in_(json_values("ids"))
    ),
    postgresql=select(SourceRecord.id, SourceRecord.golden_id, SourceRecord.features).where(
        SourceRecord.id == any_(bindparam("ids", type_=ARRAY(String)))
    ),
)
_MEMBERS_OF = DriverQuery(
    select(SourceRecord.golden_id, SourceRecord.features)
    .where(SourceRecord.golden_id.in_(json_values("ids")))
    .order_by(SourceRecord.golden_id, SourceRecord.id),
    postgresql=select(SourceRecord.golden_id, SourceRecord.features)
    .where(SourceRecord.golden_id == any_(bindparam("ids", type_=ARRAY(String))))
    .order_by(SourceRecord.golden_id, SourceRecord.id),
)
_IDS_PER_QUERY = 50_000
"""Values bound per query of a batch."""
_HOLDER = select(
    SourceRecord.client_system, SourceRecord.internal_system, SourceRecord.internal_value
).where(SourceRecord.id == bindparam("record"))
_REPLACES = (
    select(SourceRecord.id)
    .where(SourceRecord.replaced_by == bindparam("record"))
    .order_by(SourceRecord.id)
)


def _candidate_rows(
    top: Select[str, int, int, int],
) -> CompoundSelect[str, str | None, Any, int]:
    candidates = top.cte("top_candidates")
    found = select(
        SourceRecord.id, SourceRecord.golden_id, SourceRecord.features, candidates.c.preference
    ).join(candidates, candidates.c.record_id == SourceRecord.id)
    holder = aliased(SourceRecord)
    persons = select(holder.golden_id).join(candidates, candidates.c.record_id == holder.id)
    member = aliased(SourceRecord)
    ranked = (
        select(
            member.id,
            member.golden_id,
            member.features,
            literal(0, Integer).label("preference"),
            func.row_number()
            .over(partition_by=member.golden_id, order_by=member.id)
            .label("position"),
        )
        .where(
            member.golden_id.in_(persons),
            member.id.not_in(select(candidates.c.record_id)),
        )
        .subquery()
    )
    members = select(ranked.c.id, ranked.c.golden_id, ranked.c.features, ranked.c.preference).where(
        ranked.c.position <= MAX_MEMBERS
    )
    return union_all(found, members).order_by(
        literal_column("preference").desc(), literal_column("id")
    )


_CANDIDATE_ROWS = DriverQuery(
    _candidate_rows(SELECTED_CANDIDATES), postgresql=_candidate_rows(SELECTED_CANDIDATES_ARRAY)
)
"""The blocking candidates and their records, in one statement: the parameters of
:data:`~clientregistry.store.blocking_index.SELECTED_CANDIDATES`; columns id, golden id,
features and preference (above 0, best first). After them come the
other records of the candidates' golden records (preference 0; at most
:data:`~clientregistry.matching.cannot_link.MAX_MEMBERS` of each), which are not candidates
but are checked for cannot-links (:func:`find_matches`)."""
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
_TOUCH_GOLDEN_BY = (
    update(GoldenRecord)
    .where(GoldenRecord.id == bindparam("golden"))
    .values(
        version=GoldenRecord.version + bindparam("joined", type_=Integer()),
        last_updated=bindparam("now", type_=UTCDateTime()),
    )
)
""":data:`_TOUCH_GOLDEN` for several records joining at once (a batch: ``joined`` of them)."""
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
    replaced_by: str | None = None
    """The record that subsumed this one (a merge), when there is one."""
    last_updated: datetime | None = None


class RecordExists(ClientRegistryError):
    """A create-only submission (a conditional create) found the caller's record: nothing was
    written."""

    def __init__(self, record_id: str) -> None:
        self.record_id = record_id
        super().__init__(f"Patient/{record_id} exists")


IfMatch = int | Literal["*"]
"""A version the caller's record must be at (``If-Match``), or ``*``: it must exist."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What a submission of a batch did (:meth:`Submitter.submit_batch`): a
    :class:`SubmitResult` without the resource, which a batch has no use for."""

    record_id: str
    golden_id: str
    created: bool
    version: int
    status: MatchStatus
    score: float | None
    rule_set: str | None
    potential: int
    conflicts: int

    @classmethod
    def of(cls, result: SubmitResult) -> Decision:
        return cls(
            result.record_id,
            result.golden_id,
            result.created,
            result.version,
            result.status,
            result.score,
            result.rule_set,
            result.potential,
            result.conflicts,
        )


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
    @property
    def replaced_by(self) -> str | None: ...


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
    replaced_by: str | None = None


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
    """The blocking keys hashed, in the keys' order
    (:func:`~clientregistry.store.blocking_index.ordered_key_hashes`)."""
    tokens: list[tuple[str, str]]
    survivor: SurvivorReference | None = None
    """A Resolve Duplicate (ITI-104): the Patient's ``replaced-by`` link, the record that
    subsumed it (see :mod:`clientregistry.registry.feed`)."""


@dataclass(frozen=True, slots=True)
class _Existing:
    """The caller's record as stored before this submission."""

    id: str
    version: int
    golden_id: str | None
    features: Features
    human_adjudicated: bool
    client_system: str
    replaced_by: str | None
    survives: bool
    """Some record is replaced by this one."""


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
    record: StoredRecord,
    client: ClientSystemConfig | None,
    broken: set[str],
    replaces: Iterable[str] = (),
) -> dict[str, Any]:
    """The FHIR form of a stored source record (``replaces``: the records it subsumed)."""
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
        replaced_by=record.replaced_by,
        replaces=replaces,
    )


def keep_golden(result: Classification, golden_id: Hashable) -> Classification:
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


def best_match(result: Classification, context: RegistryContext) -> tuple[float | None, str | None]:
    """The score and rule set name of the auto match that placed the record (None, None
    without one)."""
    best = result.auto[0] if result.auto else None
    if best is None:
        return None, None
    return best.score.score, context.matcher.rules.rule_sets[best.score.rule_set].name


def _issue_rows(record_id: str, result: Classification, now: datetime) -> list[dict[str, Any]]:
    """The review items a submission opens: its potential matches and conflicts."""
    return [
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


def _token_rows(record_id: str, tokens: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [{"kind": kind, "value": token, "record_id": record_id} for kind, token in tokens]


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
    pending_members: Mapping[str, list[Features]] | None = None,
) -> Classification:
    """Score ``features`` against the blocking candidates and classify them (the one candidate
    search and classification that submissions, re-matching and review all use);
    ``candidates`` are the rows of ``keys`` (:func:`send_candidates`), when the caller has
    them.

    The record joins a golden record only if its members do not reject it
    (:mod:`~clientregistry.matching.cannot_link`: a different value of a unique identifier
    system with one of them, or no match with most of them); otherwise the
    next golden record it auto-matches is tried, and without one it stands alone, its auto
    matches conflicts for review. The members come with the candidates (the rows of
    :data:`_CANDIDATE_ROWS`), no query more; ``pending_members``: members not stored yet
    (records a batch placed before this one), by golden record."""
    matcher = context.matcher
    if candidates is None:
        candidates = send_candidates(session.connection(), context, ordered_key_hashes(keys))
    rows = candidates.all()
    # Nor may it join a golden record that holds a record it is broken from (through a
    # third record that matches both): "not the same person" holds for the golden record.
    excluded = golden_ids_of(session, broken)
    stored = [
        (rid, golden, feats)
        for rid, golden, feats, shared in rows
        if shared
        and rid != record_id
        and rid not in broken
        and golden is not None
        and golden not in excluded
    ]
    if not stored:
        return Classification(None)
    scored = matcher.candidates(features, stored, context.term_counts.tf)
    result = classify(scored, current_golden=old_golden, broken=broken)
    if result.golden_id is None:
        return result
    members: dict[str, list[Features]] = {}
    for rid, golden, feats, _ in rows:
        if rid != record_id and golden is not None:
            members.setdefault(golden, []).append(feats)
    cannot, tf = matcher.cannot_links, context.term_counts.tf

    def allowed(golden: Hashable, _: list[Candidate]) -> bool:
        held = members.get(str(golden), [])
        if pending_members is not None:
            held = [*held, *pending_members.get(str(golden), ())]
        return not cannot.rejects(features, held, tf)

    return consistent(result, allowed)


def send_candidates(
    connection: Connection, context: RegistryContext, hashes: list[int]
) -> PendingRows:
    """Query the records chosen as candidates for a record with blocking keys ``hashes``
    (in its keys' order, :func:`~clientregistry.store.blocking_index.ordered_key_hashes`):
    one more than the candidate limit, best first (inside
    :func:`~clientregistry.store.driver.pipelined` only queued)."""
    if not hashes:
        return PendingRows(rows=[])
    limit = context.matcher.candidate_limit + 1
    return _CANDIDATE_ROWS.send(connection, selection_params(hashes, limit))


def prepare_submission(
    matcher: Matcher, patient: Mapping[str, Any], client: ClientSystemConfig
) -> Submission:
    """:meth:`Submitter.prepare` with a matcher of its own (a process that reads a file for
    an import prepares its records without a database)."""
    system, value = require_internal_identifier(patient, [client.internal_id_system])
    features = matcher.extractor.extract(patient)
    keys = matcher.blocker.keys(features)
    return Submission(
        patient,
        client,
        system,
        value,
        features,
        keys,
        ordered_key_hashes(keys),
        search_tokens(patient),
        replaced_by_link(patient),
    )


class Submitter:
    """The submit use case over a :class:`RegistryContext`."""

    def __init__(self, context: RegistryContext) -> None:
        self.context = context

    def prepare(self, patient: Mapping[str, Any], client: ClientSystemConfig) -> Submission:
        """Check the caller's identifier and derive features, blocking keys and search tokens
        (no database); an :class:`~clientregistry.fhir.errors.FhirError` when it is missing."""
        return prepare_submission(self.context.matcher, patient, client)

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
        audit_detail: dict[str, Any] | None = None,
        if_match: IfMatch | None = None,
        create_only: bool = False,
        preferred_id: str | None = None,
    ) -> SubmitResult:
        """:meth:`submit` for a Patient :meth:`prepare` has read already; ``commit`` commits
        the session's transaction with the writes (on PostgreSQL in the same round trip), for
        a caller whose transaction is this submission alone. Without ``wait_for_locks``, a
        lock held by another transaction raises
        :class:`~clientregistry.store.errors.WouldWait` instead of waiting for it (roll back
        and submit again, waiting, somewhere waiting blocks nothing else). ``if_match``: the
        caller's record must exist at that version (412 otherwise); ``create_only``: raise
        :class:`RecordExists` rather than update; ``preferred_id``: the id a created record
        gets (a conditional update's body id; an update ignores it, where ``url_id`` must be
        the record's). Refusals come before any write.

        First the reads, which decide everything (the caller's record, the candidates, the
        golden record); then the writes, which read nothing back. On PostgreSQL each goes in
        one round trip (:func:`~clientregistry.store.driver.pipelined`): ``BEGIN``, the
        locks, the caller's record and the candidates; then the writes (and ``COMMIT``). An
        update whose record loses blocking keys takes their locks, and reads its record
        again, after.
        """
        context = self.context
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
        _check_owner(existing, client, system, value)
        _check_version(existing, if_match, system, value)
        if create_only and existing is not None:
            raise RecordExists(existing.id)
        chosen_id = url_id or preferred_id
        if chosen_id is not None and existing is None:
            _check_new_id(connection, chosen_id, client, system, value)
        if url_id is not None and existing is not None and existing.id != url_id:
            raise conflict(
                f"Patient/{url_id} is not the record of {system}|{value} "
                f"(that is Patient/{existing.id})",
                ["Patient.identifier"],
            )
        now = _now()
        if existing is None:
            record_id = chosen_id or new_id()
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
        score, rule_set = best_match(result, context)
        snapshot = RecordSnapshot(
            id=record_id,
            version=version,
            last_updated=now,
            resource=dict(submission.patient),
            client_system=client.name if existing is None else existing.client_system,
            golden_id=placement.golden_id,
            match_status=status,
            human_adjudicated=existing is not None and existing.human_adjudicated,
            replaced_by=None if existing is None else existing.replaced_by,
        )
        replaces = _replaces(connection, record_id) if existing and existing.survives else []
        submitted = SubmitResult(
            record_id=record_id,
            golden_id=placement.golden_id,
            created=existing is None,
            version=version,
            resource=source_resource(snapshot, client, broken, replaces),
            status=status,
            score=score,
            rule_set=rule_set,
            potential=len(result.potential),
            conflicts=len(result.conflicts),
            replaced_by=snapshot.replaced_by,
            last_updated=now,
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
            _INSERT_TOKENS.execute(connection, _token_rows(record_id, submission.tokens))
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
            _INSERT_ISSUES.execute(connection, _issue_rows(record_id, result, now))
            index.add_hashes(record_id, submission.hashes)
            # Old and new values in one statement: unchanged ones sum to nothing.
            bump_many(session, counts)
            audit.record_submission(session, submitted, client.name, source_address, audit_detail)
        context.term_counts.add(features)
        count_submission(status.value)
        return submitted

    def submit_batch(
        self,
        session: Session,
        submissions: Sequence[Submission],
        *,
        source_address: str | None = None,
        audit_detail: dict[str, Any] | None = None,
    ) -> list[Decision]:
        """Submit many Patients in the caller's transaction, in order, with the same
        decisions as submitting them one after another (:meth:`submit_prepared`), but with
        one statement per table for the lot.

        The transaction holds the whole registry (PostgreSQL: :func:`lock_registry`; SQLite:
        its single writer), so nothing else changes it meanwhile. The records a batch
        creates are matched from one read of the postings of all their blocking keys and one
        of their candidates' records, each against the stored records and those created
        before it in the batch, ranked as the candidates query ranks them (keys in common,
        then record id: ids made in one process only grow, see
        :func:`~clientregistry.store.models.new_id`); a record that updates a stored one
        (or one created earlier in the batch) goes through :meth:`submit_prepared` after
        what comes before it is written.
        """
        session.flush()
        connection = session.connection()
        lock_registry(session)
        stored = _existing_identifiers(connection, submissions)
        decisions: list[Decision] = []
        creates: list[Submission] = []
        for submission in submissions:
            identifier = (submission.system, submission.value)
            if identifier in stored:
                decisions += self._create_many(session, creates, source_address, audit_detail)
                creates = []
                result = self.submit_prepared(
                    session, submission, source_address=source_address, audit_detail=audit_detail
                )
                decisions.append(Decision.of(result))
            else:
                creates.append(submission)
                stored.add(identifier)
        decisions += self._create_many(session, creates, source_address, audit_detail)
        return decisions

    def _create_many(
        self,
        session: Session,
        submissions: list[Submission],
        source_address: str | None,
        audit_detail: dict[str, Any] | None,
    ) -> list[Decision]:
        """Create a record for each submission (none of them stored yet); see
        :meth:`submit_batch`."""
        if not submissions:
            return []
        context = self.context
        connection = session.connection()
        index = DatabaseBlockingIndex(session)
        record_ids = [new_id() for _ in submissions]
        ranked = rank_new_records(
            index.newest_postings(
                sorted({h for s in submissions for h in s.hashes}), DEFAULT_BLOCK_LIMIT
            ),
            record_ids,
            [s.hashes for s in submissions],
            context.matcher.candidate_limit + 1,
        )
        created = set(record_ids)
        rows_of = _candidate_rows_by_id(
            connection, sorted({r for top in ranked for r in top if r not in created})
        )
        writes = _BatchWrites(datetime.now(UTC))
        decisions = []
        # The persons of the stored candidates, with their records (the cannot-link check),
        # to which the records the batch places are added as they come.
        placed = _members_of(connection, sorted({row[1] for row in rows_of.values() if row[1]}))
        for record_id, submission, top in zip(record_ids, submissions, ranked, strict=True):
            candidates = PendingRows(rows=[rows_of[r] for r in top if r in rows_of])
            result = find_matches(
                session,
                context,
                record_id,
                submission.features,
                submission.keys,
                None,
                set(),
                candidates=candidates,
                pending_members=placed,
            )
            placement = _place(connection, record_id, result, None)
            status = match_status(result)
            score, rule_set = best_match(result, context)
            decision = Decision(
                record_id,
                placement.golden_id,
                True,
                1,
                status,
                score,
                rule_set,
                len(result.potential),
                len(result.conflicts),
            )
            writes.add(submission, decision, placement, result)
            count_submission(status.value)
            rows_of[record_id] = (record_id, placement.golden_id, submission.features, 1)
            placed.setdefault(placement.golden_id, []).append(submission.features)
            context.term_counts.add(submission.features)
            decisions.append(decision)
        writes.write(session, context, source_address, audit_detail)
        return decisions

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


def _existing_identifiers(
    connection: Connection, submissions: Sequence[Submission]
) -> set[tuple[str, str]]:
    """The internal identifiers among ``submissions``' that stored records hold."""
    values: dict[str, set[str]] = {}
    for submission in submissions:
        values.setdefault(submission.system, set()).add(submission.value)
    found: set[tuple[str, str]] = set()
    for system, wanted in values.items():
        ordered = sorted(wanted)
        for start in range(0, len(ordered), _IDS_PER_QUERY):
            chunk = ordered[start : start + _IDS_PER_QUERY]
            rows = _STORED_IDENTIFIERS.send(connection, {"system": system, "values": chunk})
            found.update((system, value) for (value,) in rows.all())
    return found


def _candidate_rows_by_id(
    connection: Connection, record_ids: list[str]
) -> dict[str, tuple[str, str | None, Features, int]]:
    """``(id, golden id, features, 1)`` of stored records, by id (rows of
    :data:`_CANDIDATE_ROWS`)."""
    rows: dict[str, tuple[str, str | None, Features, int]] = {}
    for start in range(0, len(record_ids), _IDS_PER_QUERY):
        chunk = record_ids[start : start + _IDS_PER_QUERY]
        for row in _RECORDS_BY_ID.send(connection, {"ids": chunk}).all():
            rows[row[0]] = (row[0], row[1], row[2], 1)
    return rows


def _members_of(connection: Connection, golden_ids: list[str]) -> dict[str, list[Features]]:
    """The features of the records of ``golden_ids`` (at most
    :data:`~clientregistry.matching.cannot_link.MAX_MEMBERS` of each), by golden record."""
    members: dict[str, list[Features]] = {}
    for start in range(0, len(golden_ids), _IDS_PER_QUERY):
        chunk = golden_ids[start : start + _IDS_PER_QUERY]
        for golden, features in _MEMBERS_OF.send(connection, {"ids": chunk}).all():
            held = members.setdefault(golden, [])
            if len(held) < MAX_MEMBERS:
                held.append(features)
    return members


class _BatchWrites:
    """The rows of the records a batch creates, each table written in one statement."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.goldens: dict[str, dict[str, Any]] = {}
        """Golden records the batch creates (their version counts the batch's joins)."""
        self.touched: dict[str, int] = {}
        """Stored golden records the batch's records join, and how many join each."""
        self.records: list[dict[str, Any]] = []
        self.versions: list[dict[str, Any]] = []
        self.tokens: list[dict[str, Any]] = []
        self.links: list[dict[str, Any]] = []
        self.issues: list[dict[str, Any]] = []
        self.keys: list[tuple[str, list[int]]] = []
        self.audited: list[tuple[Decision, str]] = []

    def add(
        self,
        submission: Submission,
        decision: Decision,
        placement: _Placement,
        result: Classification,
    ) -> None:
        now = self.now
        record_id, golden_id = decision.record_id, decision.golden_id
        if placement.new_golden:
            self.goldens[golden_id] = {
                "id": golden_id,
                "version": 1,
                "last_updated": now,
                "active": True,
            }
        for golden in placement.touched:
            created = self.goldens.get(golden)
            if created is not None:
                created["version"] += 1
            else:
                self.touched[golden] = self.touched.get(golden, 0) + 1
        resource = dict(submission.patient)
        self.records.append(
            {
                "id": record_id,
                "client_system": submission.client.name,
                "internal_system": submission.system,
                "internal_value": submission.value,
                "human_adjudicated": False,
                "version": 1,
                "last_updated": now,
                "resource": resource,
                "features": submission.features,
                "golden_id": golden_id,
                "match_status": decision.status,
            }
        )
        self.versions.append(
            {"record_id": record_id, "version": 1, "resource": resource, "last_updated": now}
        )
        self.tokens += _token_rows(record_id, submission.tokens)
        self.links.append(
            {
                "source_record_id": record_id,
                "golden_id": golden_id,
                "kind": LinkKind.AUTO,
                "score": decision.score,
                "rule_set": decision.rule_set,
                "created_at": now,
            }
        )
        self.issues += _issue_rows(record_id, result, now)
        self.keys.append((record_id, submission.hashes))
        self.audited.append((decision, submission.client.name))

    def write(
        self,
        session: Session,
        context: RegistryContext,
        source_address: str | None,
        audit_detail: dict[str, Any] | None,
    ) -> None:
        connection = session.connection()
        counts = [
            delta
            for record in self.records
            for delta in feature_deltas(context.term_counts, record["features"], 1)
        ]
        if self.touched:
            connection.execute(
                _TOUCH_GOLDEN_BY,
                [
                    {"golden": golden, "joined": n, "now": self.now}
                    for golden, n in sorted(self.touched.items())
                ],
            )
        with pipelined(connection):
            _INSERT_GOLDEN.execute(connection, list(self.goldens.values()))
            _INSERT_RECORD.execute(connection, self.records)
            _INSERT_VERSION.execute(connection, self.versions)
            self.tokens.sort(key=operator.itemgetter("kind", "value", "record_id"))
            _INSERT_TOKENS.execute(connection, self.tokens)
            _INSERT_LINK.execute(connection, self.links)
            _INSERT_ISSUES.execute(connection, self.issues)
            DatabaseBlockingIndex(session).add_new(self.keys)
            bump_many(session, counts)
            audit.record_submissions(session, self.audited, source_address, audit_detail)


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
    record_id, version, golden_id, features, adjudicated, owner, replaced_by, survives = rows[0]
    return _Existing(
        record_id,
        version,
        golden_id,
        features,
        bool(adjudicated),
        owner,
        replaced_by,
        bool(survives),
    )


def _check_owner(
    existing: _Existing | None, client: ClientSystemConfig, system: str, value: str
) -> None:
    """403 when the record of ``system|value`` belongs to another client system (one
    identifier domain has one source)."""
    if existing is not None and existing.client_system != client.name:
        raise FhirError(
            403,
            "forbidden",
            f"The record of {system}|{value} (Patient/{existing.id}) was submitted by another "
            f"client system; {client.name!r} may not change it",
            ["Patient.identifier"],
        )


def _check_version(
    existing: _Existing | None, if_match: IfMatch | None, system: str, value: str
) -> None:
    """412 when ``If-Match`` names a version the caller's record is not at."""
    if if_match is None:
        return
    if existing is None:
        raise precondition_failed(
            f"If-Match: there is no record of {system}|{value} yet; nothing was stored"
        )
    if if_match != "*" and existing.version != if_match:
        raise precondition_failed(
            f"If-Match: version {if_match} is not the current version of Patient/{existing.id} "
            f"(it is {existing.version}); read it again. Nothing was stored"
        )


def _check_new_id(
    connection: Connection, url_id: str, client: ClientSystemConfig, system: str, value: str
) -> None:
    """``PUT Patient/{id}`` of an identifier the registry does not hold yet creates the record
    with that id, unless the id is taken (409)."""
    if connection.execute(_IS_GOLDEN, {"golden": url_id}).first() is not None:
        raise conflict(
            f"Patient/{url_id} is a golden record; source records cannot take its id",
            ["Patient.id"],
        )
    holder = connection.execute(_HOLDER, {"record": url_id}).first()
    if holder is None:
        return
    owner, held_system, held_value = holder
    if owner != client.name:
        raise conflict(
            f"Patient/{url_id} is a record of another client system; choose another id "
            f"for {system}|{value}",
            ["Patient.id"],
        )
    raise conflict(
        f"Patient/{url_id} is the record of {held_system}|{held_value}, not of {system}|{value} "
        "(a record's identifier never changes; use another id)",
        ["Patient.identifier"],
    )


def _replaces(connection: Connection, record_id: str) -> list[str]:
    """The records ``record_id`` subsumed."""
    return [row[0] for row in connection.execute(_REPLACES, {"record": record_id})]


def replaced_records(session: Session, record_ids: Collection[str]) -> dict[str, list[str]]:
    """For each of ``record_ids``, the records it subsumed (merges), in id order."""
    out: dict[str, list[str]] = {i: [] for i in record_ids}
    if not record_ids:
        return out
    rows = session.execute(
        select(SourceRecord.replaced_by, SourceRecord.id)
        .where(SourceRecord.replaced_by.in_(sorted(record_ids)))
        .order_by(SourceRecord.id)
    )
    for survivor, subsumed in rows:
        out[str(survivor)].append(subsumed)
    return out


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
