"""Waiting for SQLite's write lock without polling.

SQLite lets one transaction write at a time; the others wait in its busy handler, which sleeps
in growing steps (up to 100 ms) and retries. Under load, that makes a queue of writers wait
far longer than the writer ahead of them takes: a 5 ms transaction can cost its successor
100 ms. A :class:`WriteGate` queues writers in front of SQLite instead: a thread lock within
the process, then an exclusive ``flock`` on a lock file beside the database across processes
(several ``serve --workers``), both of which wake a waiter as soon as they are released. The
gate is held from ``BEGIN IMMEDIATE`` to commit or rollback, so SQLite's own lock is then
always free when asked for.

Waits are bounded by the same timeout as SQLite's busy handler; past it,
:class:`~clientregistry.store.errors.Busy` is raised, as SQLite's "database is locked" would
have been. The gate only orders writers: SQLite's lock still guards the data, so a process
that does not use the gate (the ``sqlite3`` shell) is safe, merely not queued.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from clientregistry.store.errors import Busy

try:  # POSIX; elsewhere the gate queues threads of one process only
    import fcntl
except ImportError:  # pragma: no cover - not on this platform
    fcntl = None  # type: ignore[assignment]

_FIRST_SLEEP = 0.00005
_MAX_SLEEP = 0.0005
"""Pauses between attempts at the file lock while another process holds it: from 50 µs,
doubling, up to 0.5 ms (a transaction takes a few ms; an attempt is one system call)."""


class WriteGate:
    """Admits one writer at a time to one SQLite database file (see the module notes)."""

    def __init__(self, lock_path: Path | None, timeout: float) -> None:
        self._lock = threading.Lock()
        self._lock_path = lock_path
        self._timeout = timeout
        self._fd: int | None = None

    def acquire(self) -> None:
        """Wait for the gate (at most the timeout); :class:`Busy` when it does not open."""
        deadline = time.monotonic() + self._timeout
        if not self._lock.acquire(timeout=self._timeout):
            raise Busy(f"database is locked: no write turn within {self._timeout:g} s")
        try:
            self._lock_file(deadline)
        except BaseException:
            self._lock.release()
            raise

    def release(self) -> None:
        """Open the gate for the next writer."""
        try:
            if self._fd is not None and fcntl is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._lock.release()

    def _lock_file(self, deadline: float) -> None:
        if self._lock_path is None or fcntl is None:
            return
        if self._fd is None:
            self._fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        pause = _FIRST_SLEEP
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise Busy(
                        f"database is locked: another process kept {self._lock_path.name} "
                        f"for {self._timeout:g} s"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, _MAX_SLEEP)

    def close(self) -> None:
        """Close the lock file (the gate must not be held)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()
