"""Bulk jobs in the database: who runs one (leases), and finding them again.

A job (:class:`~clientregistry.store.models.BulkJob`) is run by one process at a time: the
command that created it (``origin = cli``), or a server's job runner (``origin = server``,
:mod:`clientregistry.registry.job_runner`). The process running it holds a lease, renewed
as it works; a job whose runner died (killed, the server restarted) is taken up again once
its lease has run out, or at once when its owner was a process of this machine that no longer
exists. Every step of a job commits its progress with its work, so whoever takes it up goes
on exactly where it stopped.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from clientregistry.errors import ClientRegistryError
from clientregistry.registry.actor import Refused
from clientregistry.store.enums import JobKind, JobOrigin, JobState
from clientregistry.store.models import BulkJob

LEASE = timedelta(seconds=60)
"""How long a job stays its runner's without a sign of life."""

UNFINISHED = (JobState.QUEUED, JobState.RUNNING, JobState.INTERRUPTED)


class JobError(Refused):
    """A job cannot be started, continued or changed: ``status`` as for HTTP (404, 409, 400)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message, code="job")


class JobCancelled(ClientRegistryError):
    """The job was cancelled while it ran (it stopped after its last committed step)."""


def now() -> datetime:
    return datetime.now(UTC)


_STARTED = str(int(time.time()))


def process_owner() -> str:
    """This process as a lease owner: ``host|pid|start``."""
    return f"{socket.gethostname()}|{os.getpid()}|{_STARTED}"


def owner_alive(owner: str | None) -> bool:
    """Whether the process named by a lease owner may still run: False only for a process
    of this machine that no longer exists (another machine's is not known: its lease says)."""
    if not owner:
        return False
    host, _, rest = owner.partition("|")
    pid_text = rest.partition("|")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return True
    pid = int(pid_text)
    if pid == os.getpid():
        return owner == process_owner()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_free(job: BulkJob, at: datetime | None = None) -> bool:
    """Whether nobody holds the job: no lease, an expired one, or a dead owner's."""
    if job.lease_owner is None or job.lease_until is None:
        return True
    if job.lease_until < (at or now()):
        return True
    return not owner_alive(job.lease_owner)


def take(session: Session, job: BulkJob, owner: str) -> None:
    """Hold ``job`` for ``owner`` (a :class:`JobError` 409 when someone else does) and mark
    it running."""
    at = now()
    if job.lease_owner not in (None, owner) and not is_free(job, at):
        raise JobError(
            409,
            f"job {job.id} is being run by {job.lease_owner.split('|')[0]} "
            f"(process {job.lease_owner.split('|')[1]})",
        )
    job.lease_owner = owner
    job.lease_until = at + LEASE
    job.state = JobState.RUNNING
    job.updated_at = at
    session.flush()


def renew(job: BulkJob, owner: str) -> None:
    """Extend the lease (each step of a job does, in its own transaction)."""
    at = now()
    job.lease_owner = owner
    job.lease_until = at + LEASE
    job.updated_at = at


def release(job: BulkJob, state: JobState, error: str | None = None) -> None:
    """Let go of a job, leaving it in ``state``."""
    at = now()
    job.state = state
    job.lease_owner = None
    job.lease_until = None
    job.updated_at = at
    if state in (JobState.DONE, JobState.FAILED, JobState.CANCELLED):
        job.finished_at = at
    if error is not None:
        job.error = error[:2000]


def waiting(session: Session, kinds: tuple[JobKind, ...]) -> bool:
    """Whether a server job of ``kinds`` waits (or runs: its runner may have died)."""
    found = session.scalar(
        select(BulkJob.id)
        .where(
            BulkJob.origin == JobOrigin.SERVER,
            BulkJob.kind.in_(kinds),
            BulkJob.state.in_([JobState.QUEUED, JobState.RUNNING]),
        )
        .limit(1)
    )
    return found is not None


def claim_next(session: Session, owner: str, kinds: tuple[JobKind, ...]) -> int | None:
    """Take the oldest server job of ``kinds`` that waits or whose runner died; its id."""
    rows = session.scalars(
        select(BulkJob)
        .where(
            BulkJob.origin == JobOrigin.SERVER,
            BulkJob.kind.in_(kinds),
            BulkJob.state.in_([JobState.QUEUED, JobState.RUNNING]),
        )
        .order_by(BulkJob.id)
        .limit(20)
    ).all()
    at = now()
    for job in rows:
        if not is_free(job, at):
            continue
        # compare and set: another runner may be taking it at this moment
        taken = session.execute(
            update(BulkJob)
            .where(
                BulkJob.id == job.id,
                BulkJob.state.in_([JobState.QUEUED, JobState.RUNNING]),
                BulkJob.lease_owner.is_(None)
                if job.lease_owner is None
                else BulkJob.lease_owner == job.lease_owner,
            )
            .values(
                lease_owner=owner,
                lease_until=at + LEASE,
                state=JobState.RUNNING,
                updated_at=at,
            )
            .execution_options(synchronize_session=False)
        )
        if getattr(taken, "rowcount", 0) == 1:
            return job.id
    return None


def require(session: Session, job_id: int, kind: JobKind | None = None) -> BulkJob:
    """The job ``job_id`` (of ``kind``), or a :class:`JobError` 404."""
    job = session.get(BulkJob, job_id)
    if job is None or (kind is not None and job.kind != kind):
        what = f"{kind.value} job" if kind is not None else "job"
        raise JobError(404, f"no {what} {job_id}")
    return job


def request_cancel(session: Session, job: BulkJob) -> None:
    """Cancel a job: at once if it waits, else at the end of its current step."""
    if job.state in (JobState.DONE, JobState.FAILED, JobState.CANCELLED):
        raise JobError(409, f"job {job.id} has already ended ({job.state.value})")
    job.cancel_requested = True
    if job.state in (JobState.QUEUED, JobState.INTERRUPTED) and is_free(job):
        release(job, JobState.CANCELLED)
    session.flush()


def summary(job: BulkJob) -> dict[str, Any]:
    """A job's state as JSON (what the admin API shows)."""
    return {
        "id": job.id,
        "kind": job.kind.value,
        "state": job.state.value,
        "origin": job.origin.value,
        "created_by": job.created_by,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "finished_at": job.finished_at,
        "cancel_requested": job.cancel_requested,
        "error": job.error,
    }
