"""The SQLite write gate: writers queue in front of SQLite and get their turn at once."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from clientregistry.store.db import (
    create_engine_for,
    session_factory,
    sessions_write_gate,
    transaction,
)
from clientregistry.store.errors import Busy
from clientregistry.store.write_gate import WriteGate


def test_a_waiting_thread_gets_its_turn_as_soon_as_the_writer_commits(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'db.sqlite'}")
    factory = session_factory(engine)
    with transaction(factory) as session:
        session.execute(text("CREATE TABLE t (n INTEGER)"))
    holding = threading.Event()
    waited: list[float] = []

    def first() -> None:
        with transaction(factory) as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
            holding.set()
            time.sleep(0.15)

    def second() -> None:
        holding.wait()
        started = time.perf_counter()
        with transaction(factory) as session:
            session.execute(text("INSERT INTO t VALUES (2)"))
        waited.append(time.perf_counter() - started)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with transaction(factory, write=False) as session:
        assert session.execute(text("SELECT count(*) FROM t")).scalar() == 2
    assert 0.1 <= waited[0] < 1.0  # it waited for the first writer, not for a timeout
    engine.dispose()


def test_a_write_transaction_holds_the_engines_gate_until_it_ends(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'db.sqlite'}")
    factory = session_factory(engine)
    fd = os.open(tmp_path / "db.sqlite-writer.lock", os.O_RDWR | os.O_CREAT)

    def other_gets_in() -> bool:  # as another process would, without waiting
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True

    with transaction(factory) as session:
        session.execute(text("CREATE TABLE t (n INTEGER)"))
        assert not other_gets_in()
    assert other_gets_in()
    with transaction(factory, write=False) as session:  # readers do not queue
        assert other_gets_in()
        session.execute(text("SELECT count(*) FROM t"))
    os.close(fd)
    engine.dispose()


def test_the_gate_is_released_when_the_transaction_fails(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'db.sqlite'}", busy_timeout_ms=500)
    factory = session_factory(engine)
    with pytest.raises(RuntimeError), transaction(factory) as session:
        session.execute(text("CREATE TABLE t (n INTEGER)"))
        raise RuntimeError("boom")
    with transaction(factory) as session:  # would wait 0.5 s and raise Busy if still held
        session.execute(text("CREATE TABLE t (n INTEGER)"))
    engine.dispose()


def _hold_gate(path: str, held: multiprocessing.synchronize.Event, seconds: float) -> None:
    gate = WriteGate(Path(path), 5.0)
    gate.acquire()
    held.set()
    time.sleep(seconds)
    gate.release()


def test_processes_take_turns_on_the_lock_file(tmp_path: Path) -> None:
    lock = tmp_path / "db.sqlite-writer.lock"
    held = multiprocessing.get_context("spawn").Event()
    other = multiprocessing.get_context("spawn").Process(
        target=_hold_gate, args=(str(lock), held, 0.5)
    )
    other.start()
    try:
        assert held.wait(30)
        waiting = WriteGate(lock, 10.0)
        started = time.perf_counter()
        waiting.acquire()  # sleeps until the other process lets go
        waited = time.perf_counter() - started
        waiting.release()
        waiting.close()
    finally:
        other.join(30)
    assert other.exitcode == 0
    assert 0.2 < waited < 5.0


def test_a_process_that_waits_too_long_gets_busy_and_the_lock_is_not_kept(
    tmp_path: Path,
) -> None:
    lock = tmp_path / "db.sqlite-writer.lock"
    holder = WriteGate(lock, 1.0)
    holder.acquire()
    impatient = WriteGate(lock, 0.1)  # another engine, as another process would hold it
    with pytest.raises(Busy, match="another process"):
        impatient.acquire()
    holder.release()
    time.sleep(0.1)  # the abandoned waiter takes the lock and lets go of it at once
    patient = WriteGate(lock, 5.0)
    patient.acquire()
    patient.release()
    for gate in (holder, impatient, patient):
        gate.close()


def test_a_thread_that_never_gets_its_turn_gets_busy(tmp_path: Path) -> None:
    gate = WriteGate(None, 0.1)
    gate.acquire()
    errors: list[BaseException] = []

    def late() -> None:
        try:
            gate.acquire()
        except Busy as error:
            errors.append(error)

    thread = threading.Thread(target=late)
    thread.start()
    thread.join()
    gate.release()
    assert len(errors) == 1 and "no write turn" in str(errors[0])


def test_try_acquire_takes_an_open_gate_and_never_waits(tmp_path: Path) -> None:
    lock = tmp_path / "db.sqlite-writer.lock"
    gate = WriteGate(lock, 5.0)
    other_process = WriteGate(lock, 5.0)  # its own descriptor, as another process's
    assert gate.try_acquire()
    started = time.perf_counter()
    assert not gate.try_acquire()  # held by this process (another thread, say)
    assert not other_process.try_acquire()  # held across processes: the file lock
    assert time.perf_counter() - started < 0.5
    gate.release()
    assert other_process.try_acquire()
    assert not gate.try_acquire()  # the thread lock was free, the file lock is not
    other_process.release()
    assert gate.try_acquire()  # ... and a refused try left the thread lock open
    gate.release()
    for each in (gate, other_process):
        each.close()


def test_a_turn_taken_in_one_thread_can_be_used_and_released_in_another(
    tmp_path: Path,
) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'db.sqlite'}", busy_timeout_ms=500)
    factory = session_factory(engine)
    gate = sessions_write_gate(factory)
    assert gate is not None
    helper = threading.Thread(target=gate.acquire)
    helper.start()
    helper.join()
    with transaction(factory, gate_held=True) as session:  # does not queue again
        session.execute(text("CREATE TABLE t (n INTEGER)"))
    assert not gate.try_acquire()  # the caller holds the turn until it releases it
    gate.release()
    with transaction(factory) as session:  # would wait 0.5 s and raise Busy if still held
        session.execute(text("INSERT INTO t VALUES (1)"))
    engine.dispose()


def test_only_sqlite_engines_have_a_gate() -> None:
    assert sessions_write_gate(session_factory(create_engine_for("sqlite://"))) is not None
    engine = create_engine_for("postgresql://nobody@127.0.0.1:1/none")
    assert sessions_write_gate(session_factory(engine)) is None
    engine.dispose()
