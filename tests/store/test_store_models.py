"""Round trips of every model, constraints and column types, on each database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session, sessionmaker

from clientregistry.store.db import transaction
from clientregistry.store.enums import (
    AgentKind,
    AuditAction,
    AuditOutcome,
    IssueKind,
    IssueStatus,
    LinkKind,
    MatchStatus,
    Role,
)
from clientregistry.store.errors import Conflict
from clientregistry.store.models import (
    AuditEvent,
    Base,
    BlockingKey,
    BrokenMatch,
    ClientSystem,
    GoldenRecord,
    Link,
    MatchIssue,
    SourceRecord,
    SourceRecordVersion,
    TermCount,
    Token,
    User,
)

MakeRecord = Callable[..., SourceRecord]
WHEN = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
PATIENT = {
    "resourceType": "Patient",
    "identifier": [{"system": "http://clientregistry.org/openmrs", "value": "p1"}],
    "name": [{"family": "Nakato", "given": ["Jane", "Amé"]}],
    "birthDate": "1990-01-31",
}


def _columns(obj: Base) -> dict[str, object]:
    return {column.key: getattr(obj, column.key) for column in obj.__table__.columns}


def _round_trip(factory: sessionmaker[Session], *objects: Base) -> list[Base]:
    """Store ``objects``, read each back in a new session, check every column survived."""
    expected = []
    with transaction(factory) as session:
        session.add_all(objects)
        session.flush()
        expected = [
            (type(obj), session.identity_key(instance=obj)[1], _columns(obj)) for obj in objects
        ]
    loaded = []
    with factory() as session:
        for model, key, columns in expected:
            found = session.get(model, key)
            assert found is not None
            assert _columns(found) == columns
            loaded.append(found)
    return loaded


def test_source_record_round_trip(factory: sessionmaker[Session], make_record: MakeRecord) -> None:
    features = ("jane ame", "nakato", frozenset({"http://x|1", "http://y|2"}), "")
    golden = GoldenRecord(id="g1", last_updated=WHEN)
    record = make_record(
        "r1",
        resource=PATIENT,
        features=features,
        golden_id="g1",
        match_status=MatchStatus.POTENTIAL,
        human_adjudicated=True,
        version=3,
        last_updated=WHEN,
    )
    _, (loaded,) = _round_trip(factory, golden), _round_trip(factory, record)
    assert isinstance(loaded, SourceRecord)
    assert loaded.resource == PATIENT
    assert loaded.features == features
    assert isinstance(loaded.features[2], frozenset)
    assert loaded.match_status is MatchStatus.POTENTIAL
    assert loaded.last_updated == WHEN and loaded.last_updated.tzinfo is UTC


def test_defaults(factory: sessionmaker[Session], make_record: MakeRecord) -> None:
    with transaction(factory) as session:
        session.add(GoldenRecord(id="g1"))
        session.add(make_record("r2"))
    with factory() as session:
        golden = session.get(GoldenRecord, "g1")
        stored = session.get(SourceRecord, "r2")
        assert golden is not None and stored is not None
        assert (golden.version, golden.active, golden.replaced_by) == (1, True, None)
        assert golden.last_updated.tzinfo is UTC
        assert abs(datetime.now(UTC) - golden.last_updated) < timedelta(minutes=5)
        assert stored.match_status is MatchStatus.NONE
        assert (stored.version, stored.human_adjudicated, stored.golden_id) == (1, False, None)


def test_generated_ids(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        golden = GoldenRecord()
        session.add(golden)
        session.flush()
        assert len(golden.id) == 36


def test_versions_links_issues_round_trip(
    factory: sessionmaker[Session], make_record: MakeRecord
) -> None:
    _round_trip(factory, GoldenRecord(id="g1"), GoldenRecord(id="g2", replaced_by="g1"))
    _round_trip(factory, make_record("r1", golden_id="g1"), make_record("r2"))
    _round_trip(
        factory,
        SourceRecordVersion(record_id="r1", version=1, resource=PATIENT, last_updated=WHEN),
        SourceRecordVersion(record_id="r1", version=2, resource={}, last_updated=WHEN),
        Link(
            source_record_id="r1",
            golden_id="g1",
            kind=LinkKind.AUTO,
            score=12.5,
            rule_set="1",
            created_at=WHEN,
        ),
        Link(source_record_id="r2", golden_id="g2", kind=LinkKind.MANUAL, created_at=WHEN),
        MatchIssue(
            record_id="r1",
            other_record_id="r2",
            kind=IssueKind.CONFLICT,
            score=0.5,
            created_at=WHEN,
        ),
        MatchIssue(
            record_id="r2",
            other_record_id="r1",
            kind=IssueKind.POTENTIAL,
            status=IssueStatus.RESOLVED,
            created_at=WHEN,
            resolved_at=WHEN + timedelta(days=1),
            resolved_by="alice",
        ),
    )
    with factory() as session:
        issue = session.scalars(select(MatchIssue).where(MatchIssue.record_id == "r1")).one()
        assert issue.status is IssueStatus.OPEN
        assert issue.id is not None


def test_broken_match(factory: sessionmaker[Session], make_record: MakeRecord) -> None:
    _round_trip(factory, make_record("b"), make_record("a"))
    pair = BrokenMatch.pair("b", "a")
    assert (pair.record_a, pair.record_b) == ("a", "b")
    _round_trip(factory, pair)
    with pytest.raises(Conflict), transaction(factory) as session:
        session.add(BrokenMatch.pair("a", "b"))
    with pytest.raises(Conflict), transaction(factory) as session:
        session.add(BrokenMatch(record_a="b", record_b="a"))  # unordered: the check refuses
    with pytest.raises(ValueError):
        BrokenMatch.pair("a", "a")


def test_blocking_key_and_term_count_round_trip(
    factory: sessionmaker[Session], make_record: MakeRecord
) -> None:
    _round_trip(factory, make_record("r1"))
    _round_trip(
        factory,
        BlockingKey(key_hash=-(2**63), record_id="r1"),
        BlockingKey(key_hash=2**63 - 1, record_id="r1"),
        TermCount(slot=2, value="nakato", count=7),
    )


def test_security_models_round_trip(factory: sessionmaker[Session]) -> None:
    _round_trip(
        factory,
        AuditEvent(
            recorded=WHEN,
            action=AuditAction.CREATE,
            outcome=AuditOutcome.SUCCESS,
            event_type="ITI-104",
            agent="openmrs",
            agent_kind=AgentKind.SYSTEM,
            source_address="10.0.0.1",
            entity="Patient/r1",
            detail={"cruid": "g1", "score": 12.5},
            resource={"resourceType": "AuditEvent", "action": "C"},
        ),
        AuditEvent(
            action=AuditAction.READ,
            outcome=AuditOutcome.MINOR_FAILURE,
            event_type="login",
            agent="alice",
            agent_kind=AgentKind.USER,
        ),
        ClientSystem(
            name="openmrs",
            display_name="OpenMRS",
            internal_id_system="http://clientregistry.org/openmrs",
            permissions=["create", "read"],
            cert_serial="0A1B",
        ),
        ClientSystem(name="dhis2", display_name="DHIS2", revoked=True),
    )
    (user,) = _round_trip(
        factory, User(username="alice", password_hash="$argon2id$x", role=Role.REVIEWER)
    )
    assert isinstance(user, User)
    _round_trip(
        factory, Token(token_hash="ab" * 32, user_id=user.id, expires_at=WHEN, revoked=True)
    )
    with pytest.raises(Conflict), transaction(factory) as session:
        session.add(User(username="alice", password_hash="x", role=Role.ADMIN))


def test_unique_internal_identifier(
    factory: sessionmaker[Session], make_record: MakeRecord
) -> None:
    with transaction(factory) as session:
        session.add(make_record("r1", internal_system="http://a", internal_value="1"))
        session.add(make_record("r2", internal_system="http://b", internal_value="1"))
        session.add(make_record("r3", internal_system="http://a", internal_value="2"))
    with pytest.raises(Conflict), transaction(factory) as session:
        session.add(make_record("r4", internal_system="http://a", internal_value="1"))


def test_foreign_keys_enforced_and_cascade(
    factory: sessionmaker[Session], make_record: MakeRecord
) -> None:
    with pytest.raises(Conflict), transaction(factory) as session:
        session.add(make_record("r1", golden_id="missing"))
    with transaction(factory) as session:
        session.add(make_record("r1"))
        session.flush()
        session.add(BlockingKey(key_hash=1, record_id="r1"))
        session.add(SourceRecordVersion(record_id="r1", version=1, resource={}))
    with transaction(factory) as session:
        record = session.get(SourceRecord, "r1")
        assert record is not None
        session.delete(record)
    with factory() as session:
        assert session.scalars(select(BlockingKey)).all() == []
        assert session.scalars(select(SourceRecordVersion)).all() == []


def test_timestamps_are_utc(factory: sessionmaker[Session]) -> None:
    east = timezone(timedelta(hours=3))
    with transaction(factory) as session:
        session.add(GoldenRecord(id="g1", last_updated=datetime(2024, 1, 1, 12, tzinfo=east)))
    with factory() as session:
        golden = session.get(GoldenRecord, "g1")
        assert golden is not None
        assert golden.last_updated == datetime(2024, 1, 1, 9, tzinfo=UTC)
        assert golden.last_updated.tzinfo is UTC
    with pytest.raises(StatementError) as caught, transaction(factory) as session:
        session.add(GoldenRecord(id="g2", last_updated=datetime(2024, 1, 1)))
    assert isinstance(caught.value.orig, ValueError)  # a naive datetime is a programming error


def test_enums_stored_as_their_values(
    engine: Engine, factory: sessionmaker[Session], make_record: MakeRecord
) -> None:
    with transaction(factory) as session:
        session.add(make_record("r1", match_status=MatchStatus.CONFLICT))
        session.add(
            AuditEvent(
                action=AuditAction.EXECUTE,
                event_type="ITI-83",
                agent="x",
                agent_kind=AgentKind.SYSTEM,
            )
        )
    with engine.connect() as connection:
        status = connection.execute(text("SELECT match_status FROM source_record")).scalar()
        action = connection.execute(text("SELECT action, outcome FROM audit_event")).one()
    assert status == "conflict"
    assert tuple(action) == ("E", 0)
