"""The SQLite checkpointer of a server, in a process of its own.

Every worker of ``clientregistry serve`` writes to one SQLite file. Run as a thread in each
worker, :class:`~clientregistry.store.checkpoint.WalCheckpointer` had two faults: with N
workers, N threads raced to copy the same log (and each restart held the write gate), and
the thread shared its worker's interpreter lock with the event loop, busy with requests, so
each of the gated checkpoint's few calls into SQLite could wait up to the interpreter's
switch interval (5 ms) to carry on while every writer waited: pauses of 25-70 ms instead of
the 3-6 ms the checkpoint itself takes (measured at 100,000 records, three workers).

:class:`CheckpointerProcess` runs one checkpointer for the whole server in a child process
with nothing else to do. It stops when asked, and by itself when its parent is gone (the
server was killed), after one last checkpoint. Ctrl-C and SIGTERM reach it as they reach the
workers; it ignores them and stops when the server stops it. Nothing is lost if it dies:
committed data is in the log, and commits checkpoint by themselves past
:data:`~clientregistry.store.checkpoint.SAFETY_PAGES`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from multiprocessing.connection import Connection
from typing import Any

from clientregistry.store.checkpoint import SAFETY_PAGES, WalCheckpointer
from clientregistry.store.db import create_engine_for

EXTERNAL_CHECKPOINTS = "CR_EXTERNAL_CHECKPOINTS"
"""Environment variable set (to ``1``) for a server's workers when its checkpointer runs in
a process of its own: they then run none."""

PARENT_CHECK_SECONDS = 1.0
"""How often the process looks whether its parent is still there."""


def _run(url: str, parent: int, server: Connection, options: dict[str, Any]) -> None:
    # The server stops it (or its absence does): Ctrl-C and the SIGTERM (or SIGHUP) sent to
    # the server's process group must not kill it halfway through a checkpoint.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    engine = create_engine_for(url, wal_autocheckpoint=SAFETY_PAGES)
    checkpointer = WalCheckpointer(engine, **options)
    checkpointer.start()
    with contextlib.suppress(OSError):
        server.send("ready")
    try:
        # A message, or the end of the pipe (the server is gone), is the signal to stop.
        while not server.poll(PARENT_CHECK_SECONDS) and os.getppid() == parent:
            pass
    finally:
        checkpointer.stop()  # one last checkpoint
        engine.dispose()
        server.close()


class CheckpointerProcess:
    """One background checkpointer process for the SQLite file at ``url``; ``options`` go to
    :class:`~clientregistry.store.checkpoint.WalCheckpointer`.

    The two talk over a pipe, not through ``multiprocessing`` events: an event is a
    semaphore, and a process stopped while it waited on one left it locked (the server then
    hung on its way out) and "leaked" (the warning Ctrl-C printed)."""

    def __init__(self, url: str, **options: Any) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child_end = context.Pipe()
        self._child_end: Connection | None = child_end
        self._process = context.Process(
            target=_run,
            args=(url, os.getpid(), child_end, options),
            name="clientregistry-checkpointer",
            daemon=True,
        )

    def start(self, timeout: float = 60.0) -> None:
        """Start the process; returns once it checkpoints (or after ``timeout`` seconds)."""
        self._process.start()
        if self._child_end is not None:
            self._child_end.close()  # the child's end lives in the child now
            self._child_end = None
        with contextlib.suppress(EOFError, OSError):
            if self._pipe.poll(timeout):
                self._pipe.recv()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def is_alive(self) -> bool:
        return self._process.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask it to stop (after a last checkpoint) and wait; kill it past ``timeout``."""
        with contextlib.suppress(OSError):
            self._pipe.send("stop")
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._pipe.close()
