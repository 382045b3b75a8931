"""Copying SQLite's write-ahead log into the database in the background.

In WAL mode every commit appends the pages it changed to the ``-wal`` file; a *checkpoint*
copies them back into the database file and syncs it. By default SQLite checkpoints inside
whichever commit pushes the log past 1,000 pages, so that request pays for everyone's pages
(about a fifth of a submission's time here: a submission changes ~70 pages, mostly random
leaves of the blocking-key and search-token indexes) while every other writer waits for it.
:class:`WalCheckpointer` moves that work to a background thread; ``clientregistry serve``
runs that thread in one process of its own for all its workers
(:mod:`clientregistry.store.checkpoint_process`).

Copying is not enough by itself. The log only starts again from its beginning when a writer
finds *all* of it copied, and under a steady stream of writes a checkpoint never catches up:
pages keep arriving while it copies. The log then grows until a commit crosses SQLite's own
limit (:data:`SAFETY_PAGES`) and checkpoints inside the commit after all, syncing megabytes of
pages while every writer waits (40-100 ms stalls, one every ~200 submissions, measured). So
the thread works in two steps:

1. ``PASSIVE`` checkpoints (which never block readers or writers) whenever the log has
   changed and is past ``threshold_bytes`` or a second old;
2. once the log holds ``restart_pages`` (32 MB of 4 KiB pages), rounds of a checkpoint and a
   sync of the database file until a round finds little new (the sync matters: SQLite syncs
   the file only when a checkpoint reaches the end of the log, and that sync would otherwise
   write every page copied so far), then one last checkpoint while holding the
   :class:`~clientregistry.store.write_gate.WriteGate`: a few hundred pages, a pause of 3-6 ms
   for writers every ~140 submissions. The next writer finds the log fully copied and starts
   it again from the beginning.

Commits still checkpoint by themselves past :data:`SAFETY_PAGES`, should the thread fall
behind or stop. Nothing is lost by the thread stopping or the process dying: committed data
is in the log, which SQLite replays on the next open.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from clientregistry.store.db import sqlite_file, write_gate
from clientregistry.store.errors import Busy

log = logging.getLogger(__name__)

SAFETY_PAGES = 16_000
"""``wal_autocheckpoint`` for engines with a background checkpointer (64 MB of 4 KiB pages)."""

CATCH_UP_PAGES = 256
"""A round of checkpoint-and-sync that finds at most this many new pages in the log is the
last before the short pause at the write gate (which copies whatever came since)."""


SLOW_PAUSE = 0.025
"""A gated checkpoint that holds writers back this long (seconds) is logged as a warning."""


class CheckpointResult(NamedTuple):
    """What ``PRAGMA wal_checkpoint`` reports: pages in the log, and how many are copied."""

    log_pages: int
    copied_pages: int


class WalCheckpointer:
    """A daemon thread checkpointing ``engine``'s SQLite database (see the module notes)."""

    def __init__(
        self,
        engine: Engine,
        *,
        interval: float = 0.05,
        threshold_bytes: int = 4 << 20,
        restart_pages: int = 8192,
    ) -> None:
        database = sqlite_file(engine.url.render_as_string(hide_password=False))
        if database is None:
            raise ValueError("background checkpoints are for SQLite database files")
        self._engine = engine
        self._database = database
        self._wal = Path(f"{database}-wal")
        self._interval = interval
        self._threshold = threshold_bytes
        self._restart = restart_pages
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.checkpoints = 0
        """How many checkpoints the thread has run (for tests and diagnostics)."""
        self.gated = 0
        """How many of them held the write gate, so that the log could start again."""
        self.longest_pause = 0.0
        """The longest time, in seconds, a gated checkpoint held writers back."""

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

    def checkpoint(self) -> CheckpointResult | None:
        """One ``PASSIVE`` checkpoint now (it copies what it can without waiting); None when
        SQLite refused (another process's checkpoint, a closing database)."""
        try:
            with self._engine.connect() as connection:
                row = connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        except DBAPIError as error:
            log.debug("checkpoint skipped: %s", error)
            return None
        self.checkpoints += 1
        return CheckpointResult(int(row[1]), int(row[2]))

    def restart_log(self) -> None:
        """Copy the whole log, the last pages behind the write gate (see the module notes)."""
        gate = write_gate(self._engine)
        if gate is None:
            return
        previous = -1
        for _ in range(8):  # each round copies and syncs what arrived during the one before
            result = self.checkpoint()
            if result is None or self._stop.is_set():
                return
            self._sync_database()
            if 0 <= result.log_pages - previous <= CATCH_UP_PAGES:
                break
            previous = result.log_pages
        try:
            gate.acquire()
        except Busy:
            return  # writers are busy for long: try again next time
        started = time.perf_counter()
        try:
            if self.checkpoint() is not None:
                self.gated += 1
        finally:
            gate.release()
            pause = time.perf_counter() - started
            self.longest_pause = max(self.longest_pause, pause)
            if pause >= SLOW_PAUSE:
                # Writers waited this long: usually a disk slow to sync (other I/O queued).
                log.warning("checkpoint held writers back for %.0f ms", pause * 1000)

    def _sync_database(self) -> None:
        """Flush the pages checkpoints copied into the database file so far, before the
        gate: SQLite syncs the file when a checkpoint reaches the end of the log, and that
        sync would otherwise write them all while writers wait."""
        try:
            fd = os.open(self._database, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fdatasync(fd)
        except OSError as error:
            log.debug("database sync skipped: %s", error)
        finally:
            os.close(fd)

    def _run(self) -> None:
        checked_mtime = 0
        last = time.monotonic()
        while not self._stop.wait(self._interval):
            size, mtime = self._wal_state()
            if mtime == checked_mtime:
                continue  # nothing written since the last checkpoint
            if size > self._threshold or time.monotonic() - last >= 1.0:
                checked_mtime = mtime
                result = self.checkpoint()
                last = time.monotonic()
                if result is not None and result.log_pages >= self._restart:
                    self.restart_log()
        self.checkpoint()
