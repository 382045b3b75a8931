"""Importing a file of Patients: the import job (batched, resumable, its progress in the
database).

Every record goes through the submit use case the API uses (same checks, matching, links and
audit: :meth:`~clientregistry.registry.submit.Submitter.submit_batch`), as the client system
the import names (or, in a file this registry exported, the one each record's tag names), a
batch of records per transaction. Each batch commits its records, a report row for each of
its input rows (:class:`~clientregistry.store.models.ImportRow`) and the job's new position
in the file together, so an import stopped at any moment (``kill -9`` included) and started
again with the same file and options continues after its last committed batch: every record
is stored once, matched as an uninterrupted import would have matched it.

An import is a :class:`~clientregistry.store.models.BulkJob` of kind ``import``, found again
by its fingerprint (the file's content and the options). The command line runs its own; the
admin API's (``POST /admin/imports``) are run by the server's job runner, which takes up an
unfinished one after a restart.

Reading and preparing rows (parsing, FHIR checks, features, blocking keys) runs in a second
process (:mod:`clientregistry.registry.import_rows`) while this one matches and writes.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session

from clientregistry.batch.readers import CsvMapping
from clientregistry.fhir.errors import FhirError
from clientregistry.registry import audit, jobs
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.import_rows import (
    FileFormat,
    InputRow,
    Position,
    ReadPlan,
    count_rows,
    file_format,
    rows_here,
    rows_in_background,
)
from clientregistry.registry.jobs import JobCancelled, JobError
from clientregistry.registry.rules_in_force import generation_of
from clientregistry.registry.submit import Decision, Submission, Submitter, prepare_submission
from clientregistry.store.db import transaction, widen_cache
from clientregistry.store.driver import DriverInsert
from clientregistry.store.enums import (
    AgentKind,
    AuditAction,
    JobKind,
    JobOrigin,
    JobState,
    MatchStatus,
    RowOutcome,
)
from clientregistry.store.locks import lock_registry
from clientregistry.store.models import BulkJob, ImportRow, SourceRecord
from clientregistry.store.term_counts import load_term_counts

DEFAULT_BATCH = 500
"""Rows per transaction: large enough that a batch's statements cost little per record,
small enough that a server sharing the database waits at most a fraction of a second."""

MAX_BATCH = 5000

MAX_UPLOAD_BYTES = 4 << 30
"""The largest file the server takes in an upload (4 GiB: several million records), from
the admin API or the web UI."""

IN_PROCESS_ROWS = 2000
"""Files of fewer rows (about) are read in this process (a second one costs ~0.5 s)."""

_INSERT_ROWS = DriverInsert(insert(ImportRow))


class OnError:
    SKIP = "skip"
    STOP = "stop"


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """How to read and submit a file (the fingerprint holds all but ``batch_size``)."""

    system: str | None = None
    """The submitting client system; None: each record's client tag (an export's)."""
    columns: tuple[str, ...] = ()
    """CSV ``element=column`` overrides, as ``dedupe --column`` takes them."""
    on_error: str = OnError.SKIP
    batch_size: int = DEFAULT_BATCH

    def mapping(self) -> CsvMapping:
        """The CSV mapping (a :class:`JobError` 400 for a bad override)."""
        try:
            return CsvMapping().with_overrides(list(self.columns))
        except ValueError as error:
            raise JobError(400, str(error)) from None


@dataclass(slots=True)
class ImportCounts:
    """What an import has done so far."""

    rows: int = 0
    created: int = 0
    updated: int = 0
    new_persons: int = 0
    linked: int = 0
    potential: int = 0
    conflicts: int = 0
    errors: int = 0
    skipped: int = 0

    def add(self, rows: Sequence[InputRow], decisions: Sequence[Decision]) -> None:
        self.rows += len(rows)
        for row in rows:
            if row.outcome is RowOutcome.ERROR:
                self.errors += 1
            elif row.outcome is RowOutcome.SKIPPED:
                self.skipped += 1
        for decision in decisions:
            if decision.created:
                self.created += 1
                if decision.score is None:
                    self.new_persons += 1
            else:
                self.updated += 1
            if decision.score is not None:
                self.linked += 1
            if decision.potential:
                self.potential += 1
            if decision.conflicts:
                self.conflicts += 1

    def to_json(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ImportCounts:
        known = {k: int(v) for k, v in (data or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True, slots=True)
class ImportStatus:
    """An import as the admin API and the command line show it."""

    id: int
    state: JobState
    origin: JobOrigin
    file_name: str
    file_format: str
    system: str | None
    created_by: str
    created_at: Any
    updated_at: Any
    finished_at: Any
    total: int | None
    """About how many rows the file holds (None until known)."""
    counts: ImportCounts
    on_error: str
    cancel_requested: bool
    error: str | None

    @property
    def done_fraction(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, self.counts.rows / self.total)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state.value,
            "origin": self.origin.value,
            "file_name": self.file_name,
            "file_format": self.file_format,
            "system": self.system,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
            "total": self.total,
            "progress": self.done_fraction,
            "counts": self.counts.to_json(),
            "on_error": self.on_error,
            "cancel_requested": self.cancel_requested,
            "error": self.error,
        }


def status_of(job: BulkJob) -> ImportStatus:
    params = job.params
    progress = job.progress or {}
    return ImportStatus(
        id=job.id,
        state=job.state,
        origin=job.origin,
        file_name=str(params.get("name", "")),
        file_format=str(params.get("format", "")),
        system=params.get("system"),
        created_by=job.created_by,
        created_at=job.created_at,
        updated_at=job.updated_at,
        finished_at=job.finished_at,
        total=progress.get("total"),
        counts=ImportCounts.from_json(progress.get("counts")),
        on_error=str(params.get("on_error", OnError.SKIP)),
        cancel_requested=job.cancel_requested,
        error=job.error,
    )


# ----------------------------------------------------------------------------- starting


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fingerprint(sha: str, file_kind: str, options: ImportOptions) -> str:
    key = orjson.dumps(
        {
            "file": sha,
            "format": file_kind,
            "system": options.system,
            "columns": list(options.columns),
            "on_error": options.on_error,
        }
    )
    return hashlib.sha256(key).hexdigest()


@dataclass(frozen=True, slots=True)
class Started:
    """What :func:`start_import` found or made."""

    job_id: int
    resumed: bool
    """An unfinished import of the same file and options, continued."""
    already_done: bool
    """A finished import of the same file and options (nothing started)."""


def check_options(context: RegistryContext, options: ImportOptions) -> None:
    """Refuse options that cannot work (a :class:`JobError` 400)."""
    if options.system is not None and options.system not in context.settings.systems:
        known = ", ".join(sorted(context.settings.systems)) or "none"
        raise JobError(
            400, f"{options.system!r} is not a client system of this registry (known: {known})"
        )
    if options.on_error not in (OnError.SKIP, OnError.STOP):
        raise JobError(400, f"on_error must be 'skip' or 'stop', not {options.on_error!r}")
    if not 1 <= options.batch_size <= MAX_BATCH:
        raise JobError(400, f"the batch size must be between 1 and {MAX_BATCH}")
    options.mapping()


def start_import(
    context: RegistryContext,
    path: Path,
    options: ImportOptions,
    *,
    origin: JobOrigin,
    actor: str,
    name: str | None = None,
    again: bool = False,
    source_address: str | None = None,
) -> Started:
    """Find the import of ``path`` with ``options`` or make one (queued).

    An unfinished import of the same content and options is continued (its runner must be
    gone); a finished one is reported (``already_done``) unless ``again``. ``name`` is the
    file's name as shown (default: ``path``'s); the format follows it.
    """
    check_options(context, options)
    if not path.is_file():
        raise JobError(400, f"{path}: no such file")
    shown = name or path.name
    kind = file_format(shown)
    sha = file_sha256(path)
    fingerprint = _fingerprint(sha, kind, options)
    with transaction(context.sessions) as session:
        found = session.scalars(
            select(BulkJob)
            .where(BulkJob.kind == JobKind.IMPORT, BulkJob.fingerprint == fingerprint)
            .order_by(BulkJob.id.desc())
        ).all()
        for job in found:
            if job.origin != origin or job.state in (JobState.FAILED, JobState.CANCELLED):
                continue
            if job.state in jobs.UNFINISHED:
                if not jobs.is_free(job) and job.lease_owner != jobs.process_owner():
                    raise JobError(
                        409,
                        f"import {job.id} of this file is running "
                        f"(process {str(job.lease_owner).split('|')[1]})",
                    )
                job.params = {**job.params, "path": str(path), "batch_size": options.batch_size}
                job.state = JobState.QUEUED
                return Started(job.id, True, False)
            if job.state is JobState.DONE and not again:
                return Started(job.id, False, True)
        job = BulkJob(
            kind=JobKind.IMPORT,
            state=JobState.QUEUED,
            origin=origin,
            created_by=actor,
            fingerprint=fingerprint,
            params={
                "path": str(path),
                "name": shown,
                "format": kind,
                "sha256": sha,
                "size": path.stat().st_size,
                "system": options.system,
                "columns": list(options.columns),
                "on_error": options.on_error,
                "batch_size": options.batch_size,
                "source_address": source_address,
            },
            progress={"counts": ImportCounts().to_json(), "total": count_rows(path, kind)},
            cursor=Position().to_json(),
            cancel_requested=False,
        )
        session.add(job)
        session.flush()
        _audit_job(session, job, actor, "import-start", source_address)
        return Started(job.id, False, False)


def _audit_job(
    session: Session,
    job: BulkJob,
    actor: str,
    event: str,
    source_address: str | None,
    detail: dict[str, Any] | None = None,
) -> None:
    params = job.params
    audit.record(
        session,
        action=AuditAction.EXECUTE,
        outcome=0 if job.state is not JobState.FAILED else 4,
        interaction=event,
        agent=actor,
        agent_kind=AgentKind.USER,
        source_address=source_address,
        entity=f"BulkJob/{job.id}",
        detail={
            "job": job.id,
            "file": params.get("name"),
            "sha256": params.get("sha256"),
            "system": params.get("system"),
            **(detail or {}),
        },
    )


def stored_upload_path(context: RegistryContext, job_name: str) -> Path:
    """Where the server keeps uploaded files (``DATA_DIR/imports``)."""
    directory = context.settings.data_dir / "imports"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / job_name


def keep_upload(context: RegistryContext, source: Path, name: str) -> Path:
    """Move an uploaded file where the job runner reads it; its new path."""
    digest = file_sha256(source)[:16]
    target = stored_upload_path(context, f"{digest}-{Path(name).name or 'upload'}")
    shutil.move(str(source), target)
    return target


# ----------------------------------------------------------------------------- running


Progress = Callable[[ImportStatus], None]


@dataclass
class ImportRunner:
    """Runs one import job to its end (or until it is stopped, cancelled or fails)."""

    context: RegistryContext
    job_id: int
    owner: str = field(default_factory=jobs.process_owner)
    progress: Progress | None = None
    should_stop: Callable[[], bool] = lambda: False
    background: bool | None = None
    """Read in a second process (None: for files of more than :data:`IN_PROCESS_ROWS`)."""

    read_generation: int = -1
    """The generation of the rules the reader prepares rows under."""

    def run(self) -> ImportStatus:
        """Run the job; its status at the end. A stop (``should_stop``, Ctrl-C) leaves it
        ``interrupted`` for the command line (or ``queued`` for the server) after its last
        committed batch."""
        context = self.context
        with transaction(context.sessions) as session:
            job = jobs.require(session, self.job_id, JobKind.IMPORT)
            if job.state in (JobState.DONE, JobState.FAILED, JobState.CANCELLED):
                return status_of(job)
            jobs.take(session, job, self.owner)
            params, cursor = dict(job.params), dict(job.cursor)
            progress = dict(job.progress or {})
        options = ImportOptions(
            system=params.get("system"),
            columns=tuple(params.get("columns") or ()),
            on_error=str(params.get("on_error", OnError.SKIP)),
            batch_size=int(params.get("batch_size", DEFAULT_BATCH)),
        )
        counts = ImportCounts.from_json(progress.get("counts"))
        position = Position.from_json(cursor)
        total = progress.get("total")
        path = Path(str(params["path"]))
        try:
            if not path.is_file():
                raise JobError(400, f"{path}: the file to import is gone")
            context.refresh_rules()
            rules = context.in_force
            if rules is None:
                raise JobError(500, "the registry's decision rules are not known")
            self.read_generation = rules.generation
            plan = ReadPlan(
                str(path),
                str(params["format"]),
                position,
                options.mapping(),
                rules,
                tuple(context.settings.systems.values()),
                options.system,
            )
            background = self.background
            if background is None:
                background = total is None or total - position.rows > IN_PROCESS_ROWS
            rows = rows_in_background(plan) if background else rows_here(plan)
            try:
                final = self._run_batches(rows, options, counts, params)
            finally:
                close = getattr(rows, "close", None)
                if close is not None:
                    close()
        except JobCancelled:
            return self._finish(JobState.CANCELLED, None, "import-cancelled")
        except (KeyboardInterrupt, _Stopped):
            interrupted = (
                JobState.INTERRUPTED if self._origin() is JobOrigin.CLI else JobState.QUEUED
            )
            return self._finish(interrupted, None, None)
        except JobError as error:
            return self._finish(JobState.FAILED, error.message, "import-failed")
        except Exception as error:
            # The command line's job waits to be run again (after the cause is seen to); the
            # server's fails (an administrator looks at it).
            cli = self._origin() is JobOrigin.CLI
            state = JobState.INTERRUPTED if cli else JobState.FAILED
            self._finish(state, f"{type(error).__name__}: {error}", "import-failed")
            raise
        if final is JobState.FAILED:  # stopped at a bad row (--on-error stop): recorded
            return import_status(context, self.job_id)
        return self._finish(final, None, "import-done")

    def _origin(self) -> JobOrigin:
        with transaction(self.context.sessions, write=False) as session:
            return jobs.require(session, self.job_id).origin

    def _run_batches(
        self,
        rows: Iterator[InputRow],
        options: ImportOptions,
        counts: ImportCounts,
        params: dict[str, Any],
    ) -> JobState:
        statistics = _Statistics(self.context)
        batch: list[InputRow] = []
        for row in rows:
            if row.outcome is RowOutcome.ERROR and options.on_error == OnError.STOP:
                batch.append(row)
                self._commit_batch(batch, counts, params, stop_error=row)
                return JobState.FAILED
            batch.append(row)
            if len(batch) >= options.batch_size:
                self._commit_batch(batch, counts, params)
                batch = []
                statistics.after(counts.created)
                if self.should_stop():
                    raise _Stopped
        if batch:
            self._commit_batch(batch, counts, params)
        return JobState.DONE

    def _commit_batch(
        self,
        batch: list[InputRow],
        counts: ImportCounts,
        params: dict[str, Any],
        stop_error: InputRow | None = None,
    ) -> None:
        while True:
            try:
                return self._try_batch(batch, counts, params, stop_error)
            except _RulesMoved as moved:
                # The rules in force changed (a re-match switched them): match this batch,
                # and every later one, under the new rules.
                self.context.refresh_rules(moved.generation)

    def _submissions(self, batch: list[InputRow]) -> list[Submission]:
        """The batch's submissions, prepared again here if the rules changed since the
        reader prepared them."""
        submissions = [row.submission for row in batch if row.submission is not None]
        context = self.context
        if context.generation == self.read_generation:
            return submissions
        matcher = context.matcher
        return [prepare_submission(matcher, s.patient, s.client) for s in submissions]

    def _try_batch(
        self,
        batch: list[InputRow],
        counts: ImportCounts,
        params: dict[str, Any],
        stop_error: InputRow | None,
    ) -> None:
        context = self.context
        address = params.get("source_address")
        try:
            with transaction(context.sessions) as session:
                lock_registry(session)  # (PostgreSQL: before reading what the batch decides on)
                widen_cache(session)
                generation = generation_of(session)
                if generation != context.generation:
                    raise _RulesMoved(generation)
                submissions = self._submissions(batch)
                job = jobs.require(session, self.job_id)
                if job.cancel_requested:
                    raise JobCancelled(f"import {self.job_id} was cancelled")
                if job.lease_owner != self.owner:
                    raise JobError(409, f"import {self.job_id} was taken over by another runner")
                batch, decisions = _submit_all(
                    session, context, batch, submissions, address, {"import": job.id}
                )
                _INSERT_ROWS.execute(session.connection(), _report_rows(job.id, batch, decisions))
                counts.add(batch, decisions)
                job.cursor = batch[-1].after.to_json()
                progress = dict(job.progress or {})
                total = progress.get("total")
                if total is not None and total < counts.rows:
                    progress["total"] = counts.rows  # (a count of lines is only about right)
                progress["counts"] = counts.to_json()
                job.progress = progress
                jobs.renew(job, self.owner)
                if stop_error is not None:
                    jobs.release(
                        job,
                        JobState.FAILED,
                        f"stopped at {stop_error.where}: {stop_error.message}",
                    )
                    _audit_job(
                        session, job, job.created_by, "import-failed", address, counts.to_json()
                    )
                status = status_of(job)
        except BaseException:
            # The batch's records are not stored: count them out of this process's term
            # counts again (they were counted in as they were matched).
            _reload_term_counts(context)
            raise
        if self.progress is not None:
            self.progress(status)

    def _finish(self, state: JobState, error: str | None, event: str | None) -> ImportStatus:
        with transaction(self.context.sessions) as session:
            job = jobs.require(session, self.job_id)
            if job.state is JobState.RUNNING or job.lease_owner == self.owner:
                jobs.release(job, state, error)
                if event is not None:
                    counts = dict(job.progress or {}).get("counts")
                    progress = dict(job.progress or {})
                    if state is JobState.DONE:
                        progress["total"] = ImportCounts.from_json(counts).rows
                        job.progress = progress
                    _audit_job(
                        session,
                        job,
                        job.created_by,
                        event,
                        job.params.get("source_address"),
                        {"counts": counts},
                    )
            return status_of(job)


class _Statistics:
    """Keeps PostgreSQL's planner statistics up with an import that multiplies the tables
    (a server without autovacuum never gathers them, and the candidates query then costs
    several times more): ``ANALYZE`` whenever the records have doubled (at least 1,000 more)."""

    TABLES = "source_record, blocking_key, search_token, golden_record, link, match_issue"

    def __init__(self, context: RegistryContext) -> None:
        self.context = context
        self.postgresql = context.engine.dialect.name == "postgresql"
        self.base = 0
        if self.postgresql:
            with context.sessions() as session:
                self.base = int(session.scalar(select(func.count()).select_from(SourceRecord)) or 0)
        self.analyzed = self.base

    def after(self, created: int) -> None:
        records = self.base + created
        if not self.postgresql or records < max(2 * self.analyzed, self.analyzed + 1000):
            return
        with self.context.engine.connect() as connection:
            connection.execute(text(f"ANALYZE {self.TABLES}"))
            connection.commit()
        self.analyzed = records


class _RulesMoved(Exception):
    def __init__(self, generation: int) -> None:
        super().__init__(generation)
        self.generation = generation


class _Stopped(Exception):
    """The caller asked the import to stop (it continues when run again)."""


def _reload_term_counts(context: RegistryContext) -> None:
    counts = type(context.term_counts)(context.matcher.extractor)
    with context.sessions() as session:
        load_term_counts(session, counts)
    context.term_counts = counts


def _submit_all(
    session: Session,
    context: RegistryContext,
    batch: list[InputRow],
    submissions: list[Submission],
    address: str | None,
    detail: dict[str, Any],
) -> tuple[list[InputRow], list[Decision]]:
    """Submit a batch's records in order: in bulk (:meth:`Submitter.submit_batch`), but a
    Resolve Duplicate (a Patient ``replaced-by`` another) through the feed the API uses
    (:func:`~clientregistry.registry.feed.feed`), which checks and merges it; one it refuses
    becomes an error row. The batch's rows as they end, and the decisions."""
    from clientregistry.registry.feed import feed

    submitter = Submitter(context)
    decisions: list[Decision] = []
    plain: list[Submission] = []
    refused: dict[int, str] = {}
    prepared = iter(submissions)
    for position, row in enumerate(batch):
        if row.submission is None:
            continue
        submission = next(prepared)
        if submission.survivor is None:
            plain.append(submission)
            continue
        decisions += submitter.submit_batch(
            session, plain, source_address=address, audit_detail=detail
        )
        plain = []
        try:
            fed = feed(session, context, submission, source_address=address)
        except FhirError as error:  # refused before anything was written
            refused[position] = error.diagnostics[:500]
            continue
        if fed.submitted is not None:
            decisions.append(Decision.of(fed.submitted))
    decisions += submitter.submit_batch(session, plain, source_address=address, audit_detail=detail)
    if refused:
        batch = [
            replace(row, submission=None, outcome=RowOutcome.ERROR, message=refused[n])
            if n in refused
            else row
            for n, row in enumerate(batch)
        ]
    return batch, decisions


def _report_rows(
    job_id: int, batch: Sequence[InputRow], decisions: Sequence[Decision]
) -> list[dict[str, Any]]:
    results = iter(decisions)
    rows = []
    for row in batch:
        base: dict[str, Any] = {
            "job_id": job_id,
            "row": row.number,
            "line": row.line,
            "entry": row.entry,
            "input_id": row.input_id,
        }
        if row.submission is None:
            rows.append(
                {
                    **base,
                    "record_id": None,
                    "golden_id": None,
                    "outcome": row.outcome or RowOutcome.ERROR,
                    "created": False,
                    "score": None,
                    "rule_set": None,
                    "potential": 0,
                    "conflicts": 0,
                    "message": row.message,
                }
            )
            continue
        decision = next(results)
        rows.append(
            {
                **base,
                "record_id": decision.record_id,
                "golden_id": decision.golden_id,
                "outcome": outcome_of(decision),
                "created": decision.created,
                "score": decision.score,
                "rule_set": decision.rule_set,
                "potential": decision.potential,
                "conflicts": decision.conflicts,
                "message": None,
            }
        )
    return rows


def outcome_of(decision: Decision) -> RowOutcome:
    """A stored row's outcome: its record's match status (OpenCR's tags)."""
    return {
        MatchStatus.NONE: RowOutcome.NEW_PERSON,
        MatchStatus.AUTO: RowOutcome.LINKED,
        MatchStatus.POTENTIAL: RowOutcome.POTENTIAL,
        MatchStatus.CONFLICT: RowOutcome.CONFLICT,
    }[decision.status]


def run_import(
    context: RegistryContext,
    job_id: int,
    *,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    background: bool | None = None,
) -> ImportStatus:
    """Run (or continue) import ``job_id`` in this process."""
    return ImportRunner(
        context, job_id, progress=progress, should_stop=should_stop, background=background
    ).run()


def import_status(context: RegistryContext, job_id: int) -> ImportStatus:
    with transaction(context.sessions, write=False) as session:
        return status_of(jobs.require(session, job_id, JobKind.IMPORT))


def list_imports(
    context: RegistryContext, offset: int, limit: int
) -> tuple[int, list[ImportStatus]]:
    """Imports, newest first: the total and one page."""
    with transaction(context.sessions, write=False) as session:
        total = session.scalar(
            select(func.count()).select_from(BulkJob).where(BulkJob.kind == JobKind.IMPORT)
        )
        found = session.scalars(
            select(BulkJob)
            .where(BulkJob.kind == JobKind.IMPORT)
            .order_by(BulkJob.id.desc())
            .offset(offset)
            .limit(limit)
        ).all()
        return int(total or 0), [status_of(job) for job in found]


def cancel_import(
    context: RegistryContext, job_id: int, actor: str, address: str | None
) -> ImportStatus:
    """Cancel an import: at once if it waits, else after its current batch."""
    with transaction(context.sessions) as session:
        job = jobs.require(session, job_id, JobKind.IMPORT)
        jobs.request_cancel(session, job)
        _audit_job(session, job, actor, "import-cancel", address)
        return status_of(job)


def wait_for(context: RegistryContext, job_id: int, timeout: float = 60.0) -> ImportStatus:
    """Poll until the import has ended (tests, scripts)."""
    deadline = time.monotonic() + timeout
    while True:
        status = import_status(context, job_id)
        if status.state not in jobs.UNFINISHED or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


__all__ = [
    "DEFAULT_BATCH",
    "MAX_UPLOAD_BYTES",
    "FileFormat",
    "ImportCounts",
    "ImportOptions",
    "ImportRunner",
    "ImportStatus",
    "OnError",
    "Started",
    "cancel_import",
    "import_status",
    "list_imports",
    "run_import",
    "start_import",
]
