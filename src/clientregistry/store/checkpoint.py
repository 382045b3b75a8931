"""Copying SQLite's write-ahead log into the database in the background.

In WAL mode every commit appends the pages it changed to the ``-wal`` file; a *checkpoint*
copies them back into the database file and syncs it. By default SQLite checkpoints inside
whichever commit pushes the log past 1,000 pages, so that request pays for everyone's pages
(about a fifth of a submission's time here: a submission changes ~70 pages, mostly random
leaves of the blocking-key and search-token indexes). :class:`WalCheckpointer` moves that
work to a thread of the serving process: it runs a ``PASSIVE`` checkpoint (which never blocks
readers or writers) when the log has changed since the last one and is past
``threshold_bytes`` or a second old. Commits still checkpoint by themselves past
:data:`SAFETY_PAGES`, should the thread fall behind or stop.

Nothing is lost by the thread stopping or the process dying: committed data is in the log,
which SQLite replays on the next open.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from clientregistry.store.db import sqlite_file

log = logging.getLogger(__name__)

SAFETY_PAGES = 16_000
"""``wal_autocheckpoint`` for engines with a background checkpointer (64 MB of 4 KiB pages)."""


class WalCheckpointer:
    """A daemon thread checkpointing ``engine``'s SQLite database (see the module notes)."""

    def __init__(
        self, engine: Engine, *, interval: float = 0.05, threshold_bytes: int = 4 << 20
    ) -> None:
        database = sqlite_file(engine.url.render_as_string(hide_password=False))
        if database is None:
            raise ValueError("background checkpoints are for SQLite database files")
        self._engine = engine
        self._wal = Path(f"{database}-wal")
        self._interval = interval
        self._threshold = threshold_bytes
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.checkpoints = 0
        """How many checkpoints the thread has run (for tests and diagnostics)."""

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="sqlite-wal-checkpointer", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread after one last checkpoint."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _wal_state(self) -> tuple[int, int]:
        """(size, modification time in ns) of the log; zeros when there is none."""
        try:
            info = os.stat(self._wal)
        except FileNotFoundError:
            return 0, 0
        return info.st_size, info.st_mtime_ns

    def checkpoint(self) -> None:
        """One ``PASSIVE`` checkpoint now (it copies what it can without waiting)."""
        try:
            with self._engine.connect() as connection:
                connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").all()
            self.checkpoints += 1
        except DBAPIError as error:  # another process's checkpoint, a closing database
            log.debug("checkpoint skipped: %s", error)

    def _run(self) -> None:
        checked_mtime = 0
        last = time.monotonic()
        while not self._stop.wait(self._interval):
            size, mtime = self._wal_state()
            if mtime == checked_mtime:
                continue  # nothing written since the last checkpoint
            if size > self._threshold or time.monotonic() - last >= 1.0:
                checked_mtime = mtime
                self.checkpoint()
                last = time.monotonic()
        self.checkpoint()
