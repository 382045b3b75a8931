"""DriverInsert, DriverStatement and DriverQuery: prebuilt statements run on the driver's
cursor write and read what Core would, inside the session's transaction, and fail as Core
would; inside ``pipelined`` they go together (one round trip on PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from clientregistry.store.db import translate_errors
from clientregistry.store.driver import DriverInsert
from clientregistry.store.enums import AgentKind, AuditAction
from clientregistry.store.errors import Conflict
from clientregistry.store.models import AuditEvent, GoldenRecord

WHEN = datetime(2026, 12, 6, 5, 10, 0, 123456, tzinfo=UTC)


def _event(agent: str) -> dict[str, object]:
    return {
        "recorded": WHEN,
        "action": AuditAction.CREATE,
        "outcome": 0,
        "event_type": "create",
        "agent": agent,
        "agent_kind": AgentKind.SYSTEM,
        "source_address": "127.0.0.1",
        "entity": "Patient/1",
        "detail": {"cruid": "g1", "score": 12.5, "names": ["Émile", None]},
        "resource": {"resourceType": "AuditEvent"},
    }


def _record(record_id: str) -> dict[str, object]:
    return {
        "id": record_id,
        "client_system": "openmrs",
        "internal_system": "s",
        "internal_value": record_id,
        "version": 1,
        "last_updated": WHEN,
        "resource": {"resourceType": "Patient"},
        "features": ("Émile", frozenset({"a", "b"})),
        "golden_id": None,
        "match_status": "none",
        "human_adjudicated": False,
    }


def test_rows_come_back_as_core_would_have_written_them(
    factory: sessionmaker[Session],
) -> None:
    statement = DriverInsert(insert(AuditEvent))
    with factory() as session, session.begin():
        statement.execute(session.connection(), _event("openmrs"))  # one row
        statement.execute(session.connection(), [_event("dhis2"), _event("lims")])  # several
        session.connection().execute(insert(AuditEvent), _event("core"))
    with factory() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).all()
    assert [e.agent for e in events] == ["openmrs", "dhis2", "lims", "core"]
    for event in events:
        assert event.recorded == WHEN  # the time zone and microseconds survive
        assert event.action is AuditAction.CREATE and event.agent_kind is AgentKind.SYSTEM
        assert event.detail == {"cruid": "g1", "score": 12.5, "names": ["Émile", None]}
    assert len({e.id for e in events}) == 4  # the database numbered them


def test_the_rows_belong_to_the_sessions_transaction(factory: sessionmaker[Session]) -> None:
    with factory() as session, session.begin():
        golden = {"id": "g1", "version": 1, "last_updated": WHEN, "active": True}
        DriverInsert(insert(GoldenRecord)).execute(session.connection(), golden)
        # what Core reads on the same connection sees the driver's row at once
        assert session.scalar(select(GoldenRecord.id)) == "g1"
        session.rollback()
    with factory() as session:
        assert session.scalar(select(GoldenRecord.id)) is None


def test_a_driver_error_is_sqlalchemys_and_then_a_conflict(
    factory: sessionmaker[Session],
) -> None:
    statement = DriverInsert(insert(GoldenRecord))
    row = {"id": "g1", "version": 1, "last_updated": WHEN, "active": True}
    with factory() as session, session.begin():
        statement.execute(session.connection(), row)
    with factory() as session, session.begin(), pytest.raises(IntegrityError):
        statement.execute(session.connection(), [row])
    with pytest.raises(Conflict), translate_errors(), factory() as session, session.begin():
        statement.execute(session.connection(), row)
    with factory() as session:
        assert session.scalars(select(GoldenRecord.id)).all() == ["g1"]


def test_a_column_sqlalchemy_would_fill_in_must_be_given(
    factory: sessionmaker[Session],
) -> None:
    statement = DriverInsert(insert(GoldenRecord))  # version, last_updated, active: defaults
    with factory() as session, session.begin():
        with pytest.raises(ValueError, match="give the columns"):
            statement.execute(session.connection(), {"id": "g1"})
        statement.execute(session.connection(), [])  # nothing to insert: nothing done


def test_several_rows_keep_nulls_enums_and_the_conflict_clause(
    factory: sessionmaker[Session],
) -> None:
    # On PostgreSQL several rows go as one array per column (INSERT ... SELECT FROM unnest):
    # NULLs, enums and times must survive it, and ON CONFLICT must still apply per row.
    from clientregistry.store.dialect import insert_for
    from clientregistry.store.enums import IssueKind, IssueStatus
    from clientregistry.store.models import BlockingKey, MatchIssue, SourceRecord

    with factory() as session, session.begin():
        records = [_record(rid) for rid in ("r1", "r2", "r3")]
        DriverInsert(insert(SourceRecord)).execute(session.connection(), records)
        issue = {"record_id": "r1", "kind": IssueKind.POTENTIAL, "score": None}
        DriverInsert(insert(MatchIssue)).execute(
            session.connection(),
            [
                {
                    **issue,
                    "other_record_id": other,
                    "status": IssueStatus.OPEN,
                    "created_at": WHEN,
                    "resolved_at": None,
                    "resolved_by": None,
                }
                for other in ("r2", "r3")
            ],
        )
        ignore = DriverInsert(insert_for(session, BlockingKey).on_conflict_do_nothing())
        ignore.execute(session.connection(), [{"key_hash": 7, "record_id": "r1"}])
        ignore.execute(
            session.connection(),
            [{"key_hash": h, "record_id": "r1"} for h in (-(2**63), 7, 2**63 - 1)],
        )
    with factory() as session:
        issues = session.scalars(select(MatchIssue).order_by(MatchIssue.other_record_id)).all()
        keys = session.scalars(select(BlockingKey.key_hash).order_by(BlockingKey.key_hash)).all()
    assert [(i.other_record_id, i.kind, i.status, i.score, i.resolved_at) for i in issues] == [
        ("r2", IssueKind.POTENTIAL, IssueStatus.OPEN, None, None),
        ("r3", IssueKind.POTENTIAL, IssueStatus.OPEN, None, None),
    ]
    assert issues[0].created_at == WHEN
    assert keys == [-(2**63), 7, 2**63 - 1]
    with factory() as session:
        features = session.scalars(select(SourceRecord.features)).all()
    assert features == [("Émile", frozenset({"a", "b"}))] * 3


def test_pipelined_statements_are_written_and_their_errors_come_out_as_conflicts(
    factory: sessionmaker[Session],
) -> None:
    # PostgreSQL sends them without waiting (pipeline mode); an error shows when the block
    # ends, and must still be SQLAlchemy's so that the API answers 409, not 500.
    from sqlalchemy import bindparam, update

    from clientregistry.store.driver import DriverStatement, pipelined

    insert_golden = DriverInsert(insert(GoldenRecord))
    touch = DriverStatement(
        update(GoldenRecord)
        .where(GoldenRecord.id == bindparam("golden"))
        .values(version=GoldenRecord.version + 1)
    )
    row = {"version": 1, "last_updated": WHEN, "active": True}
    with factory() as session, session.begin():
        connection = session.connection()
        with pipelined(connection):
            insert_golden.execute(connection, {"id": "g1", **row})
            insert_golden.execute(connection, [{"id": "g2", **row}, {"id": "g3", **row}])
            touch.execute(connection, {"golden": "g1"})
        # after the block, reads see it all
        assert session.scalar(select(GoldenRecord.version).where(GoldenRecord.id == "g1")) == 2
    with pytest.raises(Conflict), translate_errors(), factory() as session, session.begin():
        connection = session.connection()
        with pipelined(connection):
            insert_golden.execute(connection, {"id": "g4", **row})
            insert_golden.execute(connection, {"id": "g1", **row})  # taken
            touch.execute(connection, {"golden": "g2"})
    with factory() as session:
        goldens = session.execute(select(GoldenRecord.id, GoldenRecord.version)).all()
    assert sorted(goldens) == [("g1", 2), ("g2", 1), ("g3", 1)]  # the failed block left nothing


def test_pipelined_block_may_end_with_the_commit(factory: sessionmaker[Session]) -> None:
    # Submitter.submit_prepared(commit=True): on PostgreSQL the COMMIT is queued behind the
    # writes; a write's error still comes out as SQLAlchemy's, and nothing is committed.
    from clientregistry.store.driver import pipelined

    insert_golden = DriverInsert(insert(GoldenRecord))
    row = {"version": 1, "last_updated": WHEN, "active": True}
    with factory() as session, session.begin():
        connection = session.connection()
        with pipelined(connection, commit=session):
            insert_golden.execute(connection, {"id": "g1", **row})
        assert not session.in_transaction()
    with factory() as other:
        assert other.scalars(select(GoldenRecord.id)).all() == ["g1"]
    with pytest.raises(Conflict), translate_errors(), factory() as session, session.begin():
        connection = session.connection()
        with pipelined(connection, commit=session):
            insert_golden.execute(connection, {"id": "g2", **row})
            insert_golden.execute(connection, {"id": "g1", **row})  # taken
    with factory() as session:
        assert session.scalars(select(GoldenRecord.id)).all() == ["g1"]
    with factory() as session, session.begin():  # the pool's connection is usable again
        insert_golden.execute(session.connection(), {"id": "g3", **row})
    with factory() as session:
        assert sorted(session.scalars(select(GoldenRecord.id)).all()) == ["g1", "g3"]


def test_query_rows_are_what_core_reads(factory: sessionmaker[Session]) -> None:
    # The columns' types convert the driver's values (JSON features, times with a zone).
    from clientregistry.store.driver import DriverQuery
    from clientregistry.store.models import SourceRecord

    statement = (
        select(SourceRecord.id, SourceRecord.features, SourceRecord.last_updated)
        .where(SourceRecord.internal_value != "r3")
        .order_by(SourceRecord.id)
    )
    by_value = select(SourceRecord.id, SourceRecord.features, SourceRecord.last_updated).where(
        SourceRecord.internal_value == bindparam("value")
    )
    with factory() as session, session.begin():
        DriverInsert(insert(SourceRecord)).execute(
            session.connection(), [_record("r1"), _record("r2"), _record("r3")]
        )
    with factory() as session, session.begin():
        core = [tuple(row) for row in session.execute(statement)]
        rows = DriverQuery(statement).send(session.connection(), {}).all()
        assert (
            rows == core == [("r1", ("Émile", frozenset({"a", "b"})), WHEN), ("r2", *core[0][1:])]
        )
        one = DriverQuery(by_value).send(session.connection(), {"value": "r3"})
        assert one.all() == [("r3", ("Émile", frozenset({"a", "b"})), WHEN)]
        assert DriverQuery(by_value).send(session.connection(), {"value": "none"}).all() == []


def test_pipelined_queries_are_read_after_the_block(factory: sessionmaker[Session]) -> None:
    # Submitter: the locks, the caller's record and the candidates in one round trip.
    from sqlalchemy import text

    from clientregistry.store.driver import DriverQuery, pipelined
    from clientregistry.store.models import SourceRecord

    by_value = select(SourceRecord.id).where(SourceRecord.internal_value == bindparam("value"))
    query = DriverQuery(by_value)
    with factory() as session, session.begin():
        DriverInsert(insert(SourceRecord)).execute(session.connection(), _record("r1"))
    with factory() as session, session.begin():
        connection = session.connection()
        with pipelined(connection):
            first = query.send(connection, {"value": "r1"})
            DriverInsert(insert(SourceRecord)).execute(connection, _record("r2"))
            second = query.send(connection, {"value": "r2"})  # sees the insert before it
        assert first.all() == [("r1",)]
        assert second.all() == [("r2",)]
    broken = DriverQuery(select(text("1")).select_from(text("no_such_table")))
    with pytest.raises(DBAPIError), factory() as session, session.begin():
        connection = session.connection()
        with pipelined(connection):
            broken.send(connection, {}).all()


def test_query_refuses_an_expanding_in_on_postgresql(factory: sessionmaker[Session]) -> None:
    from clientregistry.store.driver import DriverQuery
    from clientregistry.store.models import SourceRecord

    statement = select(SourceRecord.id).where(SourceRecord.id.in_(bindparam("ids", expanding=True)))
    with factory() as session, session.begin():
        connection = session.connection()
        if connection.dialect.name != "postgresql":
            assert DriverQuery(statement).send(connection, {"ids": ["x"]}).all() == []
            return
        with pytest.raises(ValueError, match="expanding"):
            DriverQuery(statement).send(connection, {"ids": ["x"]})
