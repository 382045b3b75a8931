"""Migration 0002 fills the search tokens of records stored before it."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine, insert, select

from clientregistry.registry.search_tokens import search_tokens
from clientregistry.store.db import current_revision, migrate, session_factory, transaction
from clientregistry.store.models import SearchToken, SourceRecord

MakeRecord = Callable[..., SourceRecord]

RESOURCE = {
    "resourceType": "Patient",
    "identifier": [{"system": "http://clientregistry.org/openmrs", "value": "p1"}],
    "name": [{"family": "Nakato", "given": ["Jane", "Amé"]}],
    "birthDate": "1990-01-31",
}


LATER_COLUMNS = {"replaced_by"}
"""Columns of ``source_record`` added after revision 0001."""


def test_upgrade_backfills_the_tokens_of_stored_records(
    bare_engine: Engine, make_record: MakeRecord
) -> None:
    migrate(bare_engine, "0001")
    assert current_revision(bare_engine) == "0001"
    factory = session_factory(bare_engine)
    with transaction(factory) as session:  # the ORM writes no search tokens itself
        for record_id in ("r1", "r2"):
            record = make_record(record_id, resource=RESOURCE)
            # the columns of revision 0001 only (later revisions add some)
            values = {
                column.key: getattr(record, column.key)
                for column in SourceRecord.__table__.columns
                if column.key not in LATER_COLUMNS and getattr(record, column.key) is not None
            }
            session.execute(insert(SourceRecord).values(values))
    migrate(bare_engine)
    with factory() as session:
        rows = session.execute(
            select(SearchToken.record_id, SearchToken.kind, SearchToken.value)
        ).all()
    expected = {(r, kind, value) for r in ("r1", "r2") for kind, value in search_tokens(RESOURCE)}
    assert set(rows) == expected
    assert ("r1", "given", "ame") in expected


def test_tokens_go_with_their_record(engine: Engine, make_record: MakeRecord) -> None:
    factory = session_factory(engine)
    with transaction(factory) as session:
        session.add(make_record("r1"))
        session.flush()
        session.add(SearchToken(kind="family", value="nakato", record_id="r1"))
    with transaction(factory) as session:
        session.delete(session.get(SourceRecord, "r1"))
    with factory() as session:
        assert session.scalars(select(SearchToken)).all() == []
