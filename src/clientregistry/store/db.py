"""Engines, sessions, migrations, transactions and the driver-error boundary.

* :func:`create_engine_for` — SQLite (``sqlite:///path``) or PostgreSQL (``postgresql://…``,
  always through psycopg 3).
* :func:`session_factory`, :func:`transaction` — sessions; ``transaction`` is the unit of work
  that commits, rolls back and translates errors.
* :func:`migrate` — Alembic ``upgrade head`` with the migrations shipped in the package.
* :func:`translate_errors` — the one place driver exceptions become
  :class:`~clientregistry.store.errors.StoreError` and its subclasses.

SQLite transactions: pysqlite's own transaction handling is switched off (it does not begin a
transaction before a ``SELECT``, so reads were not isolated) and every SQLAlchemy transaction
emits its own ``BEGIN``. A writer asks for ``BEGIN IMMEDIATE`` instead (see
:func:`begin_immediate`), which takes SQLite's single write lock up front, waiting up to the
busy timeout for it, rather than failing with "database is locked" when a deferred read
transaction later tries to write.
"""

from __future__ import annotations

import sqlite3
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    OperationalError,
)
from sqlalchemy.orm import Session, sessionmaker

from clientregistry.store.driver import clear_due_begin, mark_begin_due, send_due_begin
from clientregistry.store.errors import Busy, Conflict, StoreError
from clientregistry.store.write_gate import WriteGate

MIGRATIONS = "clientregistry.store:migrations"
"""Alembic ``script_location`` of the packaged migrations."""

SQLITE_BEGIN_OPTION = "clientregistry_sqlite_begin"
"""Connection execution option naming the ``BEGIN`` variant (``"IMMEDIATE"``) on SQLite."""

_WRITE_GATES: weakref.WeakKeyDictionary[Engine, WriteGate] = weakref.WeakKeyDictionary()
"""The :class:`WriteGate` of each SQLite engine (see :func:`transaction`)."""

_BUSY_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57014"})
"""serialization_failure, deadlock_detected, lock_not_available, query_canceled (timeout)."""


# ----------------------------------------------------------------------------- engines


def _database_url(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError(f"not a database URL: {url!r}") from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres"):
        if driver not in ("psycopg", "psycopg2", ""):
            raise StoreError(f"unsupported PostgreSQL driver {driver!r}")
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if driver not in ("pysqlite", ""):
            raise StoreError(f"unsupported SQLite driver {driver!r}")
        return parsed
    raise StoreError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; None for an in-memory (or ``file:`` URI) database
    and for other databases."""
    parsed = _database_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    return None if database.startswith("file:") else Path(database)


PING_AFTER_IDLE_SECONDS = 5.0
"""How long a pooled PostgreSQL connection may sit unused before it is checked again."""
_IDLE_SINCE = "clientregistry_idle_since"


def create_engine_for(
    url: str,
    *,
    busy_timeout_ms: int = 5000,
    wal_autocheckpoint: int = 1000,
    ping_after_idle: float = PING_AFTER_IDLE_SECONDS,
    **kwargs: Any,
) -> Engine:
    """An engine for ``url``; extra keyword arguments go to :func:`sqlalchemy.create_engine`.

    SQLite: WAL journal, foreign keys enforced, ``busy_timeout_ms`` wait for locks, usable
    from several threads; commits checkpoint the log past ``wal_autocheckpoint`` pages (raise
    it when a :class:`~clientregistry.store.checkpoint.WalCheckpointer` does that instead).

    PostgreSQL: psycopg 3 (``postgresql://`` and ``postgres://`` are rewritten to
    ``postgresql+psycopg://``); a pooled connection that sat idle for ``ping_after_idle``
    seconds or more is checked before use (see :func:`_ping_idle_connections`).
    """
    parsed = _database_url(url)
    if parsed.get_backend_name() == "sqlite":
        connect_args = {"check_same_thread": False, **kwargs.pop("connect_args", {})}
        engine = create_engine(parsed, connect_args=connect_args, **kwargs)
        _configure_sqlite(engine, busy_timeout_ms, wal_autocheckpoint)
        database = sqlite_file(url)
        lock_path = None if database is None else Path(f"{database}-writer.lock")
        _WRITE_GATES[engine] = WriteGate(lock_path, busy_timeout_ms / 1000)
        return engine
    engine = create_engine(parsed, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        _ping_idle_connections(engine, ping_after_idle)
    if "isolation_level" not in kwargs:
        _begin_with_first_statement(engine)
    return engine


def _begin_with_first_statement(engine: Engine) -> None:
    """Send a transaction's ``BEGIN`` with its first statement, not before it.

    psycopg begins a transaction by itself before the first statement, and in pipeline mode
    it waits for that ``BEGIN`` alone: a round trip of its own (a submission needs two more).
    So the driver runs in autocommit mode and the registry sends ``BEGIN`` itself, as SQLite's
    connections here do (see :func:`_configure_sqlite`): SQLAlchemy's ``begin`` marks it due,
    and the first statement of the transaction (through SQLAlchemy or the driver statements
    of :mod:`clientregistry.store.driver`) sends it first; inside
    :func:`~clientregistry.store.driver.pipelined` it goes in the same round trip. Commit and
    rollback are psycopg's: they send ``COMMIT`` or ``ROLLBACK`` only when the server is in a
    transaction.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.autocommit = True

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            mark_begin_due(connection.connection)

    # In the driver call (not before_cursor_execute): its errors, a dead connection's among
    # them, then go through SQLAlchemy's handling like the statement's own.
    @event.listens_for(engine, "do_execute")
    @event.listens_for(engine, "do_executemany")
    @event.listens_for(engine, "do_execute_no_params")
    def _before_execute(cursor: Any, *args: Any) -> None:
        context = args[-1]
        send_due_begin(context.root_connection.connection, cursor)

    @event.listens_for(engine, "commit")
    @event.listens_for(engine, "rollback")
    def _on_end(connection: Connection) -> None:
        if not connection.invalidated:  # (an invalidated one would reconnect here)
            clear_due_begin(connection.connection)

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        clear_due_begin(record)  # (the pool's record: its info is the connection's)


def _ping_idle_connections(engine: Engine, after: float) -> None:
    """Check a pooled connection before use when it has sat idle ``after`` seconds or more.

    A connection can die while it waits in the pool (the server restarted, a firewall dropped
    it); checking it first lets the pool replace it instead of failing the request. SQLAlchemy's
    ``pool_pre_ping`` checks at every checkout, one more round trip for every transaction
    (~14% of a busy worker's time went to it); a connection that was in use moments ago is
    not worth checking. One that dies between two close uses fails its next statement, which
    invalidates the pool's older connections too (SQLAlchemy's disconnect handling), so
    that request alone gets a 503.
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since < after:
            return  # a fresh connection, or one used moments ago
        dialect = engine.dialect
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_connection, None):
                # The pool discards this connection and checks out another.
                raise DisconnectionError(str(error)) from error
            raise


def _configure_sqlite(engine: Engine, busy_timeout_ms: int, wal_autocheckpoint: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves (see _on_begin)
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL syncs at checkpoints, not at every commit: a crash of the
            # process loses nothing and the database stays consistent; only a power cut or OS
            # crash may lose the last commits. FULL cost ~8 ms a commit here.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.execute(f"PRAGMA wal_autocheckpoint={int(wal_autocheckpoint)}")
            # After a checkpoint, a log that grew large is cut back to 64 MB.
            cursor.execute(f"PRAGMA journal_size_limit={64 << 20}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if mode == "IMMEDIATE" else "BEGIN")


def write_gate(engine: Engine) -> WriteGate | None:
    """The :class:`WriteGate` writers of ``engine`` queue at (SQLite only)."""
    return _WRITE_GATES.get(engine)


def is_sqlite(session_or_engine: Session | Engine | Connection) -> bool:
    """Whether the bind is SQLite."""
    bind = (
        session_or_engine.get_bind()
        if isinstance(session_or_engine, Session)
        else session_or_engine
    )
    return bind.dialect.name == "sqlite"


BULK_CACHE_KIB = 128 << 10
"""SQLite's page cache (KiB) for a connection that writes in bulk (:func:`widen_cache`)."""


def widen_cache(session: Session) -> None:
    """SQLite: give the session's connection a page cache of :data:`BULK_CACHE_KIB` (for as long
    as the connection lives; pages are taken as used). An import's batch writes random leaves
    of the blocking-key and search-token indexes; with SQLite's default 2 MB a large registry
    reads most of them back from the file for every batch. Only bulk writers ask for it, so
    that a server's pooled connections (up to fifteen a worker) keep the default."""
    if is_sqlite(session):
        session.connection().exec_driver_sql(f"PRAGMA cache_size={-BULK_CACHE_KIB}")


# ----------------------------------------------------------------------------- sessions


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions on ``engine``; objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def begin_immediate(session: Session) -> None:
    """On SQLite, start the session's transaction with ``BEGIN IMMEDIATE`` (take the write
    lock now); elsewhere nothing. Must come before the transaction's first statement."""
    if not is_sqlite(session):
        return
    transaction = session.get_transaction()
    # SessionTransaction._connections: the connections this transaction already holds.
    if transaction is not None and getattr(transaction, "_connections", None):
        raise StoreError("begin_immediate() must come before the transaction's first statement")
    session.connection(execution_options={SQLITE_BEGIN_OPTION: "IMMEDIATE"})


@contextmanager
def transaction(
    factory: sessionmaker[Session], *, write: bool = True, gate_held: bool = False
) -> Iterator[Session]:
    """A session in a transaction: committed when the block ends, rolled back when it raises;
    driver errors come out as :class:`StoreError`. ``write`` takes SQLite's write lock first
    (:func:`begin_immediate`), queueing at the engine's :class:`WriteGate` until the
    transaction has ended (``gate_held``: the caller has taken the gate and releases it); on
    PostgreSQL serialise with :mod:`clientregistry.store.locks`.
    """
    gate = sessions_write_gate(factory) if write and not gate_held else None
    if gate is not None:
        gate.acquire()
    try:
        with translate_errors(), factory() as session, session.begin():
            if write:
                begin_immediate(session)
            yield session
    finally:
        if gate is not None:
            gate.release()


def sessions_write_gate(factory: sessionmaker[Session]) -> WriteGate | None:
    """The :class:`WriteGate` of the engine ``factory`` makes sessions on (SQLite only)."""
    bind = factory.kw.get("bind")
    return write_gate(bind) if isinstance(bind, Engine) else None


# ----------------------------------------------------------------------------- errors


def _sqlstate(error: DBAPIError) -> str | None:
    state = getattr(error.orig, "sqlstate", None)
    return state if isinstance(state, str) else None


def _constraint(error: DBAPIError) -> str | None:
    diag = getattr(error.orig, "diag", None)
    name = getattr(diag, "constraint_name", None)
    return name if isinstance(name, str) else None


def _is_busy(error: DBAPIError) -> bool:
    if _sqlstate(error) in _BUSY_SQLSTATES:
        return True
    name = getattr(error.orig, "sqlite_errorname", "")
    return isinstance(name, str) and name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn SQLAlchemy/driver exceptions raised in the block into store errors."""
    try:
        yield
    except IntegrityError as exc:
        raise Conflict(_message(exc), constraint=_constraint(exc)) from exc
    except OperationalError as exc:
        if _is_busy(exc):
            raise Busy(_message(exc)) from exc
        raise StoreError(_message(exc)) from exc
    except DBAPIError as exc:
        if _is_busy(exc):
            raise Busy(_message(exc)) from exc
        raise StoreError(_message(exc)) from exc


def _message(exc: DBAPIError) -> str:
    first = str(exc.orig).strip().splitlines()
    return first[0] if first else type(exc.orig).__name__


# ----------------------------------------------------------------------------- migrations


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration built in code (no ``alembic.ini``)."""
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (``head``); a no-op when it is already there. A
    schema this release does not know (made by a newer one) is a :class:`StoreError`."""
    try:
        with translate_errors(), engine.begin() as connection:
            command.upgrade(alembic_config(connection), revision)
    except CommandError as error:
        raise StoreError(f"cannot migrate the schema: {error}") from None


def current_revision(engine: Engine) -> str | None:
    """The schema's Alembic revision (``None`` before the first migration)."""
    with translate_errors(), engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    """The newest revision shipped with the package."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
