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
have been. A process that dies lets go of the file lock by itself. The gate only orders
writers: SQLite's lock still guards the data, so a process that does not use the gate (the
``sqlite3`` shell) is safe, merely not queued.
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


class WriteGate:
    """Admits one writer at a time to one SQLite database file (see the module notes)."""

    def __init__(self, lock_path: Path | None, timeout: float) -> None:
        self._lock = threading.Lock()
        self._lock_path = lock_path
        self._timeout = timeout
        self._fd: int | None = None
        self._held_fd: int | None = None

    def acquire(self) -> None:
        """Wait for the gate (at most the timeout); :class:`Busy` when it does not open."""
        deadline = time.monotonic() + self._timeout
        if not self._lock.acquire(timeout=self._timeout):
            raise Busy(f"database is locked: no write turn within {self._timeout:g} s")
        try:
            self._held_fd = self._lock_file(deadline)
        except BaseException:
            self._lock.release()
            raise

    def try_acquire(self) -> bool:
        """Take the gate if it is open now, without waiting."""
        if not self._lock.acquire(blocking=False):
            return False
        if self._lock_path is None or fcntl is None:
            return True
        if not self._lock_file_now():
            self._lock.release()
            return False
        self._held_fd = self._fd
        return True

    def release(self) -> None:
        """Open the gate for the next writer."""
        held, self._held_fd = self._held_fd, None
        try:
            if held is not None and fcntl is not None:
                fcntl.flock(held, fcntl.LOCK_UN)
                if held != self._fd:
                    os.close(held)
        finally:
            self._lock.release()

    def _lock_file(self, deadline: float) -> int | None:
        """The descriptor holding the file lock, once this process has it."""
        if self._lock_path is None or fcntl is None:
            return None
        if self._lock_file_now():
            return self._fd
        # Another process writes. A helper thread sleeps in the kernel until it lets go (which
        # wakes it at once, so processes take turns) on a descriptor of its own; if that takes
        # too long this thread gives up, and the helper lets go as soon as it gets the lock.
        waiter = _FileLockWaiter(self._lock_path)
        if waiter.wait(max(0.0, deadline - time.monotonic())):
            return waiter.fd
        raise Busy(
            f"database is locked: another process kept {self._lock_path.name} "
            f"for {self._timeout:g} s"
        )

    def _lock_file_now(self) -> bool:
        """Take the file lock on this gate's own descriptor if no other process holds it."""
        assert self._lock_path is not None and fcntl is not None
        if self._fd is None:
            self._fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def close(self) -> None:
        """Close the lock file (the gate must not be held)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()


class _FileLockWaiter:
    """Takes the file lock on a new descriptor in a daemon thread (see ``_lock_file``)."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._done = threading.Event()
        self._abandoned = False
        self._guard = threading.Lock()
        threading.Thread(target=self._take, name="sqlite-write-gate", daemon=True).start()

    def _take(self) -> None:
        assert fcntl is not None
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        with self._guard:
            if self._abandoned:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
                os.close(self.fd)
            else:
                self._done.set()

    def wait(self, timeout: float) -> bool:
        """Whether the lock was taken within ``timeout`` (else the waiter is abandoned)."""
        if self._done.wait(timeout):
            return True
        with self._guard:
            if self._done.is_set():
                return True
            self._abandoned = True
            return False
