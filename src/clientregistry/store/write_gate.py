"""Waiting for SQLite's write lock without polling.

SQLite lets one transaction write at a time; the others wait in its busy handler, which sleeps
in growing steps (up to 100 ms) and retries. Under load, that makes a queue of writers wait
far longer than the writer ahead of them takes: a 5 ms transaction can cost its successor
100 ms. A :class:`WriteGate` queues writers in front of SQLite instead: a thread lock within
the process, then an exclusive ``flock`` on a lock file beside the database across processes
(several ``serve --workers``), both of which wake a waiter as soon as they are released. The
gate is held from ``BEGIN IMMEDIATE`` to commit or rollback, so SQLite's own lock is then
always free when asked for.

A thread waits for its process's turn at most as long as SQLite's busy handler would have
(then :class:`~clientregistry.store.errors.Busy`, as SQLite's "database is locked" would have
been); the one thread per process that waits for the file lock waits until it is free (a
process that dies frees it). The gate only orders writers: SQLite's lock still guards the
data, so a process that does not use the gate (the ``sqlite3`` shell) is safe, merely not
queued.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from clientregistry.store.errors import Busy

try:  # POSIX; elsewhere the gate queues threads of one process only
    import fcntl
except ImportError:  # pragma: no cover - not on this platform
    fcntl = None  # type: ignore[assignment]


class WriteGate:
    """Admits one writer at a time to one SQLite database file (see the module notes)."""

    def __init__(self, lock_path: Path | None, timeout: float) -> None:
        self._lock = threading.Lock()
        self._lock_path = lock_path
        self._timeout = timeout
        self._fd: int | None = None

    def acquire(self) -> None:
        """Wait for the gate (at most the timeout); :class:`Busy` when it does not open."""
        if not self._lock.acquire(timeout=self._timeout):
            raise Busy(f"database is locked: no write turn within {self._timeout:g} s")
        try:
            self._lock_file()
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

    def _lock_file(self) -> None:
        if self._lock_path is None or fcntl is None:
            return
        if self._fd is None:
            self._fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Another process writes: sleep in the kernel until it lets go (it wakes us at
            # once, so the processes take turns). No timeout here: a process that dies lets
            # go by itself, and while one thread of this process waits here the others wait
            # for the thread lock, with the timeout.
            fcntl.flock(self._fd, fcntl.LOCK_EX)

    def close(self) -> None:
        """Close the lock file (the gate must not be held)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()
