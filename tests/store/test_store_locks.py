"""Serialising submissions: advisory locks on PostgreSQL, BEGIN IMMEDIATE on SQLite."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from clientregistry.store.db import transaction, translate_errors
from clientregistry.store.errors import Busy, WouldWait
from clientregistry.store.locks import (
    begin_write,
    lock_blocking_keys,
    lock_registry,
    take_key_locks,
)


def _postgres_only(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("advisory locks are PostgreSQL's")


def _short_lock_timeout(session: Session) -> None:
    session.execute(text("SET LOCAL lock_timeout = '200ms'"))


def test_second_transaction_waits_for_a_shared_key(
    engine: Engine, factory: sessionmaker[Session]
) -> None:
    _postgres_only(engine)
    with factory() as first, first.begin():
        lock_blocking_keys(first, ["0|g0|JN", "0|g1|1990"])
        with factory() as second:
            started = time.monotonic()
            with pytest.raises(Busy), translate_errors(), second.begin():
                _short_lock_timeout(second)
                lock_blocking_keys(second, ["0|g1|1990", "0|g2|x"])
            assert time.monotonic() - started >= 0.15
            with second.begin():  # no key in common: no wait
                _short_lock_timeout(second)
                lock_blocking_keys(second, ["0|g2|x", "0|g3|y"])
    with factory() as second, second.begin():  # the first committed: the lock is free
        _short_lock_timeout(second)
        lock_blocking_keys(second, ["0|g1|1990"])


def test_waiter_proceeds_when_the_holder_commits(
    engine: Engine, factory: sessionmaker[Session]
) -> None:
    _postgres_only(engine)
    acquired: list[float] = []
    errors: list[BaseException] = []

    def wait_for_lock() -> None:
        try:
            with factory() as session, session.begin():
                lock_blocking_keys(session, ["shared"])
                acquired.append(time.monotonic())
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    with factory() as holder, holder.begin():
        lock_blocking_keys(holder, ["shared", "other"])
        waiter = threading.Thread(target=wait_for_lock)
        waiter.start()
        time.sleep(0.3)
        assert acquired == []
        released = time.monotonic()
    waiter.join(timeout=10)
    assert errors == []
    assert len(acquired) == 1 and acquired[0] >= released


def test_locks_end_with_the_transaction(engine: Engine, factory: sessionmaker[Session]) -> None:
    _postgres_only(engine)
    with factory() as first:
        with first.begin():
            lock_blocking_keys(first, ["k"])
            first.rollback()
        with factory() as second, second.begin():
            _short_lock_timeout(second)
            lock_blocking_keys(second, ["k"])


def test_sqlite_is_serialised_by_begin_immediate(
    engine: Engine, factory: sessionmaker[Session]
) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's write lock")
    with factory() as session, session.begin():
        begin_write(session)
        lock_blocking_keys(session, ["a", "b"])  # no-op
        assert session.execute(text("SELECT 1")).scalar() == 1
    with transaction(factory) as session:
        lock_blocking_keys(session, [])


def _advisory_locks_held(session: Session) -> list[str]:
    rows = session.execute(
        text(
            "SELECT mode FROM pg_locks WHERE locktype = 'advisory' "
            "AND pid = pg_backend_pid() ORDER BY mode"
        )
    )
    return [mode for (mode,) in rows]


def test_key_locks_come_with_the_registry_lock_shared(
    engine: Engine, factory: sessionmaker[Session]
) -> None:
    _postgres_only(engine)
    with factory() as session, session.begin():
        lock_blocking_keys(session, ["a", "b"])
        lock_blocking_keys(session, ["c"])  # the shared lock is not taken twice
        assert _advisory_locks_held(session) == [
            "ExclusiveLock",
            "ExclusiveLock",
            "ExclusiveLock",
            "ShareLock",
        ]


def test_the_registry_lock_replaces_key_locks_and_excludes_everyone(
    engine: Engine, factory: sessionmaker[Session]
) -> None:
    _postgres_only(engine)
    with factory() as big, big.begin():
        lock_registry(big)
        lock_blocking_keys(big, [f"key-{n}" for n in range(500)])  # nothing more to take
        assert _advisory_locks_held(big) == ["ExclusiveLock"]
        with factory() as other, pytest.raises(Busy), translate_errors(), other.begin():
            _short_lock_timeout(other)
            lock_blocking_keys(other, ["unrelated"])  # waits for the shared lock
    with factory() as other, other.begin():  # released at commit
        _short_lock_timeout(other)
        lock_blocking_keys(other, ["unrelated"])


def test_the_registry_lock_waits_for_ordinary_submissions(
    engine: Engine, factory: sessionmaker[Session]
) -> None:
    _postgres_only(engine)
    with factory() as ordinary, ordinary.begin():
        lock_blocking_keys(ordinary, ["k"])
        with factory() as big, pytest.raises(Busy), translate_errors(), big.begin():
            _short_lock_timeout(big)
            lock_registry(big)
        with pytest.raises(RuntimeError, match="before lock_blocking_keys"):
            lock_registry(ordinary)  # it holds the lock shared already


def test_trying_does_not_wait_and_takes_nothing_for_good(
    engine: Engine, factory: sessionmaker[Session]
) -> None:
    from clientregistry.store.blocking_index import key_hashes
    from clientregistry.store.driver import pipelined

    _postgres_only(engine)
    with factory() as holder, holder.begin():
        lock_blocking_keys(holder, ["0|g1|1990"])
        with factory() as second:
            started = time.monotonic()
            with pytest.raises(WouldWait), second.begin():
                with pipelined(second.connection()):  # as a submission on the loop does
                    attempt = take_key_locks(
                        second, key_hashes(["0|g1|1990", "0|g2|x"]), wait=False
                    )
                attempt.check()
            assert time.monotonic() - started < 1.0
            with second.begin():  # rolled back: "0|g2|x" is free again, and others
                _short_lock_timeout(second)
                take_key_locks(second, key_hashes(["0|g2|x", "0|g3|y"]), wait=False).check()
    with factory() as second, second.begin():  # the holder committed
        take_key_locks(second, key_hashes(["0|g1|1990"]), wait=False).check()


def test_trying_does_not_wait_for_the_registry_lock(
    engine: Engine, factory: sessionmaker[Session]
) -> None:
    from clientregistry.store.blocking_index import key_hashes

    _postgres_only(engine)
    with factory() as bundle, bundle.begin():
        lock_registry(bundle)  # a large transaction Bundle
        with factory() as second, pytest.raises(WouldWait), second.begin():
            take_key_locks(second, key_hashes(["0|g9|z"]), wait=False).check()


def test_trying_on_sqlite_takes_nothing(engine: Engine, factory: sessionmaker[Session]) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's write lock")
    with factory() as session, session.begin():
        attempt = take_key_locks(session, [1, 2], wait=False)
        attempt.check()
        assert attempt.by_keys is False
