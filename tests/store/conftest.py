"""Fixtures of the store tests: every test runs on SQLite and, when ``CR_TEST_POSTGRES_URL``
is set, on PostgreSQL too (each test in a schema of its own, dropped afterwards)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from wal_database import WalDatabase

from clientregistry.store.db import create_engine_for, migrate, session_factory
from clientregistry.store.models import SourceRecord

POSTGRES_ENV = "CR_TEST_POSTGRES_URL"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"PostgreSQL tests need {POSTGRES_ENV}=postgresql://user@host:port/db")
    schema = f"test_{uuid.uuid4().hex[:16]}"
    admin = create_engine_for(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        query = {"options": f"-csearch_path={schema}"}
        yield make_url(url).update_query_dict(query).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def bare_engine(database_url: str) -> Iterator[Engine]:
    """An engine on the empty database (no tables yet)."""
    engine = create_engine_for(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def engine(bare_engine: Engine) -> Engine:
    """An engine on a migrated database."""
    migrate(bare_engine)
    return bare_engine


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


@pytest.fixture
def session(factory: sessionmaker[Session]) -> Iterator[Session]:
    with factory() as session:
        yield session


MakeRecord = Callable[..., SourceRecord]


@pytest.fixture
def make_record() -> MakeRecord:
    """Builds a minimal source record (``id`` and identifiers from ``record_id``)."""

    def make(record_id: str | None = None, **fields: object) -> SourceRecord:
        record_id = record_id or str(uuid.uuid4())
        values: dict[str, object] = {
            "id": record_id,
            "client_system": "openmrs",
            "internal_system": "http://clientregistry.org/openmrs",
            "internal_value": record_id,
            "resource": {"resourceType": "Patient", "id": record_id},
            "features": ("", frozenset()),
            "last_updated": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        }
        values.update(fields)
        return SourceRecord(**values)

    return make


@pytest.fixture
def wal_database(tmp_path: Path) -> Iterator[WalDatabase]:
    """A SQLite file in WAL mode and a steady writer for it (:class:`WalDatabase`)."""
    database = WalDatabase(tmp_path / "db.sqlite")
    yield database
    database.engine.dispose()
