"""Re-matching the whole registry under new decision rules: a dry run that reports every
change, and the job that makes them while the server keeps serving.

Both are :class:`~clientregistry.store.models.BulkJob` of kind ``rematch``, for a stored
rules version (:mod:`clientregistry.registry.rules_store`). A dry run matches every record
again (:mod:`clientregistry.registry.rematch_plan`) and keeps the plan: one
:class:`~clientregistry.store.models.RematchChange` per record that would change, and the
counts. Applying it goes through these steps, each committing its progress with its work, so
that a job stopped at any moment continues where it stopped:

``pending``
    The new version becomes the registry's *next* rules: every process (each worker checks
    twice a second) gives the records it stores the features and blocking keys of both
    versions (:mod:`clientregistry.registry.rules_in_force`).
``convert``
    In batches, every stored record gets them too (features in the layout both versions
    share, when the new rules read new fields; the new blocking keys).
``switch``
    The new rules are put in force (and recorded in the history "restore" reads); from then
    on every submission is matched under them.
``plan``
    Every record is matched again under them (a dry run's plan, made anew).
``apply``
    In batches, each change is made: a record's golden record (a new one if need be), its
    match status, its review items, a link and an audit event. A record that changed since
    the plan was made is left to ``catch-up``.
``finish``
    Golden records left without records are retired (pointing to the one that took most of
    them); the term counts are counted again under the new rules.
``catch-up``
    Records stored or changed since the plan are matched again one by one (as a reviewer's
    "match again" does), so that nothing that arrived meanwhile stays matched by the old
    rules' plan.
``cleanup``
    Blocking keys only the old rules used are dropped.

Each batch holds the registry (PostgreSQL: the registry lock; SQLite: the writer) for the
fraction of a second it takes; submissions wait that long at most. Human decisions are
never undone (see :mod:`~clientregistry.registry.rematch_plan`).
"""

from __future__ import annotations

import csv
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TextIO

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from clientregistry.matching.matcher import Matcher
from clientregistry.matching.term_frequency import TermCounts
from clientregistry.registry import jobs, rules_store
from clientregistry.registry.actor import Actor, Reading, Refused, audit_in
from clientregistry.registry.audit import event_row, insert_events
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.jobs import JobCancelled, JobError
from clientregistry.registry.links import LinkEditor
from clientregistry.registry.rematch_plan import (
    REMATCH_ACTOR_PREFIX,
    Change,
    PlanSummary,
    human_decisions,
    open_issues_by_record,
    plan_changes,
    replay,
)
from clientregistry.registry.rules_in_force import (
    STATE_ID,
    MatcherSpec,
    layout_from_json,
    layout_to_json,
    version_spec,
)
from clientregistry.registry.stored_features import UPDATE_FEATURES
from clientregistry.store.blocking_index import DatabaseBlockingIndex, key_hashes
from clientregistry.store.db import transaction
from clientregistry.store.driver import DriverInsert
from clientregistry.store.enums import (
    AgentKind,
    AuditAction,
    IssueStatus,
    JobKind,
    JobOrigin,
    JobState,
    LinkKind,
    MatchStatus,
)
from clientregistry.store.locks import lock_registry
from clientregistry.store.models import (
    AuditEvent,
    BlockingKey,
    BulkJob,
    GoldenRecord,
    Link,
    MatchIssue,
    RematchChange,
    RulesActivation,
    RulesState,
    RulesVersion,
    SourceRecord,
    TermCount,
)
from clientregistry.store.term_counts import bump_many, feature_deltas, mark_counted

BATCH = 500
"""Records per step of the batched phases."""

RELOAD_WAIT = 2.0
"""Seconds the job waits after changing the rules state, for every process to follow."""

SAFETY = timedelta(seconds=5)
"""How far before the rules became pending the switch looks for records to convert again
(clocks of several machines differ a little)."""

ENGINE_LOCAL = "local"
"""The re-match's records matched in this process (and its reader process)."""
ENGINE_SPARK = "spark"
"""The re-match's records matched on Apache Spark (dry runs only)."""

PHASES = ("pending", "convert", "switch", "plan", "apply", "finish", "catch-up", "cleanup")

_INSERT_CHANGES = DriverInsert(insert(RematchChange))
_INSERT_ISSUES = DriverInsert(insert(MatchIssue))
_INSERT_LINKS = DriverInsert(insert(Link))
_INSERT_GOLDENS = DriverInsert(insert(GoldenRecord))


@dataclass(frozen=True, slots=True)
class RematchStatus:
    """A re-match as the admin API and the command line show it."""

    id: int
    state: JobState
    origin: JobOrigin
    version: int
    dry_run: bool
    phase: str | None
    created_by: str
    created_at: Any
    updated_at: Any
    finished_at: Any
    summary: PlanSummary
    applied: int
    error: str | None
    cancel_requested: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state.value,
            "origin": self.origin.value,
            "version": self.version,
            "dry_run": self.dry_run,
            "phase": self.phase,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
            "summary": self.summary.to_json(),
            "applied": self.applied,
            "error": self.error,
            "cancel_requested": self.cancel_requested,
        }


def status_of(job: BulkJob) -> RematchStatus:
    progress = job.progress or {}
    return RematchStatus(
        id=job.id,
        state=job.state,
        origin=job.origin,
        version=int(job.params["version"]),
        dry_run=bool(job.params.get("dry_run")),
        phase=(job.cursor or {}).get("phase"),
        created_by=job.created_by,
        created_at=job.created_at,
        updated_at=job.updated_at,
        finished_at=job.finished_at,
        summary=PlanSummary.from_json(progress.get("summary")),
        applied=int(progress.get("applied", 0)),
        error=job.error,
        cancel_requested=job.cancel_requested,
    )


# ----------------------------------------------------------------------------- starting


def start_rematch(
    context: RegistryContext,
    actor: Actor,
    version_id: int,
    *,
    dry_run: bool,
    origin: JobOrigin,
    engine: str = ENGINE_LOCAL,
    spark_master: str | None = None,
    block_limit: int | None = None,
) -> int:
    """A re-match of the registry under rules version ``version_id`` (a dry run, or the job
    that puts them in force); an unfinished one of the same kind is continued. Refused
    (409) while another change of rules is under way.

    ``engine`` ``spark`` matches the records on Apache Spark (local mode, or the cluster at
    ``spark_master``): a dry run only (:mod:`clientregistry.registry.rematch_spark`), whose
    blocking join ``block_limit`` bounds (:func:`~clientregistry.spark.candidates.candidate_pairs`;
    None: the newest 100 records of each block, as the registry and the local replay read
    them)."""
    if engine not in (ENGINE_LOCAL, ENGINE_SPARK):
        raise JobError(400, f"unknown engine {engine!r} (local or spark)")
    if block_limit is not None and (engine != ENGINE_SPARK or block_limit < 1):
        raise JobError(400, "a block limit (at least 1) goes with the Spark engine only")
    if engine == ENGINE_SPARK and not dry_run:
        raise JobError(
            400, "the Spark engine makes dry runs only: apply the rules without --engine spark"
        )
    with transaction(context.sessions) as session:
        if session.get(RulesVersion, version_id) is None:
            raise JobError(404, f"no rules version {version_id}")
        key = f"{version_id}|{dry_run}" + ("" if engine == ENGINE_LOCAL else f"|{engine}")
        key += "" if block_limit is None else f"|{block_limit}"
        fingerprint = hashlib.sha256(key.encode()).hexdigest()
        unfinished = session.scalars(
            select(BulkJob)
            .where(BulkJob.kind == JobKind.REMATCH, BulkJob.state.in_(jobs.UNFINISHED))
            .order_by(BulkJob.id)
        ).all()
        for job in unfinished:
            if job.fingerprint == fingerprint and job.origin == origin:
                if job.state is JobState.INTERRUPTED:
                    job.state = JobState.QUEUED
                return job.id
            if not dry_run and not job.params.get("dry_run"):
                raise JobError(
                    409, f"re-match {job.id} is changing the rules already; let it finish"
                )
        if not dry_run:
            state = session.get(RulesState, STATE_ID)
            if state is not None and state.pending_version is not None:
                raise JobError(409, f"rules version {state.pending_version} is being put in force")
        job = BulkJob(
            kind=JobKind.REMATCH,
            state=JobState.QUEUED,
            origin=origin,
            created_by=actor.username,
            fingerprint=fingerprint,
            params={
                "version": version_id,
                "dry_run": dry_run,
                "source_address": actor.source_address,
                **(
                    {}
                    if engine == ENGINE_LOCAL
                    else {
                        "engine": engine,
                        "spark_master": spark_master,
                        "block_limit": block_limit,
                    }
                ),
            },
            progress={},
            cursor={"phase": "plan" if dry_run else "pending"},
            cancel_requested=False,
        )
        session.add(job)
        session.flush()
        event = "rematch-dry-run" if dry_run else "rematch-start"
        audit_in(
            session,
            actor,
            Reading(
                event,
                f"BulkJob/{job.id}",
                {"job": job.id, "version": version_id},
                AuditAction.EXECUTE,
            ),
        )
        return job.id


# ----------------------------------------------------------------------------- running


Progress = Callable[[RematchStatus], None]


@dataclass
class RematchRunner:
    """Runs one re-match job to its end (or until stopped, cancelled or failed)."""

    context: RegistryContext
    job_id: int
    owner: str = field(default_factory=jobs.process_owner)
    progress: Progress | None = None
    should_stop: Callable[[], bool] = lambda: False
    reload_wait: float = RELOAD_WAIT
    replayed: Callable[[int], None] | None = None
    """Called as records are matched again (with how many so far)."""

    def run(self) -> RematchStatus:
        context = self.context
        with transaction(context.sessions) as session:
            job = jobs.require(session, self.job_id, JobKind.REMATCH)
            if job.state in (JobState.DONE, JobState.FAILED, JobState.CANCELLED):
                return status_of(job)
            jobs.take(session, job, self.owner)
            self.params = dict(job.params)
            self.cursor = dict(job.cursor or {})
        try:
            while True:
                phase = self.cursor.get("phase")
                if phase == "done":
                    break
                self._check(phase)
                steps = {
                    "pending": self._pending,
                    "convert": self._convert,
                    "switch": self._switch,
                    "plan": self._plan,
                    "apply": self._apply,
                    "finish": self._finish_counts,
                    "catch-up": self._catch_up,
                    "cleanup": self._cleanup,
                }
                step = steps.get(str(phase))
                if step is None:
                    raise JobError(500, f"re-match {self.job_id} is at an unknown step {phase!r}")
                step()
                self._report()
        except JobCancelled:
            return self._finish(JobState.CANCELLED, None, "rematch-cancelled")
        except (KeyboardInterrupt, _Stopped):
            state = JobState.INTERRUPTED if self._origin() is JobOrigin.CLI else JobState.QUEUED
            return self._finish(state, None, None)
        except JobError as error:
            return self._finish(JobState.FAILED, error.message, "rematch-failed")
        except Exception as error:
            # The command line's job waits to be run again (after the cause is seen to); the
            # server's fails (an administrator looks at it).
            cli = self._origin() is JobOrigin.CLI
            state = JobState.INTERRUPTED if cli else JobState.FAILED
            self._finish(state, f"{type(error).__name__}: {error}", "rematch-failed")
            raise
        return self._finish(JobState.DONE, None, "rematch-done")

    # -------------------------------------------------------------- helpers

    @property
    def actor(self) -> str:
        return f"{REMATCH_ACTOR_PREFIX}{self.job_id}"

    @property
    def version(self) -> int:
        return int(self.params["version"])

    def _origin(self) -> JobOrigin:
        origin: JobOrigin = self._job(lambda job: job.origin)
        return origin

    def _job(self, read: Callable[[BulkJob], Any]) -> Any:
        with transaction(self.context.sessions, write=False) as session:
            return read(jobs.require(session, self.job_id))

    def _check(self, phase: Any) -> None:
        if self.should_stop():
            raise _Stopped
        with transaction(self.context.sessions) as session:
            job = jobs.require(session, self.job_id)
            cancel = job.cancel_requested and (
                bool(self.params.get("dry_run")) or phase in ("pending", "convert")
            )
            if not cancel:
                jobs.renew(job, self.owner)
                return
            self._withdraw(session)
        self.context.refresh_rules()
        raise JobCancelled(f"re-match {self.job_id} was cancelled")

    def _withdraw(self, session: Session) -> None:
        """Cancelled before the switch: the pending rules are no longer pending."""
        if self.params.get("dry_run"):
            return
        state = session.get(RulesState, STATE_ID)
        if state is not None and state.pending_version == self.version:
            state.pending_version = None
            state.generation += 1
            state.updated_at = jobs.now()

    def _save(self, session: Session, **changes: Any) -> None:
        """Commit the cursor (with the step's work, in ``session``'s transaction)."""
        self.cursor.update(changes)
        job = jobs.require(session, self.job_id)
        if job.lease_owner != self.owner:
            raise JobError(409, f"re-match {self.job_id} was taken over by another runner")
        job.cursor = dict(self.cursor)
        jobs.renew(job, self.owner)

    def _progress(self, session: Session, **changes: Any) -> None:
        job = jobs.require(session, self.job_id)
        job.progress = {**(job.progress or {}), **changes}

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(rematch_status(self.context, self.job_id))

    def _finish(self, state: JobState, error: str | None, event: str | None) -> RematchStatus:
        with transaction(self.context.sessions) as session:
            job = jobs.require(session, self.job_id)
            if job.state is JobState.RUNNING or job.lease_owner == self.owner:
                jobs.release(job, state, error)
                if event is not None:
                    session.add(
                        AuditEvent(
                            **event_row(
                                action=AuditAction.EXECUTE,
                                outcome=0 if state is JobState.DONE else 4,
                                interaction=event,
                                agent=job.created_by,
                                agent_kind=AgentKind.USER,
                                source_address=job.params.get("source_address"),
                                entity=f"BulkJob/{job.id}",
                                detail={
                                    "job": job.id,
                                    "version": job.params.get("version"),
                                    "summary": (job.progress or {}).get("summary"),
                                },
                            )
                        )
                    )
            return status_of(job)

    def _registry_batch(self) -> Any:
        """A write transaction holding the whole registry (see the module notes)."""
        return _HeldRegistry(self.context)

    # -------------------------------------------------------------- pending

    def _pending(self) -> None:
        context = self.context
        with self._registry_batch() as session:
            state = session.get(RulesState, STATE_ID)
            if state is None:
                state = RulesState(id=STATE_ID, generation=context.generation, layout=None)
                session.add(state)
            if state.active_version is None:
                state.active_version = rules_store.configuration_version(session, context).id
            before = layout_from_json(state.layout) or tuple(context.matcher.extractor.layout)
            spec = version_spec(session, context.settings, self.version, ())
            coming = spec.build()
            layout = list(before) + [k for k in coming.extractor.layout if k not in before]
            same_keys = _describe(context.matcher) == _describe(coming)
            state.pending_version = self.version
            state.layout = layout_to_json(layout)
            state.generation += 1
            state.updated_at = jobs.now()
            self._save(
                session,
                phase="convert",
                last_id=None,
                pending_at=jobs.now().isoformat(),
                grew=len(layout) > len(before),
                same_keys=same_keys,
            )
        context.refresh_rules()
        time.sleep(self.reload_wait)  # every process follows within a second

    # -------------------------------------------------------------- convert

    def _convert_records(self, session: Session, rows: list[Any]) -> None:
        """Give records the features (when the layout grew) and keys of the rules in force
        and pending."""
        matcher = self.context.matcher
        grew = bool(self.cursor.get("grew"))
        keys = []
        features_rows = []
        for record_id, resource, features in rows:
            if grew or len(features) < matcher.extractor.slot_count:
                features = matcher.extractor.extract(resource)
                features_rows.append({"record": record_id, "new_features": features})
            keys.append((record_id, key_hashes(matcher.blocker.keys(features))))
        if features_rows:
            session.connection().execute(UPDATE_FEATURES, features_rows)
        DatabaseBlockingIndex(session).add_many(keys)

    def _convert(self) -> None:
        self._follow()
        if not self.cursor.get("grew") and self.cursor.get("same_keys"):
            with transaction(self.context.sessions) as session:
                self._save(session, phase="switch")
            return
        while True:
            self._check("convert")
            with self._registry_batch() as session:
                query = select(SourceRecord.id, SourceRecord.resource, SourceRecord.features)
                last = self.cursor.get("last_id")
                if last is not None:
                    query = query.where(SourceRecord.id > last)
                rows = list(session.execute(query.order_by(SourceRecord.id).limit(BATCH)))
                if not rows:
                    self._save(session, phase="switch")
                    return
                self._convert_records(session, rows)
                self._save(session, last_id=rows[-1][0])
                self._progress(session, converted=self._count("converted") + len(rows))

    def _count(self, name: str) -> int:
        return int(self._job(lambda job: (job.progress or {}).get(name, 0)))

    def _follow(self) -> None:
        """Rebuild this process's matcher if the rules state moved (another process, or a
        restart of this job)."""
        self.context.refresh_rules()

    # -------------------------------------------------------------- switch

    def _switch(self) -> None:
        context = self.context
        self._follow()
        with self._registry_batch() as session:
            state = session.get(RulesState, STATE_ID)
            if state is None or state.pending_version != self.version:
                if state is not None and state.active_version == self.version:
                    self._save(session, phase="plan", snapshot_at=jobs.now().isoformat())
                    return
                raise JobError(409, "the rules being put in force changed under this job")
            since = _parse_time(self.cursor.get("pending_at")) - SAFETY
            rows = list(
                session.execute(
                    select(SourceRecord.id, SourceRecord.resource, SourceRecord.features).where(
                        SourceRecord.last_updated >= since
                    )
                )
            )
            self._convert_records(session, rows)
            previous = state.active_version
            state.active_version = self.version
            state.pending_version = None
            layout = layout_from_json(state.layout)
            switched = version_spec(session, context.settings, self.version, layout).build()
            state.key_plan = switched.blocker.signature()  # the keys records now hold
            state.generation += 1
            state.updated_at = jobs.now()
            session.add(
                RulesActivation(
                    version_id=self.version,
                    previous_version=previous,
                    activated_at=jobs.now(),
                    activated_by=self._job(lambda job: job.created_by),
                    job_id=self.job_id,
                )
            )
            self._save(session, phase="plan", snapshot_at=jobs.now().isoformat())
        context.refresh_rules()
        time.sleep(self.reload_wait)

    # -------------------------------------------------------------- plan

    def _plan(self) -> None:
        context = self.context
        dry_run = bool(self.params.get("dry_run"))
        with transaction(context.sessions) as session:
            session.execute(delete(RematchChange).where(RematchChange.job_id == self.job_id))
            spec = version_spec(session, context.settings, self.version, ())
            broken, resolved = human_decisions(session)
            issues = open_issues_by_record(session)
            snapshot = jobs.now()
        if self.params.get("engine") == ENGINE_SPARK:
            from clientregistry.registry.rematch_spark import replay_on_spark

            done = replay_on_spark(
                context.settings.database,
                spec,
                broken,
                resolved,
                master=self.params.get("spark_master"),
                block_limit=self.params.get("block_limit"),
                on_progress=self.replayed,
            )
        else:
            done = replay(
                context.settings.database, spec, broken, resolved, on_progress=self.replayed
            )
        changes, summary = plan_changes(done, issues)
        with transaction(context.sessions) as session:
            for start in range(0, len(changes), 5000):
                rows = [_change_row(self.job_id, c) for c in changes[start : start + 5000]]
                _INSERT_CHANGES.execute(session.connection(), rows)
            self._progress(session, summary=summary.to_json(), applied=0)
            if dry_run:
                self._save(session, phase="done")
            else:
                self._save(session, phase="apply", last_id=None, plan_at=snapshot.isoformat())

    # -------------------------------------------------------------- apply

    def _apply(self) -> None:
        applied = self._count("applied")
        while True:
            self._check("apply")
            with self._registry_batch() as session:
                query = select(RematchChange).where(RematchChange.job_id == self.job_id)
                last = self.cursor.get("last_id")
                if last is not None:
                    query = query.where(RematchChange.record_id > last)
                batch = list(session.scalars(query.order_by(RematchChange.record_id).limit(BATCH)))
                if not batch:
                    self._save(session, phase="finish")
                    return
                applied += _apply_changes(session, batch, self.job_id, self.actor)
                self._progress(session, applied=applied)
                self._save(session, last_id=batch[-1].record_id)

    # -------------------------------------------------------------- finish

    def _finish_counts(self) -> None:
        context = self.context
        self._follow()
        counts = TermCounts(context.matcher.extractor)
        last = None
        while True:  # read in pages: every record's features under the rules in force
            with transaction(context.sessions, write=False) as session:
                query = select(SourceRecord.id, SourceRecord.features).order_by(SourceRecord.id)
                if last is not None:
                    query = query.where(SourceRecord.id > last)
                rows = list(session.execute(query.limit(5000)))
            if not rows:
                break
            for _, features in rows:
                counts.add(features)
            last = rows[-1][0]
        with self._registry_batch() as session:
            _retire_emptied(session, self.job_id)
            if counts.slots:
                session.execute(delete(TermCount).where(TermCount.slot.in_(list(counts.slots))))
                bump_many(session, ((slot, value, n) for slot, value, n in counts.items() if n > 0))
                mark_counted(session, counts.slots)
            # Every process loads the term counts again (a new generation of the same rules).
            state = session.get(RulesState, STATE_ID)
            if state is not None:
                state.generation += 1
                state.updated_at = jobs.now()
            self._save(session, phase="catch-up", last_id=None)
        context.refresh_rules()

    # -------------------------------------------------------------- catch-up

    def _catch_up(self) -> None:
        since = _parse_time(self.cursor.get("plan_at"))
        while True:
            self._check("catch-up")
            with self._registry_batch() as session:
                last = self.cursor.get("last_id")
                changed = select(SourceRecord.id).where(
                    (SourceRecord.last_updated > since)
                    | SourceRecord.id.in_(
                        select(RematchChange.record_id).where(
                            RematchChange.job_id == self.job_id,
                            RematchChange.applied.is_(False),
                        )
                    )
                )
                if last is not None:
                    changed = changed.where(SourceRecord.id > last)
                ids = list(session.scalars(changed.order_by(SourceRecord.id).limit(100)))
                if not ids:
                    self._save(
                        session, phase="cleanup" if self._cleanup_needed() else "done", last_id=None
                    )
                    return
                editor = LinkEditor(session, self.context, self.actor)
                for record_id in ids:
                    record = editor.record(record_id)
                    if not record.human_adjudicated:
                        editor.rematch(record)
                editor.finish()
                self._save(session, last_id=ids[-1])

    def _cleanup_needed(self) -> bool:
        return not self.cursor.get("same_keys")

    # -------------------------------------------------------------- cleanup

    def _cleanup(self) -> None:
        while True:
            self._check("cleanup")
            with self._registry_batch() as session:
                query = select(SourceRecord.id, SourceRecord.features)
                last = self.cursor.get("last_id")
                if last is not None:
                    query = query.where(SourceRecord.id > last)
                rows = list(session.execute(query.order_by(SourceRecord.id).limit(BATCH)))
                if not rows:
                    self._save(session, phase="done")
                    return
                blocker = self.context.matcher.blocker
                session.execute(
                    delete(BlockingKey).where(
                        BlockingKey.record_id.in_([record_id for record_id, _ in rows])
                    )
                )
                DatabaseBlockingIndex(session).add_many(
                    (record_id, key_hashes(blocker.keys(features))) for record_id, features in rows
                )
                self._save(session, last_id=rows[-1][0])


class _Stopped(Exception):
    """The caller asked the job to stop (it continues when run again)."""


class _HeldRegistry:
    """A write transaction that holds the whole registry: PostgreSQL's registry lock (a
    submission waits for it), SQLite's single writer."""

    def __init__(self, context: RegistryContext) -> None:
        self._transaction = transaction(context.sessions)

    def __enter__(self) -> Session:
        session = self._transaction.__enter__()
        lock_registry(session)
        return session

    def __exit__(self, *exc: Any) -> None:
        self._transaction.__exit__(*exc)


def _parse_time(value: Any) -> Any:
    from datetime import datetime

    if not isinstance(value, str):
        return jobs.now()
    return datetime.fromisoformat(value)


def _describe(matcher: Matcher) -> list[str]:
    return list(matcher.blocker.describe())


def _change_row(job_id: int, change: Change) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "record_id": change.record_id,
        "version": change.version,
        "golden_before": change.golden_before,
        "golden_after": change.golden_after,
        "new_golden": change.new_golden,
        "status_before": change.status_before,
        "status_after": change.status_after,
        "score": change.score,
        "rule_set": change.rule_set,
        "issues": change.issues,
        "issues_before": change.issues_before,
        "applied": False,
    }


def _apply_changes(session: Session, batch: list[RematchChange], job_id: int, actor: str) -> int:
    """Make a batch of a plan's changes (those whose record is as the plan found it); how
    many were made."""
    now = jobs.now()
    ids = [change.record_id for change in batch]
    current = {
        record_id: (version, golden)
        for record_id, version, golden in session.execute(
            select(SourceRecord.id, SourceRecord.version, SourceRecord.golden_id).where(
                SourceRecord.id.in_(ids)
            )
        )
    }
    wanted = {c.golden_after for c in batch if c.new_golden}
    existing = (
        set(session.scalars(select(GoldenRecord.id).where(GoldenRecord.id.in_(sorted(wanted)))))
        if wanted
        else set()
    )
    unchanged = [
        change
        for change in batch
        if current.get(change.record_id) == (change.version, change.golden_before)
    ]  # (a record changed since the plan is matched again by the catch-up)
    new_goldens = []
    for change in unchanged:
        if change.new_golden and change.golden_after not in existing:
            existing.add(change.golden_after)
            new_goldens.append(
                {"id": change.golden_after, "version": 1, "last_updated": now, "active": True}
            )
    connection = session.connection()
    _INSERT_GOLDENS.execute(connection, new_goldens)  # before the records that point to them
    created = {row["id"] for row in new_goldens}
    touched: Counter[str] = Counter()
    links, issues, events, closed = [], [], [], []
    for change in unchanged:
        change.applied = True
        moves = change.golden_after != change.golden_before
        if moves and change.golden_after not in created:
            touched[change.golden_after] += 1
        if moves:
            if change.golden_before is not None:
                touched[change.golden_before] += 1
            links.append(
                {
                    "source_record_id": change.record_id,
                    "golden_id": change.golden_after,
                    "kind": LinkKind.AUTO,
                    "score": change.score,
                    "rule_set": change.rule_set,
                    "created_at": now,
                }
            )
        session.execute(
            update(SourceRecord)
            .where(SourceRecord.id == change.record_id)
            .values(golden_id=change.golden_after, match_status=change.status_after)
            .execution_options(synchronize_session=False)
        )
        closed += list(change.issues_before)
        issues += [
            {
                "record_id": change.record_id,
                "other_record_id": other,
                "kind": kind,
                "score": score,
                "status": IssueStatus.OPEN,
                "created_at": now,
            }
            for other, kind, score in change.issues
        ]
        events.append(
            event_row(
                action=AuditAction.UPDATE,
                outcome=0,
                interaction="rematch",
                agent=actor,
                agent_kind=AgentKind.SYSTEM,
                source_address=None,
                entity=f"Patient/{change.record_id}",
                detail={
                    "job": job_id,
                    "golden_before": change.golden_before,
                    "golden_after": change.golden_after,
                    "match": MatchStatus(change.status_after).value,
                    "score": change.score,
                    "rule": change.rule_set,
                },
                now=now,
            )
        )
    for golden, n in sorted(touched.items()):
        session.execute(
            update(GoldenRecord)
            .where(GoldenRecord.id == golden)
            .values(version=GoldenRecord.version + n, last_updated=now)
            .execution_options(synchronize_session=False)
        )
    if closed:
        session.execute(
            delete(MatchIssue)
            .where(MatchIssue.id.in_(closed), MatchIssue.status == IssueStatus.OPEN)
            .execution_options(synchronize_session=False)
        )
    _INSERT_ISSUES.execute(connection, issues)
    _INSERT_LINKS.execute(connection, links)
    insert_events(connection, events)
    session.flush()
    return len(unchanged)


def _retire_emptied(session: Session, job_id: int) -> None:
    """Retire the golden records the plan left without records, each pointing to the one
    that took most of them."""
    now = jobs.now()
    emptied = session.scalars(
        select(GoldenRecord.id).where(
            GoldenRecord.active.is_(True),
            ~select(SourceRecord.id).where(SourceRecord.golden_id == GoldenRecord.id).exists(),
            GoldenRecord.id.in_(
                select(RematchChange.golden_before).where(RematchChange.job_id == job_id)
            ),
        )
    ).all()
    for golden in emptied:
        successor = session.execute(
            select(RematchChange.golden_after, func.count())
            .where(RematchChange.job_id == job_id, RematchChange.golden_before == golden)
            .group_by(RematchChange.golden_after)
            .order_by(func.count().desc(), RematchChange.golden_after)
            .limit(1)
        ).first()
        session.execute(
            update(GoldenRecord)
            .where(GoldenRecord.id == golden)
            .values(
                active=False,
                replaced_by=None if successor is None else successor[0],
                version=GoldenRecord.version + 1,
                last_updated=now,
            )
            .execution_options(synchronize_session=False)
        )


# ----------------------------------------------------------------------------- the use cases


def run_rematch(
    context: RegistryContext,
    job_id: int,
    *,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    reload_wait: float = RELOAD_WAIT,
    replayed: Callable[[int], None] | None = None,
) -> RematchStatus:
    """Run (or continue) re-match ``job_id`` in this process."""
    return RematchRunner(
        context,
        job_id,
        progress=progress,
        should_stop=should_stop,
        reload_wait=reload_wait,
        replayed=replayed,
    ).run()


def rematch_status(context: RegistryContext, job_id: int) -> RematchStatus:
    with transaction(context.sessions, write=False) as session:
        return status_of(jobs.require(session, job_id, JobKind.REMATCH))


def list_rematches(
    context: RegistryContext, offset: int, limit: int
) -> tuple[int, list[RematchStatus]]:
    """Re-matches, newest first: the total and one page."""
    with transaction(context.sessions, write=False) as session:
        where = BulkJob.kind == JobKind.REMATCH
        total = session.scalar(select(func.count()).select_from(BulkJob).where(where))
        found = session.scalars(
            select(BulkJob).where(where).order_by(BulkJob.id.desc()).offset(offset).limit(limit)
        ).all()
        return int(total or 0), [status_of(job) for job in found]


def cancel_rematch(context: RegistryContext, actor: Actor, job_id: int) -> RematchStatus:
    """Cancel a re-match: a dry run at any time; a change of rules until it is switched on
    (then it must finish)."""
    with transaction(context.sessions) as session:
        job = jobs.require(session, job_id, JobKind.REMATCH)
        phase = (job.cursor or {}).get("phase")
        if not job.params.get("dry_run") and phase not in (None, "pending", "convert"):
            raise JobError(409, f"re-match {job_id} has put the new rules in force; it must finish")
        jobs.request_cancel(session, job)
        audit_in(
            session,
            actor,
            Reading("rematch-cancel", f"BulkJob/{job_id}", {"job": job_id}, AuditAction.EXECUTE),
        )
        return status_of(job)


REPORT_COLUMNS = (
    "record_id",
    "source_id",
    "change",
    "person_before",
    "person_after",
    "new_person",
    "status_before",
    "status_after",
    "score",
    "rule_set",
    "review_items_opened",
    "review_items_closed",
    "applied",
)
"""A re-match's report: a line per record that changes. ``change`` is ``moves`` (another
person), ``status`` or ``review`` (only its match status or review items change)."""


def report_lines(session: Session, job_id: int) -> Iterator[list[Any]]:
    rows = session.execute(
        select(RematchChange, SourceRecord.client_system)
        .outerjoin(SourceRecord, SourceRecord.id == RematchChange.record_id)
        .where(RematchChange.job_id == job_id)
        .order_by(RematchChange.record_id)
        .execution_options(yield_per=5000)
    )
    for change, system in rows:
        moves = change.golden_before != change.golden_after
        kind = (
            "moves"
            if moves
            else ("status" if change.status_before != change.status_after else "review")
        )
        yield [
            change.record_id,
            system,
            kind,
            change.golden_before,
            change.golden_after,
            "yes" if change.new_golden else "",
            MatchStatus(change.status_before).value,
            MatchStatus(change.status_after).value,
            "" if change.score is None else round(change.score, 4),
            change.rule_set or "",
            len(change.issues),
            len(change.issues_before),
            "yes" if change.applied else "",
        ]


def write_report(session: Session, job_id: int, out: TextIO) -> None:
    """The changes of a re-match as CSV."""
    jobs.require(session, job_id, JobKind.REMATCH)
    writer = csv.writer(out)
    writer.writerow(REPORT_COLUMNS)
    for line in report_lines(session, job_id):
        writer.writerow(["" if value is None else value for value in line])


def report_csv(context: RegistryContext, job_id: int, lines_per_chunk: int = 2000) -> Iterator[str]:
    """The changes of re-match ``job_id`` as pieces of CSV text, read in one transaction (the
    admin API and the web UI stream it)."""
    import io

    with transaction(context.sessions, write=False) as session:
        jobs.require(session, job_id, JobKind.REMATCH)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(REPORT_COLUMNS)
        for n, line in enumerate(report_lines(session, job_id), start=1):
            writer.writerow(["" if value is None else value for value in line])
            if n % lines_per_chunk == 0:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()


def versions_spec(context: RegistryContext, version_id: int) -> MatcherSpec:
    with transaction(context.sessions, write=False) as session:
        return version_spec(session, context.settings, version_id, ())


__all__ = [
    "PHASES",
    "Refused",
    "RematchRunner",
    "RematchStatus",
    "cancel_rematch",
    "feature_deltas",
    "list_rematches",
    "rematch_status",
    "run_rematch",
    "start_rematch",
    "write_report",
]
