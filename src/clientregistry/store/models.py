"""The registry's tables (SQLAlchemy 2 typed declarative models).

Records and matching
    * :class:`SourceRecord` — a Patient as a point-of-service system submitted it, its features
      and its current golden record; :class:`SourceRecordVersion` — its earlier versions.
    * :class:`GoldenRecord` — the CRUID every linked source record shares.
    * :class:`Link` — how a source record came to its golden record (auto or manual, score);
      the current golden record is ``SourceRecord.golden_id``.
    * :class:`MatchIssue` — the review queue; :class:`BrokenMatch` — "not the same person".
    * :class:`BlockingKey` — hashed blocking keys; :class:`TermCount` — value frequencies.
    * :class:`SearchToken` — folded search values (the search and PIXm index).

Bulk jobs and decision rules
    :class:`BulkJob` — an import, re-match or export and its progress; :class:`ImportRow` —
    an import's report line per input row; :class:`RematchChange` — a re-match's plan.
    :class:`RulesVersion` — stored rules files; :class:`RulesState` — the rules in force;
    :class:`RulesActivation` — their history.

Security
    :class:`AuditEvent` (chained: :class:`AuditChainHead`; delivered: :class:`AuditDelivery`),
    :class:`User`, :class:`Token`, :class:`ClientSystem`.

Timestamps are aware UTC datetimes; enums are stored by value in ``VARCHAR`` columns.
The schema is created by the Alembic migrations in ``store/migrations``, never by
``create_all``; a test checks that the two agree.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from clientregistry.matching.features import Features
from clientregistry.request_id import current_request_id
from clientregistry.store.columns import (
    BigIntPK,
    FeaturesJSON,
    JsonText,
    UTCDateTime,
    string_enum,
    utcnow,
)
from clientregistry.store.enums import (
    AgentKind,
    AuditAction,
    IssueKind,
    IssueStatus,
    JobKind,
    JobOrigin,
    JobState,
    LinkKind,
    MatchStatus,
    Role,
    RowOutcome,
)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID_LENGTH = 64
"""Room for a UUID (36) or a client-chosen FHIR id (at most 64 characters)."""


TOKEN_VALUE = String(255).with_variant(String(255, collation="C"), "postgresql")
"""Search token values compare by code point (``C`` collation on PostgreSQL, SQLite's default
``BINARY``), so that prefix ranges (``value >= 'x' AND value < 'x\U0010ffff'``) are exact."""


_last_id = [0]
_id_lock = threading.Lock()
_RANDOM_B = (1 << 62) - 1
"""The 62 random bits after the variant (``rand_b`` of RFC 9562)."""


def new_id() -> str:
    """A new record id: a UUID of version 7 (RFC 9562) as text.

    The first 48 bits are the time in milliseconds and the other 74 are random, so ids are
    unguessable and unique like UUID 4's, and ids made one after another sort together: every
    index keyed by a record id (the tables' keys, links, blocking keys, search tokens, audit
    entities) takes new entries on its last pages instead of on a random page each, which keeps
    the pages a submission writes (and SQLite's WAL) several times smaller. An id reveals when
    its record was created, to the millisecond, which its ``meta.lastUpdated`` shows anyway.

    Within a process ids only grow (RFC 9562's "monotonic random" method): an id made in the
    same millisecond as the one before is that one plus a random step, so records created one
    after another (an import's batch) sort in the order they were made, which is the order in
    which candidates sharing as many blocking keys are taken.
    """
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # variant RFC 9562
    with _id_lock:
        last = _last_id[0]
        if value <= last:
            step = 1 + int.from_bytes(os.urandom(4), "big")
            if (last & _RANDOM_B) + step <= _RANDOM_B:
                value = last + step
            else:  # the millisecond's random bits ran out: borrow the next millisecond
                value = ((last >> 80) + 1) << 80 | (value & ((1 << 80) - 1))
        _last_id[0] = value
    return str(uuid.UUID(int=value))


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# ----------------------------------------------------------------------------- records


class GoldenRecord(Base):
    """A golden record: the CRUID shared by the source records of one person."""

    __tablename__ = "golden_record"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    version: Mapped[int] = mapped_column(Integer, default=1)
    last_updated: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    replaced_by: Mapped[str | None] = mapped_column(
        String(ID_LENGTH), ForeignKey("golden_record.id"), index=True
    )
    """The golden record that took over when this one was left without source records."""
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class SourceRecord(Base):
    """A Patient as submitted by a client system."""

    __tablename__ = "source_record"
    __table_args__ = (
        UniqueConstraint("internal_system", "internal_value"),
        Index(
            "ix_source_record_auto_links",
            "last_updated",
            "match_status",
            "human_adjudicated",
            sqlite_where=text("match_status = 'auto' AND human_adjudicated IS 0"),
            postgresql_where=text("match_status = 'auto' AND human_adjudicated IS false"),
        ),
    )
    """``ix_source_record_auto_links``: the records the engine linked by itself that no person
    has confirmed (the review queue of automatic links), newest first — a partial index, so
    it holds those records only; with the columns of its condition, it alone answers a count."""

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True, default=new_id)
    client_system: Mapped[str] = mapped_column(String(128), index=True)
    """Name of the :class:`ClientSystem` that submitted it (not a foreign key: systems may be
    configured from files)."""
    internal_system: Mapped[str] = mapped_column(String(255))
    internal_value: Mapped[str] = mapped_column(String(255))
    """The submitting system's own identifier of the record (system URI and value)."""
    version: Mapped[int] = mapped_column(Integer, default=1)
    last_updated: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    resource: Mapped[dict[str, Any]] = mapped_column(JsonText())
    """The stored FHIR Patient."""
    features: Mapped[Features] = mapped_column(FeaturesJSON())
    golden_id: Mapped[str | None] = mapped_column(
        String(ID_LENGTH), ForeignKey("golden_record.id"), index=True
    )
    match_status: Mapped[MatchStatus] = mapped_column(
        string_enum(MatchStatus), default=MatchStatus.NONE
    )
    human_adjudicated: Mapped[bool] = mapped_column(Boolean, default=False)
    replaced_by: Mapped[str | None] = mapped_column(String(ID_LENGTH), index=True)
    """The source record that subsumed this one (Resolve Duplicate, ``$merge``): this one is
    served inactive, with a ``replaced-by`` link to it. Not a foreign key (see migration
    0003)."""


class SourceRecordVersion(Base):
    """An earlier (or the current) version of a source record, for ``_history``."""

    __tablename__ = "source_record_version"

    record_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("source_record.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource: Mapped[dict[str, Any]] = mapped_column(JsonText())
    last_updated: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Link(Base):
    """How a source record was linked to a golden record (one row per decision)."""

    __tablename__ = "link"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    source_record_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("source_record.id", ondelete="CASCADE"), index=True
    )
    golden_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("golden_record.id"), index=True
    )
    kind: Mapped[LinkKind] = mapped_column(string_enum(LinkKind))
    score: Mapped[float | None] = mapped_column(Float)
    rule_set: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


# ----------------------------------------------------------------------------- review


class MatchIssue(Base):
    """A review-queue item: ``record_id`` may be ``other_record_id`` (potential or conflict)."""

    __tablename__ = "match_issue"
    __table_args__ = (Index(None, "status", "kind", "created_at"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    record_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("source_record.id", ondelete="CASCADE"), index=True
    )
    other_record_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("source_record.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[IssueKind] = mapped_column(string_enum(IssueKind))
    score: Mapped[float | None] = mapped_column(Float)
    status: Mapped[IssueStatus] = mapped_column(string_enum(IssueStatus), default=IssueStatus.OPEN)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_by: Mapped[str | None] = mapped_column(String(128))


class BrokenMatch(Base):
    """Two source records that are not the same person; stored with ``record_a < record_b``
    (build it with :meth:`pair`)."""

    __tablename__ = "broken_match"
    __table_args__ = (CheckConstraint("record_a < record_b", name="ordered"),)

    record_a: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("source_record.id", ondelete="CASCADE"), primary_key=True
    )
    record_b: Mapped[str] = mapped_column(
        String(ID_LENGTH),
        ForeignKey("source_record.id", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    @classmethod
    def pair(cls, one: str, other: str) -> BrokenMatch:
        """The broken match of two distinct records, in either order."""
        if one == other:
            raise ValueError("a record cannot be a broken match of itself")
        low, high = sorted((one, other))
        return cls(record_a=low, record_b=high)


# ----------------------------------------------------------------------------- matching data


class BlockingKey(Base):
    """One blocking key of one source record, as a signed 64-bit hash (see
    :func:`clientregistry.store.blocking_index.key_hash`)."""

    __tablename__ = "blocking_key"
    __table_args__ = ({"sqlite_with_rowid": False},)

    key_hash: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    """Leading column of the primary key, which is the index on ``key_hash``."""
    record_id: Mapped[str] = mapped_column(
        String(ID_LENGTH),
        ForeignKey("source_record.id", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    )


class SearchToken(Base):
    """One search token of one source record (see
    :mod:`clientregistry.registry.search_tokens`): the index the Patient search and PIXm
    narrow their candidates with. Kept by the submission that stores the record."""

    __tablename__ = "search_token"
    __table_args__ = ({"sqlite_with_rowid": False},)

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(TOKEN_VALUE, primary_key=True)
    """Leading columns of the primary key, which is the index on ``(kind, value)``."""
    record_id: Mapped[str] = mapped_column(
        String(ID_LENGTH),
        ForeignKey("source_record.id", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    )


class TermCount(Base):
    """How many source records hold ``value`` in feature slot ``slot``."""

    __tablename__ = "term_count"
    __table_args__ = ({"sqlite_with_rowid": False},)

    slot: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    value: Mapped[str] = mapped_column(String(255), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)


# ----------------------------------------------------------------------------- bulk jobs


class BulkJob(Base):
    """An import, a re-match or an export: its parameters, where it stands and who runs it.

    Progress is committed with the work it describes (a batch of an import commits its
    records, their report rows and the job's new cursor together), so a job stopped at any
    moment continues exactly where its last batch ended. A job the server runs is held by a
    lease (``lease_owner`` until ``lease_until``), renewed as it works; a runner takes up an
    unfinished job whose lease has run out (its runner died).
    """

    __tablename__ = "bulk_job"
    __table_args__ = (Index(None, "kind", "state"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    kind: Mapped[JobKind] = mapped_column(string_enum(JobKind))
    state: Mapped[JobState] = mapped_column(string_enum(JobState), default=JobState.QUEUED)
    origin: Mapped[JobOrigin] = mapped_column(string_enum(JobOrigin, length=8))
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    """What makes two runs the same job (an import: the file's content and the options)."""
    params: Mapped[dict[str, Any]] = mapped_column(JsonText())
    progress: Mapped[dict[str, Any]] = mapped_column(JsonText(), default=dict)
    """Counts and the phase, as the job last committed them."""
    cursor: Mapped[dict[str, Any]] = mapped_column(JsonText(), default=dict)
    """Where to continue (an import: rows done and the byte offset after them)."""
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)


class ImportRow(Base):
    """What became of one input row of an import: its report line."""

    __tablename__ = "import_row"
    __table_args__ = ({"sqlite_with_rowid": False},)

    job_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("bulk_job.id", ondelete="CASCADE"), primary_key=True
    )
    row: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    """1-based number of the row among the file's records."""
    line: Mapped[int | None] = mapped_column(Integer)
    entry: Mapped[int | None] = mapped_column(Integer)
    """Index of the entry in a Bundle (a Bundle has no lines)."""
    input_id: Mapped[str | None] = mapped_column(String(255))
    """The row's own id (the Patient's ``id``, the CSV's id column)."""
    record_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    golden_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    """The CRUID the record got."""
    outcome: Mapped[RowOutcome] = mapped_column(string_enum(RowOutcome))
    created: Mapped[bool] = mapped_column(Boolean, default=True)
    """False when the row updated a record the system had sent before."""
    score: Mapped[float | None] = mapped_column(Float)
    rule_set: Mapped[str | None] = mapped_column(String(128))
    potential: Mapped[int] = mapped_column(Integer, default=0)
    conflicts: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str | None] = mapped_column(Text)


class RematchChange(Base):
    """One record's change in a re-match's plan (written by the dry run or the first step of
    applying it, applied in batches)."""

    __tablename__ = "rematch_change"
    __table_args__ = ({"sqlite_with_rowid": False},)

    job_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("bulk_job.id", ondelete="CASCADE"), primary_key=True
    )
    record_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    """The record's version the plan was made from (a record changed since is re-matched
    on its own instead)."""
    golden_before: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    golden_after: Mapped[str] = mapped_column(String(ID_LENGTH))
    new_golden: Mapped[bool] = mapped_column(Boolean, default=False)
    status_before: Mapped[MatchStatus] = mapped_column(string_enum(MatchStatus))
    status_after: Mapped[MatchStatus] = mapped_column(string_enum(MatchStatus))
    score: Mapped[float | None] = mapped_column(Float)
    rule_set: Mapped[str | None] = mapped_column(String(128))
    issues: Mapped[list[Any]] = mapped_column(JsonText(), default=list)
    """The record's review items under the new rules: ``[other record, kind, score]``."""
    issues_before: Mapped[list[Any]] = mapped_column(JsonText(), default=list)
    applied: Mapped[bool] = mapped_column(Boolean, default=False)


# ----------------------------------------------------------------------------- decision rules


class RulesVersion(Base):
    """A decision-rules file as uploaded (checked before it is stored)."""

    __tablename__ = "rules_version"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(255))
    """The file's name."""
    note: Mapped[str | None] = mapped_column(Text)
    content: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64), index=True)


class RulesState(Base):
    """The rules in force (one row, ``id`` 1): every registry process reloads when
    ``generation`` changes.

    ``layout`` is the order of the feature slots stored records' features follow (a list of
    ``[fhirpath, value type, is an identifier set]``), which only grows: a change of rules
    adds the new rules' slots after the old ones, so that stored features serve the old and
    the new rules alike while a change is applied. ``pending_version`` is a change being
    applied: records are given its features and blocking keys too until it is switched on.
    ``key_plan`` says which blocking keys the stored records hold.
    """

    __tablename__ = "rules_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    active_version: Mapped[int | None] = mapped_column(BigIntPK, ForeignKey("rules_version.id"))
    """None: the rules of the configuration file (or the built-in rules)."""
    pending_version: Mapped[int | None] = mapped_column(BigIntPK, ForeignKey("rules_version.id"))
    generation: Mapped[int] = mapped_column(Integer, default=0)
    layout: Mapped[list[Any] | None] = mapped_column(JsonText())
    key_plan: Mapped[str | None] = mapped_column(String(64))
    """Digest of how the stored records' blocking keys were derived
    (:meth:`~clientregistry.matching.blocking.Blocker.signature`); None: not recorded."""
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class RulesActivation(Base):
    """One switch of the rules in force (the history that "restore the previous" reads)."""

    __tablename__ = "rules_activation"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    version_id: Mapped[int | None] = mapped_column(BigIntPK, ForeignKey("rules_version.id"))
    previous_version: Mapped[int | None] = mapped_column(BigIntPK, ForeignKey("rules_version.id"))
    activated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    activated_by: Mapped[str] = mapped_column(String(128))
    job_id: Mapped[int | None] = mapped_column(BigIntPK, ForeignKey("bulk_job.id"))


# ----------------------------------------------------------------------------- security


class AuditEvent(Base):
    """One audited action, with the FHIR AuditEvent resource that describes it."""

    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_event_event_type", "event_type", "id"),
        Index(
            "ix_audit_event_failures",
            "outcome",
            "id",
            sqlite_where=text("outcome != 0"),
            postgresql_where=text("outcome != 0"),
        ),
    )
    """The audit trail's filters by event type and by outcome (the failures only: few)."""

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    recorded: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    action: Mapped[AuditAction] = mapped_column(string_enum(AuditAction, length=1))
    outcome: Mapped[int] = mapped_column(Integer, default=0)
    """0 success, 4 minor failure, 8 serious failure, 12 major failure (AuditOutcome)."""
    event_type: Mapped[str] = mapped_column(String(64))
    """E.g. ``ITI-104``, ``rest-create``, ``login``."""
    agent: Mapped[str] = mapped_column(String(128), index=True)
    agent_kind: Mapped[AgentKind] = mapped_column(string_enum(AgentKind))
    source_address: Mapped[str | None] = mapped_column(String(128))
    entity: Mapped[str | None] = mapped_column(String(255), index=True)
    """E.g. ``Patient/123``."""
    detail: Mapped[dict[str, Any] | None] = mapped_column(JsonText())
    """CRUID, rule set, score ..."""
    resource: Mapped[dict[str, Any] | None] = mapped_column(JsonText())
    """The FHIR AuditEvent resource."""
    request_id: Mapped[str | None] = mapped_column(String(64), index=True)
    """The HTTP request's id (its ``X-Request-Id`` header), when a request caused it."""
    chain_seq: Mapped[int | None] = mapped_column(BigInteger, unique=True, index=True)
    """The event's place in the tamper-evident chain (1, 2, 3 … without gaps; see
    :mod:`clientregistry.store.audit_chain`)."""
    chain_hash: Mapped[str | None] = mapped_column(String(64))
    """SHA-256 (hex) over the previous event's hash, ``chain_seq`` and this row's columns."""


@event.listens_for(AuditEvent, "before_insert")
def _request_id(_mapper: Any, connection: Any, audit_event: AuditEvent) -> None:
    """An event added through the ORM records the request being served (the driver's inserts
    of ``registry.audit`` name it themselves), and is linked into the audit chain."""
    if audit_event.request_id is None:
        audit_event.request_id = current_request_id()
    from clientregistry.store.audit_chain import link_event

    link_event(connection, audit_event)


class AuditChainHead(Base):
    """The last link of the audit chain (one row, ``id`` 1): its place and hash. Updated in
    the transaction that appends, which holds its row lock until it ends (PostgreSQL), so
    appends are serialised and ``chain_seq`` follows commit order."""

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class AuditDelivery(Base):
    """How far the audit trail has been delivered to an audit repository (ATNA): the
    ``chain_seq`` of the last event written to it, committed after the write completed."""

    __tablename__ = "audit_delivery"

    repository: Mapped[str] = mapped_column(String(255), primary_key=True)
    """``host:port`` of the audit repository."""
    seq: Mapped[int] = mapped_column(BigInteger)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class User(Base):
    """A person who logs in (administration, review, audit)."""

    __tablename__ = "user_account"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(128), unique=True)
    password_hash: Mapped[str] = mapped_column(String(512))
    role: Mapped[Role] = mapped_column(string_enum(Role))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    language: Mapped[str | None] = mapped_column(String(16))
    """The web UI's language this person chose (``en``, ``fr``); None: the browser's."""
    sso_subject: Mapped[str | None] = mapped_column(String(512), unique=True, index=True)
    """``<issuer> <sub>`` of an account made by single sign-on (no usable password); None:
    a local account."""


class Token(Base):
    """A login session token, stored hashed."""

    __tablename__ = "token"

    token_hash: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[int] = mapped_column(
        BigIntPK,
        ForeignKey("user_account.id", ondelete="CASCADE"),
        index=True,
    )
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    """A browser session's last request (it ends after a while idle); None: an API token."""


class ClientSystem(Base):
    """A point-of-service system (certificate CN = ``name``)."""

    __tablename__ = "client_system"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(255))
    internal_id_system: Mapped[str | None] = mapped_column(String(255), unique=True)
    """The identifier system URI whose values are this system's own record ids."""
    permissions: Mapped[list[str]] = mapped_column(JsonText(), default=list)
    cert_serial: Mapped[str | None] = mapped_column(String(128))
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    """Its current certificate is revoked (``certs revoke``; a new one clears it)."""
    revision: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """Raised by every change, so that servers notice changes cheaply (registry.systems)."""
