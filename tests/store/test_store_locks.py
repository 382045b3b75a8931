"""Serialising submissions: advisory locks on PostgreSQL, BEGIN IMMEDIATE on SQLite."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from clientregistry.store.db import transaction, translate_errors
from clientregistry.store.errors import Busy
from clientregistry.store.locks import begin_write, lock_blocking_keys


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
