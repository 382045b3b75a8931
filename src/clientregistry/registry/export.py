"""Exporting the registry: its source records and golden records as FHIR NDJSON files, as
the HL7 Bulk Data Access IG's ``$export`` hands them out.

Two kinds of file, both of Patients: the source records as the registry serves them (the
submitted demographics with the client tag, match tags, broken matches and the ``refer`` link
to the golden record), and the golden records (no demographics, a ``seealso`` link to each
source record, ``replaced-by`` once retired). Source records come in id order, which is
creation order, so importing the source file into an empty registry
(``clientregistry import Patient-source-1.ndjson``, each record submitted as the system its
client tag names) gives the same persons, as long as nobody decided anything by hand
(breaks and joins are not carried over). ``since`` keeps records changed at or after that
time (Bulk Data's ``_since``). Everything is read in one transaction, so the files describe
one moment: the manifest's ``transactionTime``.

The admin ``clientregistry export`` writes the files to a directory; ``GET
/fhir/Patient/$export`` makes a job the server's job runner carries out
(:mod:`clientregistry.api.bulk_export`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from clientregistry.fhir.patient import golden_record_resource
from clientregistry.registry import jobs
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.jobs import JobCancelled, JobError
from clientregistry.registry.submit import source_resource
from clientregistry.store.db import transaction
from clientregistry.store.enums import JobKind, JobOrigin, JobState
from clientregistry.store.models import BrokenMatch, BulkJob, GoldenRecord, SourceRecord

LINES_PER_FILE = 500_000
"""Records per NDJSON file (a larger export is cut into several)."""

KEEP = timedelta(hours=24)
"""How long the files of a finished export job are kept."""

PAGE = 2000


@dataclass(frozen=True, slots=True)
class OutputFile:
    """One NDJSON file of an export."""

    type: str
    name: str
    count: int
    kind: str
    """``source`` or ``golden``."""


@dataclass(slots=True)
class Manifest:
    """What an export wrote."""

    transaction_time: datetime
    output: list[OutputFile] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "transactionTime": self.transaction_time.isoformat().replace("+00:00", "Z"),
            "output": [
                {"type": f.type, "name": f.name, "count": f.count, "kind": f.kind}
                for f in self.output
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        when = datetime.fromisoformat(str(data["transactionTime"]).replace("Z", "+00:00"))
        files = [
            OutputFile(str(f["type"]), str(f["name"]), int(f["count"]), str(f.get("kind", "")))
            for f in data.get("output", [])
        ]
        return cls(when, files)


class _Writer:
    """NDJSON lines into files ``<stem>-1.ndjson``, ``<stem>-2.ndjson`` ..."""

    def __init__(self, directory: Path, stem: str, kind: str) -> None:
        self.directory = directory
        self.stem = stem
        self.kind = kind
        self.files: list[OutputFile] = []
        self._handle: Any = None
        self._count = 0

    def write(self, resource: dict[str, Any]) -> None:
        if self._handle is None or self._count >= LINES_PER_FILE:
            self._close()
            name = f"{self.stem}-{len(self.files) + 1}.ndjson"
            self._handle = (self.directory / name).open("wb")
            self.files.append(OutputFile("Patient", name, 0, self.kind))
            self._count = 0
        self._handle.write(orjson.dumps(resource) + b"\n")
        self._count += 1

    def _close(self) -> None:
        if self._handle is None:
            return
        self._handle.close()
        last = self.files[-1]
        self.files[-1] = OutputFile(last.type, last.name, self._count, last.kind)
        self._handle = None

    def close(self) -> list[OutputFile]:
        self._close()
        return self.files


def _snapshot(session: Session) -> None:
    """One moment for every read of the export (PostgreSQL; SQLite's read transaction is a
    snapshot already)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))


def _source_pages(session: Session, since: datetime | None) -> Iterator[list[SourceRecord]]:
    last: str | None = None
    while True:
        query = select(SourceRecord).order_by(SourceRecord.id).limit(PAGE)
        if since is not None:
            query = query.where(SourceRecord.last_updated >= since)
        if last is not None:
            query = query.where(SourceRecord.id > last)
        page = list(session.scalars(query))
        if not page:
            return
        yield page
        last = page[-1].id
        session.expunge_all()


def _broken(session: Session, ids: list[str]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    rows = session.execute(
        select(BrokenMatch.record_a, BrokenMatch.record_b).where(
            BrokenMatch.record_a.in_(ids) | BrokenMatch.record_b.in_(ids)
        )
    )
    for a, b in rows:
        found.setdefault(a, set()).add(b)
        found.setdefault(b, set()).add(a)
    return found


def _golden_pages(session: Session, since: datetime | None) -> Iterator[list[dict[str, Any]]]:
    last: str | None = None
    while True:
        query = select(GoldenRecord).order_by(GoldenRecord.id).limit(PAGE)
        if since is not None:
            query = query.where(GoldenRecord.last_updated >= since)
        if last is not None:
            query = query.where(GoldenRecord.id > last)
        page = list(session.scalars(query))
        if not page:
            return
        members: dict[str, list[str]] = {}
        rows = session.execute(
            select(SourceRecord.golden_id, SourceRecord.id)
            .where(SourceRecord.golden_id.in_([g.id for g in page]))
            .order_by(SourceRecord.id)
        )
        for golden_id, record_id in rows:
            if golden_id is not None:
                members.setdefault(golden_id, []).append(record_id)
        yield [
            golden_record_resource(
                g.id, g.version, g.last_updated, members.get(g.id, []), g.replaced_by
            )
            for g in page
        ]
        last = page[-1].id
        session.expunge_all()


def write_export(
    context: RegistryContext,
    directory: Path,
    *,
    since: datetime | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Manifest:
    """Write the registry's Patients (changed since ``since``) to NDJSON files in
    ``directory``; what was written."""
    directory.mkdir(parents=True, exist_ok=True)
    systems = context.settings.systems
    written = 0
    with transaction(context.sessions, write=False) as session:
        _snapshot(session)
        moment = jobs.now()
        sources = _Writer(directory, "Patient-source", "source")
        for page in _source_pages(session, since):
            broken = _broken(session, [r.id for r in page])
            for record in page:
                client = systems.get(record.client_system)
                sources.write(source_resource(record, client, broken.get(record.id, set())))
            written += len(page)
            if on_progress is not None:
                on_progress(written)
        goldens = _Writer(directory, "Patient-golden", "golden")
        for resources in _golden_pages(session, since):
            for resource in resources:
                goldens.write(resource)
            written += len(resources)
            if on_progress is not None:
                on_progress(written)
    manifest = Manifest(moment, [*sources.close(), *goldens.close()])
    (directory / "manifest.json").write_bytes(
        orjson.dumps(manifest.to_json(), option=orjson.OPT_INDENT_2)
    )
    return manifest


# ----------------------------------------------------------------------------- export jobs


def exports_dir(context: RegistryContext, job_id: int) -> Path:
    return context.settings.data_dir / "exports" / str(job_id)


def start_export(
    context: RegistryContext,
    requester: str,
    *,
    since: datetime | None,
    request_url: str,
    source_address: str | None,
) -> int:
    """A job that exports the registry for the client system ``requester`` (its id)."""
    with transaction(context.sessions) as session:
        job = BulkJob(
            kind=JobKind.EXPORT,
            state=JobState.QUEUED,
            origin=JobOrigin.SERVER,
            created_by=requester,
            fingerprint=f"export:{jobs.now().isoformat()}",
            params={
                "since": None if since is None else since.isoformat(),
                "request": request_url,
                "source_address": source_address,
            },
            progress={},
            cursor={},
            cancel_requested=False,
        )
        session.add(job)
        session.flush()
        return job.id


def run_export(
    context: RegistryContext, job_id: int, should_stop: Callable[[], bool] = lambda: False
) -> BulkJob:
    """Carry out export job ``job_id`` (all at once: an export is fast and, cut short,
    simply starts again)."""
    owner = jobs.process_owner()
    with transaction(context.sessions) as session:
        job = jobs.require(session, job_id, JobKind.EXPORT)
        if job.state in (JobState.DONE, JobState.FAILED, JobState.CANCELLED):
            return job
        jobs.take(session, job, owner)
        since_text = job.params.get("since")
    since = None if since_text is None else datetime.fromisoformat(since_text)
    directory = exports_dir(context, job_id)
    shutil.rmtree(directory, ignore_errors=True)

    def progress(done: int) -> None:
        if should_stop():
            raise JobCancelled("stopped")
        with transaction(context.sessions) as session:
            job = jobs.require(session, job_id)
            if job.cancel_requested:
                raise JobCancelled(f"export {job_id} was cancelled")
            job.progress = {**(job.progress or {}), "records": done}
            jobs.renew(job, owner)

    state, error, manifest = JobState.DONE, None, None
    try:
        manifest = write_export(context, directory, since=since, on_progress=progress)
    except JobCancelled:
        state = JobState.QUEUED if should_stop() else JobState.CANCELLED
        shutil.rmtree(directory, ignore_errors=True)
    except OSError as exc:
        state, error = JobState.FAILED, f"cannot write the export: {exc}"
    with transaction(context.sessions) as session:
        job = jobs.require(session, job_id)
        if manifest is not None:
            job.progress = {**(job.progress or {}), "manifest": manifest.to_json()}
        jobs.release(job, state, error)
        return job


def export_job(context: RegistryContext, job_id: int, requester: str) -> BulkJob:
    """Export job ``job_id`` of ``requester`` (404 for any other's)."""
    with transaction(context.sessions, write=False) as session:
        job = session.get(BulkJob, job_id)
        if job is None or job.kind != JobKind.EXPORT or job.created_by != requester:
            raise JobError(404, f"no export {job_id}")
        session.expunge(job)
        return job


def delete_export(context: RegistryContext, job_id: int, requester: str) -> None:
    """Cancel an export and delete its files."""
    export_job(context, job_id, requester)
    with transaction(context.sessions) as session:
        job = jobs.require(session, job_id)
        if job.state in jobs.UNFINISHED:
            jobs.request_cancel(session, job)
        job.progress = {**(job.progress or {}), "deleted": True}
    shutil.rmtree(exports_dir(context, job_id), ignore_errors=True)


def remove_expired(context: RegistryContext) -> int:
    """Delete the files of exports finished more than :data:`KEEP` ago; how many."""
    cutoff = jobs.now() - KEEP
    with transaction(context.sessions, write=False) as session:
        old = session.scalars(
            select(BulkJob.id).where(
                BulkJob.kind == JobKind.EXPORT,
                BulkJob.finished_at.is_not(None),
                BulkJob.finished_at < cutoff,
            )
        ).all()
    removed = 0
    for job_id in old:
        directory = exports_dir(context, job_id)
        if directory.exists():
            shutil.rmtree(directory, ignore_errors=True)
            removed += 1
    return removed
