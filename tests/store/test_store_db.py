"""Engines, migrations, transactions and the error boundary."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.orm import Session, sessionmaker

from clientregistry.errors import ClientRegistryError
from clientregistry.store.db import (
    BULK_CACHE_KIB,
    alembic_config,
    begin_immediate,
    create_engine_for,
    current_revision,
    head_revision,
    migrate,
    session_factory,
    transaction,
    widen_cache,
)
from clientregistry.store.errors import Busy, Conflict, StoreError
from clientregistry.store.models import Base, GoldenRecord, SourceRecord

MakeRecord = Callable[..., SourceRecord]

TABLES = {
    "audit_chain_head",
    "audit_delivery",
    "audit_event",
    "blocking_key",
    "broken_match",
    "bulk_job",
    "client_system",
    "golden_record",
    "import_row",
    "link",
    "match_issue",
    "rematch_change",
    "rules_activation",
    "rules_state",
    "rules_version",
    "search_token",
    "source_record",
    "source_record_version",
    "term_count",
    "token",
    "user_account",
}


def test_models_cover_the_expected_tables() -> None:
    assert set(Base.metadata.tables) == TABLES


def test_migrate_creates_every_table(bare_engine: Engine) -> None:
    assert current_revision(bare_engine) is None
    migrate(bare_engine)
    assert set(inspect(bare_engine).get_table_names()) == TABLES | {"alembic_version"}
    assert current_revision(bare_engine) == head_revision() == "0010"


def test_migrate_twice_is_a_no_op(engine: Engine, make_record: MakeRecord) -> None:
    with transaction(session_factory(engine)) as session:
        session.add(make_record("r1"))
    migrate(engine)
    assert current_revision(engine) == head_revision()
    with session_factory(engine)() as session:
        assert session.scalar(select(text("count(*)")).select_from(text("source_record"))) == 1


def test_migrations_match_the_models(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_downgrade_drops_everything(engine: Engine) -> None:
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate(engine)
    assert set(inspect(engine).get_table_names()) == TABLES | {"alembic_version"}


# ----------------------------------------------------------------------------- engines


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u@localhost/db", "postgresql+psycopg"),
        ("postgres://u@localhost/db", "postgresql+psycopg"),
        ("postgresql+psycopg://u@localhost/db", "postgresql+psycopg"),
        ("sqlite:///x.db", "sqlite"),
    ],
)
def test_url_drivers(url: str, driver: str) -> None:
    engine = create_engine_for(url)
    try:
        assert engine.url.drivername == driver
    finally:
        engine.dispose()


@pytest.mark.parametrize("url", ["mysql://u@h/db", "postgresql+asyncpg://u@h/db", "nonsense"])
def test_unsupported_urls(url: str) -> None:
    with pytest.raises(StoreError):
        create_engine_for(url)


def test_sqlite_pragmas(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'p.db'}", busy_timeout_ms=1234)
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1234
            # Durability is not traded for speed: NORMAL (1) syncs at every checkpoint.
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1
            # SQLite's own page cache (2 MB) for every connection; bulk writers widen theirs.
            assert connection.exec_driver_sql("PRAGMA cache_size").scalar() == -2000
    finally:
        engine.dispose()


def test_a_bulk_writer_widens_its_connection_cache(factory: sessionmaker[Session]) -> None:
    with factory() as session:
        widen_cache(session)  # (PostgreSQL: nothing to do, and no error)
        if session.get_bind().dialect.name == "sqlite":
            found = session.connection().exec_driver_sql("PRAGMA cache_size").scalar()
            assert found == -BULK_CACHE_KIB
        session.commit()


def test_store_errors_are_registry_errors() -> None:
    assert issubclass(Conflict, StoreError)
    assert issubclass(Busy, StoreError)
    assert issubclass(StoreError, ClientRegistryError)


# ----------------------------------------------------------------------------- transactions


def test_transaction_commits(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        session.add(GoldenRecord(id="g1"))
    with factory() as session:
        assert session.get(GoldenRecord, "g1") is not None


def test_transaction_rolls_back_on_error(factory: sessionmaker[Session]) -> None:
    with pytest.raises(RuntimeError), transaction(factory) as session:
        session.add(GoldenRecord(id="g1"))
        session.flush()
        raise RuntimeError("boom")
    with factory() as session:
        assert session.get(GoldenRecord, "g1") is None


def test_integrity_error_becomes_conflict(
    factory: sessionmaker[Session], make_record: MakeRecord
) -> None:
    with transaction(factory) as session:
        session.add(make_record("r1", internal_value="42"))
    with pytest.raises(Conflict) as caught, transaction(factory) as session:
        session.add(make_record("r2", internal_value="42"))
    if factory.kw["bind"].dialect.name == "postgresql":
        assert caught.value.constraint == "uq_source_record_internal_system_internal_value"
    with pytest.raises(Conflict), transaction(factory) as session:
        session.add(make_record("r1", internal_value="43"))


def test_read_transaction(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        session.add(GoldenRecord(id="g1"))
    with transaction(factory, write=False) as session:
        assert session.get(GoldenRecord, "g1") is not None


def test_begin_immediate_must_come_first(engine: Engine, factory: sessionmaker[Session]) -> None:
    with factory() as session, session.begin():
        session.execute(select(GoldenRecord))
        if engine.dialect.name == "sqlite":
            with pytest.raises(StoreError):
                begin_immediate(session)
        else:
            begin_immediate(session)  # nothing to do on PostgreSQL


def test_sqlite_writers_wait_for_each_other(engine: Engine) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's write lock")
    impatient = create_engine_for(str(engine.url), busy_timeout_ms=50)
    try:
        with transaction(session_factory(engine)) as first:
            first.add(GoldenRecord(id="g1"))
            first.flush()
            with pytest.raises(Busy), transaction(session_factory(impatient)) as second:
                second.add(GoldenRecord(id="g2"))
        with transaction(session_factory(impatient)) as second:
            second.add(GoldenRecord(id="g2"))
    finally:
        impatient.dispose()


def test_sqlite_read_transaction_sees_a_snapshot(engine: Engine) -> None:
    """With pysqlite's transaction handling off, a read transaction really is one."""
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite transactions")
    factory = session_factory(engine)
    with transaction(factory, write=False) as reader:
        assert reader.scalars(select(GoldenRecord)).all() == []
        with transaction(factory) as writer:
            writer.add(GoldenRecord(id="g1"))
        assert reader.scalars(select(GoldenRecord.id)).all() == []
    with transaction(factory, write=False) as reader:
        assert reader.scalars(select(GoldenRecord.id)).all() == ["g1"]


def _postgres_only(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("pooled PostgreSQL connections")


def _backend_pid(factory: sessionmaker[Session]) -> int:
    with transaction(factory, write=False) as session:
        return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(engine: Engine, pid: int) -> None:
    admin = create_engine_for(str(engine.url.render_as_string(hide_password=False)))
    try:
        with admin.connect() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            connection.commit()
    finally:
        admin.dispose()


def _count_pings(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    pings: list[object] = []
    do_ping = engine.dialect.do_ping

    def counted(dbapi_connection: object) -> bool:
        pings.append(dbapi_connection)
        return do_ping(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return pings


@pytest.fixture
def pooled_engine(database_url: str) -> Iterator[Callable[[float], Engine]]:
    """PostgreSQL engines that ping a pooled connection idle ``ping_after_idle`` seconds."""
    engines: list[Engine] = []

    def make(ping_after_idle: float) -> Engine:
        engine = create_engine_for(database_url, ping_after_idle=ping_after_idle)
        engines.append(engine)
        _postgres_only(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()


def test_connection_used_moments_ago_is_not_pinged(
    pooled_engine: Callable[[float], Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = pooled_engine(60)
    pings = _count_pings(engine, monkeypatch)
    factory = session_factory(engine)
    pids = {_backend_pid(factory) for _ in range(3)}
    assert len(pids) == 1  # one pooled connection, reused
    assert pings == []  # and no extra round trip before each transaction


def test_connection_that_died_while_idle_is_replaced(
    pooled_engine: Callable[[float], Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = pooled_engine(0)
    pings = _count_pings(engine, monkeypatch)
    factory = session_factory(engine)
    dead = _backend_pid(factory)
    _terminate(engine, dead)
    fresh = _backend_pid(factory)  # no error: the check found it dead
    assert fresh != dead
    assert pings  # found by the check, not by a failed statement


def test_connection_that_died_between_close_uses_fails_one_request(
    pooled_engine: Callable[[float], Engine],
) -> None:
    engine = pooled_engine(60)
    factory = session_factory(engine)
    dead = _backend_pid(factory)
    _terminate(engine, dead)
    with pytest.raises(StoreError):
        _backend_pid(factory)
    assert _backend_pid(factory) != dead  # the pool let the dead connection go


def test_statements_of_a_transaction_are_one_transaction(
    engine: Engine, factory: sessionmaker[Session]
) -> None:
    # On PostgreSQL the registry sends BEGIN itself, with the first statement (the driver
    # runs in autocommit mode): Core statements and driver statements must still share it.
    from clientregistry.store.driver import DriverQuery

    _postgres_only(engine)
    started = text("SELECT now(), pg_current_xact_id()").columns()
    with transaction(factory) as session:
        first = session.execute(started).one()
        second = DriverQuery(select(text("now()"), text("pg_current_xact_id()"))).send(
            session.connection(), {}
        )
        assert tuple(first) == second.all()[0]
        session.add(GoldenRecord(id="g1"))
        session.flush()
        session.rollback()
    with transaction(factory, write=False) as session:
        assert session.get(GoldenRecord, "g1") is None
        # a new transaction: a later start
        assert session.execute(started).one()[0] > first[0]
