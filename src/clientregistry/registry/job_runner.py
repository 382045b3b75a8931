"""The server's job runner: the imports, re-matches and exports asked for through the admin
API, run one at a time in a process of their own.

``clientregistry serve`` starts one :class:`JobRunnerProcess` beside its workers (a job holds
the interpreter for long stretches: in a worker it would stall that worker's requests). It
looks for work every :data:`POLL_SECONDS`, takes the oldest waiting job (or one whose runner
died: see :mod:`clientregistry.registry.jobs`), runs it, and looks again. So a job asked for
while the server was down, or cut short by a restart, is taken up when it starts. Asked to
stop, it ends the job's current step and leaves the job waiting for the next start; it stops
by itself when the server is gone.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.synchronize import Event
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from clientregistry.registry import jobs
from clientregistry.registry.context import RegistryContext
from clientregistry.settings import load_settings
from clientregistry.store.db import create_engine_for, session_factory, transaction
from clientregistry.store.enums import JobKind
from clientregistry.store.errors import StoreError

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
TIDY_SECONDS = 600.0
"""How often an idle runner deletes expired exports."""
"""How often an idle runner looks for work (and whether its parent is still there)."""

Run = Callable[[RegistryContext, int, Callable[[], bool]], object]


def _run_import(context: RegistryContext, job_id: int, stop: Callable[[], bool]) -> object:
    from clientregistry.registry.imports import run_import

    return run_import(context, job_id, should_stop=stop)


def _run_rematch(context: RegistryContext, job_id: int, stop: Callable[[], bool]) -> object:
    from clientregistry.registry.rematch import run_rematch

    return run_rematch(context, job_id, should_stop=stop)


def _run_export(context: RegistryContext, job_id: int, stop: Callable[[], bool]) -> object:
    from clientregistry.registry.export import run_export

    return run_export(context, job_id, stop)


RUNNERS: dict[JobKind, Run] = {
    JobKind.IMPORT: _run_import,
    JobKind.REMATCH: _run_rematch,
    JobKind.EXPORT: _run_export,
}
"""How each kind of job is run (``stop`` says when to stop after the current step)."""


class JobRunner:
    """Takes server jobs from the database and runs them until :meth:`stop`.

    ``open_context`` opens the registry the jobs work on; it is called when the first job
    is found (a runner with nothing to do only looks at the jobs table, through
    ``sessions``), so that a server starts as fast without one.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        open_context: Callable[[], RegistryContext],
        *,
        owner: str | None = None,
    ) -> None:
        self.sessions = sessions
        self.open_context = open_context
        self.context: RegistryContext | None = None
        self.owner = owner or jobs.process_owner()
        self._stop = threading.Event()
        self._tidied = 0.0

    @classmethod
    def over(cls, context: RegistryContext) -> JobRunner:
        """A runner on an open registry."""
        runner = cls(context.sessions, lambda: context)
        runner.context = context
        return runner

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        if self.context is not None:
            self.context.close()
            self.context = None

    def run_one(self) -> int | None:
        """Take and run one job, if any waits; its id."""
        with transaction(self.sessions, write=False) as session:
            waiting = jobs.waiting(session, tuple(RUNNERS))
        if not waiting:
            return None
        if self.context is None:
            self.context = self.open_context()
        context = self.context
        with transaction(context.sessions) as session:
            job_id = jobs.claim_next(session, self.owner, tuple(RUNNERS))
            kind = None if job_id is None else jobs.require(session, job_id).kind
        if job_id is None or kind is None:
            return None
        log.info("running %s job %d", kind.value, job_id)
        try:
            RUNNERS[kind](context, job_id, lambda: self._stop.is_set())
        except Exception:  # the job records its failure; the runner goes on
            log.exception("%s job %d failed", kind.value, job_id)
        return job_id

    def run(self, alive: Callable[[], bool] = lambda: True) -> None:
        """Run jobs until stopped (or until ``alive`` says the server is gone)."""
        while not self._stop.is_set() and alive():
            try:
                worked = self.run_one()
            except StoreError as error:
                log.warning("job runner: %s", error)
                worked = None
            if worked is None:
                self._tidy()
                self._stop.wait(POLL_SECONDS)

    def _tidy(self) -> None:
        """Now and then, delete the files of exports past their time."""
        now = time.monotonic()
        if now - self._tidied < TIDY_SECONDS or self.context is None:
            return
        self._tidied = now
        from clientregistry.registry.export import remove_expired

        try:
            remove_expired(self.context)
        except (OSError, StoreError) as error:
            log.warning("could not delete expired exports: %s", error)


NICENESS = 5
"""How much lower than the server's workers the runner runs: a bulk job gives way to
requests when the machine is busy."""


def _main(data_dir: str, parent: int, stop: Event, ready: Event) -> None:
    # The server stops it (or its absence does): Ctrl-C and the SIGTERM or SIGHUP (reload the
    # certificates) sent to the server's process group must not cut a job's step short.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):  # (no os.nice on Windows)
        os.nice(NICENESS)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: job runner: %(message)s")
    settings = load_settings(Path(data_dir))
    engine = create_engine_for(settings.database)

    def open_context() -> RegistryContext:
        context = RegistryContext.open(
            settings, run_migrations=False, serving=True, checkpoint_thread=False
        )
        context.start()
        return context

    runner = JobRunner(session_factory(engine), open_context)

    def stop_when_asked() -> None:
        stop.wait()
        runner.stop()

    watcher = threading.Thread(target=stop_when_asked, daemon=True)
    watcher.start()
    ready.set()
    try:
        runner.run(alive=lambda: os.getppid() == parent)
    finally:
        runner.close()
        engine.dispose()


class JobRunnerProcess:
    """The job runner of a server (data directory ``data_dir``), in a child process."""

    def __init__(self, data_dir: Path) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._ready = context.Event()
        # Not a daemon: an import's reader is a process of its own.
        self._process = context.Process(
            target=_main,
            args=(str(data_dir), os.getpid(), self._stop, self._ready),
            name="clientregistry-jobs",
        )

    def start(self) -> None:
        self._process.start()

    def wait_ready(self, timeout: float = 60.0) -> bool:
        """Wait until it looks for work (its registry is open)."""
        return self._ready.wait(timeout)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def is_alive(self) -> bool:
        return self._process.is_alive()

    def stop(self, timeout: float = 60.0) -> None:
        """Ask it to stop after the current step of its job, and wait; kill it past
        ``timeout`` (the job then continues at the next start, from its last step)."""
        self._stop.set()
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
