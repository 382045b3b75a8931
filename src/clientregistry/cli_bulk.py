"""``clientregistry import``, ``export`` and ``rematch``: the registry's bulk commands.

They work on the registry's database directly (``--data-dir``), beside a running server or
without one, each as a job kept in the database: an import killed at any moment continues
when the same command runs again. On a terminal a progress bar shows records, records per
second and the time left; a summary follows. Every change is audited with the
operating-system user as agent (``cli:<user>``).
"""

from __future__ import annotations

import getpass
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from clientregistry import cli_common

if TYPE_CHECKING:
    from clientregistry.registry.context import RegistryContext
    from clientregistry.registry.imports import ImportStatus
    from clientregistry.settings import Settings

# The database layer is imported inside the commands: `clientregistry` starts in a fraction
# of a second for every other command.

_out = cli_common.out
_err = cli_common.err

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="The registry's data directory (default: CR_DATA_DIR or ./data)."
    ),
]


class Engine(StrEnum):
    local = "local"
    spark = "spark"


def _require_spark() -> None:
    from clientregistry.spark.session import SparkUnavailable, require_pyspark

    try:
        require_pyspark()
    except SparkUnavailable as error:
        from rich.markup import escape

        raise _fail(escape(str(error))) from None


class OnError(StrEnum):
    skip = "skip"
    stop = "stop"


_fail = cli_common.fail


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name (a container without /etc/passwd entry)
        return "cli"


def _settings(data_dir: Path | None) -> Settings:
    from clientregistry.errors import ConfigError
    from clientregistry.settings import default_data_dir, load_settings

    try:
        return load_settings(data_dir if data_dir is not None else default_data_dir())
    except ConfigError as error:
        _err.print(f"[bold red]error:[/] {error.source}")
        for problem in error.problems:
            _err.print(f"  - {problem}", highlight=False, markup=False)
        raise typer.Exit(2) from None


def _open(data_dir: Path | None) -> RegistryContext:
    from clientregistry.errors import ClientRegistryError
    from clientregistry.registry.context import RegistryContext

    settings = _settings(data_dir)
    try:
        context = RegistryContext.open(settings, serving=True)
    except ClientRegistryError as error:
        raise _fail(str(error)) from None
    context.start()
    return context


class _RateProgress:
    """A Rich progress bar (records, records/s, time left) fed by a job's status."""

    def __init__(self, label: str, total: int | None, done: int) -> None:
        self.started = time.monotonic()
        self.done_at_start = done
        self.bar = Progress(
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} rec/s"),
            TimeRemainingColumn(),
            console=_err,
            disable=not _err.is_terminal,
            transient=True,
        )
        self.task = self.bar.add_task(label, total=total, completed=done, rate="-")

    def update(self, done: int, total: int | None) -> None:
        elapsed = time.monotonic() - self.started
        rate = (done - self.done_at_start) / elapsed if elapsed > 0 else 0.0
        self.bar.update(self.task, completed=done, total=total, rate=f"{rate:,.0f}")

    def rate(self, done: int) -> float:
        elapsed = time.monotonic() - self.started
        return (done - self.done_at_start) / elapsed if elapsed > 0 else 0.0


def import_command(
    input_path: Annotated[
        Path,
        typer.Argument(
            metavar="FILE", help="Patients: FHIR NDJSON, a FHIR Bundle (.json) or CSV (.csv)."
        ),
    ],
    system: Annotated[
        str | None,
        typer.Option(
            "--system",
            help="The client system the records come from (as configured). Default: each "
            "record's client tag (a file exported by this registry).",
        ),
    ] = None,
    data_dir: DataDirOption = None,
    column: Annotated[
        list[str] | None,
        typer.Option(
            "--column",
            help="CSV only: ELEMENT=COLUMN (elements: id, given, family, gender, birth_date, "
            "phone, identifier:SYSTEM), as for dedupe.",
        ),
    ] = None,
    on_error: Annotated[
        OnError, typer.Option("--on-error", help="On a bad row: skip it (reported) or stop.")
    ] = OnError.skip,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="Write the report here: .csv, or .xlsx (with a chart)."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=5000, help="Rows per transaction.")
    ] = 500,
    again: Annotated[
        bool,
        typer.Option("--again", help="Import a file again although it was imported already."),
    ] = False,
) -> None:
    """Load a file of Patients into the registry, as the client system submits them.

    Each record goes through the same checks, matching, links and audit as POST
    /fhir/Patient, in batched transactions. Stopped at any moment (Ctrl-C, kill, power loss),
    the same command continues where it stopped.
    """
    from clientregistry.registry import imports
    from clientregistry.registry.jobs import JobError
    from clientregistry.store.enums import JobOrigin, JobState

    if report is not None and report.suffix.lower() not in (".csv", ".xlsx"):
        raise _fail(f"{report}: the report is .csv or .xlsx")
    if not input_path.is_file():
        raise _fail(f"{input_path}: no such file")
    options = imports.ImportOptions(
        system=system,
        columns=tuple(column or ()),
        on_error=on_error.value,
        batch_size=batch_size,
    )
    context = _open(data_dir)
    try:
        try:
            started = imports.start_import(
                context,
                input_path.resolve(),
                options,
                origin=JobOrigin.CLI,
                actor=_actor(),
                name=input_path.name,
                again=again,
            )
        except JobError as error:
            raise _fail(error.message) from None
        status = imports.import_status(context, started.job_id)
        if started.already_done:
            _err.print(
                f"{input_path} was imported already (import {started.job_id}, "
                f"{status.finished_at:%Y-%m-%d %H:%M}); --again imports it again"
            )
        else:
            if started.resumed:
                _err.print(f"continuing import {started.job_id} after row {status.counts.rows:,}")
            status = _run_import(context, started.job_id, status)
        _print_summary(status)
        if report is not None:
            _write_report(context, started.job_id, report)
        if status.state is JobState.INTERRUPTED:
            _err.print("interrupted: run the same command again to continue")
            raise typer.Exit(130)
        if status.state is not JobState.DONE:
            raise typer.Exit(1)
    finally:
        context.close()


def _run_import(context: RegistryContext, job_id: int, status: ImportStatus) -> ImportStatus:
    from clientregistry.registry import imports

    bar = _RateProgress("import", status.total, status.counts.rows)
    with bar.bar:

        def progress(current: ImportStatus) -> None:
            bar.update(current.counts.rows, current.total)

        final = imports.run_import(context, job_id, progress=progress)
    rate = bar.rate(final.counts.rows)
    if final.counts.rows > status.counts.rows:
        _err.print(
            f"{final.counts.rows - status.counts.rows:,} rows in "
            f"{time.monotonic() - bar.started:,.1f} s ({rate:,.0f} rows/s)"
        )
    return final


def _print_summary(status: ImportStatus) -> None:
    counts = status.counts
    _err.print(
        f"import {status.id} [bold]{status.state.value}[/]: {counts.rows:,} rows, "
        f"{counts.created:,} records created, {counts.updated:,} updated; "
        f"[bold]{counts.new_persons:,}[/] new persons, {counts.linked:,} auto links, "
        f"{counts.potential:,} with potential matches, {counts.conflicts:,} with conflicts, "
        f"{counts.errors:,} errors" + (f", {counts.skipped:,} skipped" if counts.skipped else "")
    )
    if status.error:
        _err.print(f"[bold red]error:[/] {status.error}", highlight=False, markup=False)


def _write_report(context: RegistryContext, job_id: int, path: Path) -> None:
    from clientregistry.registry import import_report
    from clientregistry.store.db import transaction

    path.parent.mkdir(parents=True, exist_ok=True)
    with transaction(context.sessions, write=False) as session:
        if path.suffix.lower() == ".xlsx":
            import_report.write_xlsx(session, job_id, path)
        else:
            with path.open("w", newline="", encoding="utf-8") as fh:
                import_report.write_csv(session, job_id, fh)
    _err.print(f"report: {path}")


def _cli_actor() -> Any:
    from clientregistry.registry.actor import Actor
    from clientregistry.store.enums import Role

    return Actor(_actor(), Role.ADMIN)


def rematch_command(
    rules: Annotated[
        Path | None,
        typer.Option("--rules", "-r", help="The new decision rules (JSON), checked and stored."),
    ] = None,
    version: Annotated[
        int | None,
        typer.Option("--version", help="A rules version stored before (instead of --rules)."),
    ] = None,
    data_dir: DataDirOption = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Report what would change; change nothing."),
    ] = False,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="CSV of every change (default: rematch-<job>.csv)."),
    ] = None,
    engine: Annotated[
        Engine,
        typer.Option(
            "--engine",
            help="Match on this machine (local), or on Apache Spark (spark: dry runs only; "
            "needs clientregistry[spark]).",
        ),
    ] = Engine.local,
    spark_master: Annotated[
        str | None,
        typer.Option(
            "--spark-master",
            help="With --engine spark: the cluster's master URL (default: local[*], this "
            "machine's cores).",
        ),
    ] = None,
    block_limit: cli_common.BlockLimitOption = None,
) -> None:
    """Match every record again under new decision rules: report the difference (persons
    merged and split, records moving, review items), or put the rules in force.

    Without --dry-run the change is made in batches while a server keeps serving (it follows
    the new rules within a second of their switch); stopped at any moment, the same command
    continues it. Decisions people made (breaks, joins, resolved review items) stay.
    """
    from clientregistry.registry import rematch, rules_store
    from clientregistry.registry.actor import Refused
    from clientregistry.store.db import transaction
    from clientregistry.store.enums import JobOrigin, JobState

    if (rules is None) == (version is None):
        raise _fail("give the new rules: --rules FILE, or --version N (a stored version)")
    if engine is Engine.spark:
        if not dry_run:
            raise _fail(
                "--engine spark makes dry runs only (--dry-run): apply the rules without it"
            )
        _require_spark()
    elif spark_master is not None or block_limit is not None:
        option = "--spark-master" if spark_master is not None else "--block-limit"
        raise _fail(f"{option} goes with --engine spark")
    if rules is not None and not rules.is_file():
        raise _fail(f"{rules}: no such file")
    context = _open(data_dir)
    actor = _cli_actor()
    try:
        try:
            if rules is not None:
                checked = rules_store.check_rules(rules.read_bytes(), str(rules))
                if not checked.ok:
                    lines = checked.messages()
                    _err.print(f"[bold red]error:[/] {lines[0]}", highlight=False)
                    for line in lines[1:]:
                        _err.print(line, highlight=False, markup=False)
                    raise typer.Exit(2)
                for warning in checked.warnings:
                    _err.print(f"[yellow]warning:[/] {rules}: {warning}", highlight=False)
                version = rules_store.store_rules(context, actor, rules.read_bytes(), rules.name).id
            assert version is not None
            job_id = rematch.start_rematch(
                context,
                actor,
                version,
                dry_run=dry_run,
                origin=JobOrigin.CLI,
                engine=engine.value,
                spark_master=spark_master,
                block_limit=block_limit,
            )
        except Refused as error:
            raise _fail(error.message) from None
        _err.print(
            f"re-match {job_id}: rules version {version}"
            + (" (dry run)" if dry_run else ", to be put in force")
            + (f", on Spark ({spark_master or 'local[*]'})" if engine is Engine.spark else "")
        )
        status = _run_rematch(context, job_id)
        _print_rematch(status)
        path = report or Path(f"rematch-{job_id}.csv")
        with (
            transaction(context.sessions, write=False) as session,
            path.open("w", newline="", encoding="utf-8") as fh,
        ):
            rematch.write_report(session, job_id, fh)
        _err.print(f"changes: {path}")
        if status.state is JobState.INTERRUPTED:
            _err.print("interrupted: run the same command again to continue")
            raise typer.Exit(130)
        if status.state is not JobState.DONE:
            raise typer.Exit(1)
    finally:
        context.close()


def _run_rematch(context: RegistryContext, job_id: int) -> Any:
    from sqlalchemy import func, select

    from clientregistry.registry import rematch
    from clientregistry.store.models import SourceRecord

    with context.sessions() as session:
        total = int(session.scalar(select(func.count()).select_from(SourceRecord)) or 0)
    bar = _RateProgress("re-match", total, 0)
    with bar.bar:
        return rematch.run_rematch(
            context,
            job_id,
            replayed=lambda done: bar.update(done, total),
            progress=lambda status: bar.bar.update(
                bar.task, description=f"re-match ({status.phase})"
            ),
        )


def _print_rematch(status: Any) -> None:
    summary = status.summary
    _err.print(
        f"re-match {status.id} [bold]{status.state.value}[/]"
        + (" (dry run)" if status.dry_run else "")
        + f": {summary.records:,} records, {summary.records_moving:,} moving; persons "
        f"{summary.persons_before:,} -> {summary.persons_after:,} ({summary.persons_merged:,} "
        f"merged, {summary.persons_split:,} split, {summary.new_persons:,} new, "
        f"{summary.persons_retired:,} retired); review items {summary.review_items_opened:,} "
        f"opened, {summary.review_items_closed:,} closed; {summary.status_changes:,} "
        "match statuses change"
    )
    if not status.dry_run and status.state.value == "done":
        _err.print(f"{status.applied:,} changes made; the new rules are in force")
    if status.error:
        _err.print(f"[bold red]error:[/] {status.error}", highlight=False, markup=False)


def export_command(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The directory to write the files to.")
    ],
    data_dir: DataDirOption = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since", help="Only records changed at or after this instant (2026-01-31T00:00Z)."
        ),
    ] = None,
) -> None:
    """Export the registry's Patients as FHIR NDJSON (what GET /fhir/Patient/$export gives):
    Patient-source-N.ndjson (source records), Patient-golden-N.ndjson (golden records with
    their links) and manifest.json.

    Importing the source records into an empty registry (clientregistry import
    Patient-source-1.ndjson, each record as the system its client tag names) gives the same
    persons, as long as nobody decided anything by hand.
    """
    from datetime import UTC, datetime

    from clientregistry.registry.export import write_export

    moment = None
    if since is not None:
        try:
            moment = datetime.fromisoformat(since.replace("Z", "+00:00"))
        except ValueError:
            raise _fail(f"--since {since!r} is not an instant (2026-01-31T00:00:00Z)") from None
        if moment.tzinfo is None:
            raise _fail("--since needs a time zone (e.g. ...Z)")
        moment = moment.astimezone(UTC)
    if output.exists() and not output.is_dir():
        raise _fail(f"{output} is not a directory")
    context = _open(data_dir)
    try:
        bar = _RateProgress("export", None, 0)
        with bar.bar:
            manifest = write_export(
                context, output, since=moment, on_progress=lambda n: bar.update(n, None)
            )
    finally:
        context.close()
    for item in manifest.output:
        _err.print(f"{output / item.name}: {item.count:,} {item.kind} records")
    _err.print(f"manifest: {output / 'manifest.json'}")


def register(app: typer.Typer) -> None:
    """Add the bulk commands to the ``clientregistry`` command line."""
    app.command("import")(import_command)
    app.command("export")(export_command)
    app.command("rematch")(rematch_command)
