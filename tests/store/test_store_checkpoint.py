"""The background WAL checkpointer: it copies the log into the database, and commits leave it
the work."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import text
from wal_database import WalDatabase

from clientregistry.store.checkpoint import SAFETY_PAGES, WalCheckpointer
from clientregistry.store.db import create_engine_for, session_factory, sqlite_file, transaction


def test_commits_leave_the_log_to_the_checkpointer(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = create_engine_for(url, wal_autocheckpoint=SAFETY_PAGES)
    factory = session_factory(engine)
    with transaction(factory) as session:
        session.execute(text("CREATE TABLE t (n INTEGER, pad TEXT)"))
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == SAFETY_PAGES
    checkpointer = WalCheckpointer(engine, interval=0.01, threshold_bytes=0)
    checkpointer.start()
    try:
        for n in range(20):
            with transaction(factory) as session:
                session.execute(
                    text("INSERT INTO t VALUES (:n, :pad)"), {"n": n, "pad": "x" * 5000}
                )
        deadline = time.monotonic() + 10
        while checkpointer.checkpoints == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert checkpointer.checkpoints >= 1
    finally:
        checkpointer.stop()  # a last checkpoint on the way out
    with transaction(factory, write=False) as session:
        assert session.execute(text("SELECT count(*) FROM t")).scalar() == 20
    engine.dispose()


def test_stopping_checkpoints_what_is_left(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = create_engine_for(url, wal_autocheckpoint=SAFETY_PAGES)
    factory = session_factory(engine)
    checkpointer = WalCheckpointer(engine, interval=60.0)
    checkpointer.start()
    with transaction(factory) as session:
        session.execute(text("CREATE TABLE t (n INTEGER)"))
        session.execute(text("INSERT INTO t VALUES (1)"))
    checkpointer.stop()
    assert checkpointer.checkpoints == 1  # the interval never came: this is the last one
    engine.dispose()


def test_only_sqlite_files_have_a_checkpointer() -> None:
    with pytest.raises(ValueError, match="SQLite database files"):
        WalCheckpointer(create_engine_for("sqlite://"))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:////data/registry.db", Path("/data/registry.db")),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("postgresql://u@h/db", None),
    ],
)
def test_only_a_sqlite_file_counts_as_one(url: str, expected: Path | None) -> None:
    assert sqlite_file(url) == expected


def test_the_log_starts_again_under_a_steady_stream_of_writes(
    wal_database: WalDatabase,
) -> None:
    """Without the gated last step, the log would only grow while commits keep coming (and
    the commit that crossed SAFETY_PAGES would checkpoint everything while writers wait)."""
    checkpointer = WalCheckpointer(
        wal_database.engine, interval=0.001, threshold_bytes=0, restart_pages=32
    )
    checkpointer.start()
    commits = 600  # ~1,200 pages if the log never restarted
    try:
        wal_database.write(commits)
    finally:
        checkpointer.stop()
    assert checkpointer.gated >= 1
    assert checkpointer.longest_pause > 0  # measured (and logged when long)
    busy, log_pages, rows = wal_database.log_state()  # the thread has stopped
    assert busy == 0
    assert log_pages < commits  # the log started again from its beginning
    assert rows == commits
