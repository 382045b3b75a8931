"""A SQLite database under a steady stream of writes, for the checkpointer tests (the thread
and the server's process)."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import text

from clientregistry.store.checkpoint import SAFETY_PAGES
from clientregistry.store.db import create_engine_for, session_factory, transaction


class WalDatabase:
    """A SQLite file in WAL mode whose commits leave checkpointing to someone else (as a
    server's do), with a steady stream of writes to checkpoint."""

    def __init__(self, path: Path) -> None:
        self.url = f"sqlite:///{path}"
        self.engine = create_engine_for(self.url, wal_autocheckpoint=SAFETY_PAGES)
        self.factory = session_factory(self.engine)
        with transaction(self.factory) as session:
            session.execute(text("CREATE TABLE t (n INTEGER, pad TEXT)"))

    def write(self, commits: int) -> None:
        """``commits`` transactions of ~2 pages each, pausing now and then so that a
        checkpointer thread in this process gets a turn at the interpreter."""
        for n in range(commits):
            with transaction(self.factory) as session:
                session.execute(
                    text("INSERT INTO t VALUES (:n, :pad)"), {"n": n, "pad": "x" * 5000}
                )
            if n % 50 == 0:
                time.sleep(0.02)

    def log_state(self) -> tuple[int, int, int]:
        """(busy, pages in the log, rows in ``t``), after one last passive checkpoint; call
        it once nobody else checkpoints."""
        with self.engine.connect() as connection:
            busy, log_pages, _copied = connection.exec_driver_sql(
                "PRAGMA wal_checkpoint(PASSIVE)"
            ).one()
            rows = connection.exec_driver_sql("SELECT count(*) FROM t").scalar_one()
        return int(busy), int(log_pages), int(rows)
