"""``/healthz`` and ``/readyz``: for a load balancer, a service manager, an orchestrator.

No authentication (a probe has no certificate) and nothing revealed beyond what is asked:

* ``GET /healthz`` — the process answers: 200 ``{"status": "ok"}``.
* ``GET /readyz`` — the registry can serve: the database answers, its schema is this
  release's, and the server and CA certificates stay valid for more than
  ``health.certificate_days`` days. 200 ``{"status": "ready"}``, or 503 ``{"status": "not
  ready", "failing": [...]}`` naming the checks that failed (``database``, ``schema``,
  ``certificate``); the details go to the server's log.

The checks run at most once a second (:data:`CACHE_SECONDS`), whatever the probes' rate, and
the database's in the thread pool with a time limit, so that a database that hangs neither
stalls the worker nor the probe.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text

from clientregistry.registry.context import RegistryContext
from clientregistry.security.authority import CA_CERT, SERVER_CERT
from clientregistry.security.certificates import read_certificate, utcnow
from clientregistry.store.db import (
    current_revision,
    head_revision,
    sqlite_file,
    translate_errors,
)

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

CACHE_SECONDS = 1.0
DATABASE_TIMEOUT = 5.0


@dataclass
class _Readiness:
    checked_at: float = float("-inf")
    failing: list[str] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@functools.cache
def _head() -> str | None:
    """This release's schema revision (read from the migration files once)."""
    return head_revision()


_FILE_SEEN: dict[Path, tuple[int, int]] = {}
"""The SQLite file each database path named when readiness first looked (device, inode)."""


def _same_file(path: Path) -> bool:
    """Whether ``path`` is still the SQLite file this process first found there.

    A file moved or deleted away can come back empty at once: another process of the server
    (the checkpointer, the job runner) opening the path creates a new file, which would read
    as a schema problem rather than the database gone.
    """
    try:
        found = path.stat()
    except OSError:
        return False
    identity = (found.st_dev, found.st_ino)
    return _FILE_SEEN.setdefault(path, identity) == identity


def _check_database(context: RegistryContext) -> str | None:
    """``database`` or ``schema`` when that check fails (logged), else None."""
    path = sqlite_file(context.settings.database)
    if path is not None and not _same_file(path):  # open connections would go on regardless
        log.warning("readiness: the database file %s is gone or was replaced", path)
        return "database"
    try:
        with translate_errors(), context.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        revision = current_revision(context.engine)
    except Exception as error:  # any failure means not ready; the log says which
        log.warning("readiness: the database does not answer: %s", error)
        return "database"
    if revision != _head():
        log.warning("readiness: schema at %s, this release needs %s", revision, _head())
        return "schema"
    return None


def _check_certificates(certs_dir: Path, days: int) -> str | None:
    for name in (SERVER_CERT, CA_CERT):
        try:
            expires = read_certificate(certs_dir / name).not_valid_after_utc
        except Exception as error:
            log.warning("readiness: cannot read %s: %s", certs_dir / name, error)
            return "certificate"
        left = (expires - utcnow()).total_seconds() / 86400
        if left <= days:
            log.warning("readiness: %s expires in %.1f days (%s)", name, left, expires)
            return "certificate"
    return None


async def _failing(context: RegistryContext, state: _Readiness) -> list[str]:
    async with state.lock:
        if time.monotonic() - state.checked_at < CACHE_SECONDS:
            return state.failing
        failing: list[str] = []
        try:
            problem = await asyncio.wait_for(
                run_in_threadpool(_check_database, context), DATABASE_TIMEOUT
            )
        except TimeoutError:
            log.warning("readiness: the database did not answer in %.0f s", DATABASE_TIMEOUT)
            problem = "database"
        if problem:
            failing.append(problem)
        settings = context.settings
        problem = _check_certificates(settings.certs_dir, settings.ready_certificate_days)
        if problem:
            failing.append(problem)
        state.failing, state.checked_at = failing, time.monotonic()
        return failing


@router.get("/healthz")
async def healthz() -> JSONResponse:
    """Alive."""
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Ready to serve (database, schema, certificates)."""
    state: _Readiness | None = getattr(request.app.state, "readiness", None)
    if state is None:
        state = request.app.state.readiness = _Readiness()
    failing = await _failing(request.app.state.context, state)
    if failing:
        return JSONResponse({"status": "not ready", "failing": failing}, status_code=503)
    return JSONResponse({"status": "ready"})
