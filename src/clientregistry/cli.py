"""The ``clientregistry`` command line: thin wrappers over the library.

User mistakes (a bad rules file, a malformed record, a missing file) end in a clear message
naming the file, line and field, and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import csv
import gc
import json
import logging
import sys
import time
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Protocol

import orjson
import typer
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from clientregistry.batch.dedupe import DedupeStats, Deduplicator
from clientregistry.batch.evaluate import evaluate_files
from clientregistry.batch.pipeline import prepare_in_background
from clientregistry.batch.readers import CsvMapping, ReadResult, SourceRecord, read_patients
from clientregistry.cli_audit import audit_app
from clientregistry.cli_backup import backup_app
from clientregistry.cli_bulk import register as register_bulk_commands
from clientregistry.cli_certs import certs_app
from clientregistry.cli_common import BlockLimitOption, err, fail, out
from clientregistry.cli_serve import serve_app
from clientregistry.cli_systems import systems_app
from clientregistry.cli_users import users_app
from clientregistry.config import DEFAULT_RECORD_ID_SYSTEMS
from clientregistry.errors import ClientRegistryError, ConfigError, InvalidRecord
from clientregistry.matching.blocking import DEFAULT_BLOCK_LIMIT
from clientregistry.matching.matcher import Matcher, PreparedRecord
from clientregistry.matching.rules import DecisionRules, default_rules, load_rules

app = typer.Typer(
    help="An open client registry (master patient index) for FHIR R4, in the spirit of OpenCR.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
rules_app = typer.Typer(help="Check and inspect decision-rules files.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")
app.add_typer(certs_app, name="certs")
app.add_typer(users_app, name="users")
register_bulk_commands(app)  # import, export, rematch
app.add_typer(systems_app, name="systems")
app.add_typer(serve_app)  # init, serve, migrate
app.add_typer(backup_app)  # backup, restore
app.add_typer(audit_app, name="audit")

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="The registry's data directory (default: CR_DATA_DIR or ./data)."
    ),
]


def _data_dir(value: Path | None) -> Path:
    from clientregistry.settings import default_data_dir

    return value if value is not None else default_data_dir()


def _settings(data_dir: Path | None) -> Any:
    from clientregistry.settings import load_settings

    try:
        return load_settings(_data_dir(data_dir))
    except ConfigError as error:
        err.print(f"[bold red]error:[/] {error.source}")
        for problem in error.problems:
            err.print(f"  - {problem}", highlight=False, markup=False)
        raise typer.Exit(2) from None


RulesOption = Annotated[
    Path | None,
    typer.Option(
        "--rules", "-r", help="Decision-rules JSON (OpenCR format). Default: the built-in rules."
    ),
]
RecordIdOption = Annotated[
    list[str] | None,
    typer.Option(
        "--record-id-system",
        help="Identifier system holding record ids, never compared (repeatable). "
        "Default: the configured internal-id systems.",
    ),
]


class OnError(StrEnum):
    skip = "skip"
    stop = "stop"


class Engine(StrEnum):
    local = "local"
    spark = "spark"


class _Summarised(Protocol):
    """What the summary of a run reads (a Deduplicator, or a Spark run)."""

    @property
    def stats(self) -> DedupeStats: ...

    @property
    def matcher(self) -> Matcher: ...


def _where(path: Path, error: InvalidRecord) -> str:
    """``FILE:LINE: message`` (or ``FILE: message`` where there is no line)."""
    line = f":{error.line}" if error.line is not None else ""
    return f"{path}{line}: {error.message}"


def _load_rules(path: Path | None) -> DecisionRules:
    try:
        rules = default_rules() if path is None else load_rules(path)
    except ConfigError as error:
        err.print(f"[bold red]error:[/] {error.source}: the decision rules are not valid")
        for problem in error.problems:
            err.print(f"  - {problem}", highlight=False, markup=False)
        raise typer.Exit(2) from None
    for warning in rules.warnings:
        err.print(f"[yellow]warning:[/] {rules.source}: {warning}", highlight=False)
    return rules


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False, show_time=False)],
        force=True,
    )


def _read_single(path: Path) -> dict[str, Any]:
    try:
        document = orjson.loads(path.read_bytes())
    except OSError as error:
        raise fail(f"{path}: cannot read: {error.strerror}") from None
    except orjson.JSONDecodeError as error:
        raise fail(f"{path}: not JSON: {error}") from None
    if not isinstance(document, dict) or document.get("resourceType") != "Patient":
        kind = document.get("resourceType") if isinstance(document, dict) else type(document)
        raise fail(f"{path}: expected a FHIR Patient, found resourceType {kind!r}")
    return document


@app.command()
def compare(
    a: Annotated[Path, typer.Argument(help="First Patient (FHIR JSON).")],
    b: Annotated[Path, typer.Argument(help="Second Patient (FHIR JSON).")],
    rules_path: RulesOption = None,
    record_id_system: RecordIdOption = None,
) -> None:
    """Compare two Patients and explain, field by field, why they match or not (JSON)."""
    rules = _load_rules(rules_path)
    systems = record_id_system if record_id_system is not None else DEFAULT_RECORD_ID_SYSTEMS
    matcher = Matcher(rules, record_id_systems=systems)
    left = matcher.extractor.extract(_read_single(a))
    right = matcher.extractor.extract(_read_single(b))
    results = matcher.scorer.explain(left, right)
    best = matcher.scorer.best(results)
    report = {
        "score": None if best is None else round(best.score, 4),
        "decision": "none" if best is None else best.decision,
        "rule_set": None if best is None else best.name,
        "rule_sets": [r.to_json() for r in results],
    }
    print(json.dumps(report, indent=2, ensure_ascii=False))


def _count_lines(path: Path) -> int | None:
    if path.suffix.lower() == ".json":
        return None
    with path.open("rb") as fh:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    return max(lines - 1, 1) if path.suffix.lower() == ".csv" else lines


def _records(
    path: Path, mapping: CsvMapping, on_error: OnError, skipped: list[InvalidRecord]
) -> Iterator[SourceRecord]:
    results: Iterator[ReadResult] = read_patients(path, mapping)
    for result in results:
        if isinstance(result, InvalidRecord):
            if on_error is OnError.stop:
                raise fail(_where(path, result), code=1)
            skipped.append(result)
            continue
        yield result


def _progress(total: int | None) -> Progress:
    return Progress(
        TextColumn("[bold]dedupe"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} rec/s"),
        TimeRemainingColumn(),
        console=err,
        disable=not err.is_terminal,
        transient=True,
    )


@app.command()
def dedupe(
    input_path: Annotated[
        Path,
        typer.Argument(metavar="INPUT", help="Patients: NDJSON, a FHIR Bundle (.json) or CSV."),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Clusters CSV: patient_id,golden_id.")
    ],
    rules_path: RulesOption = None,
    train: Annotated[
        bool, typer.Option("--train", help="Estimate m and u from INPUT before matching.")
    ] = False,
    record_id_system: RecordIdOption = None,
    on_error: Annotated[
        OnError, typer.Option("--on-error", help="On a bad record: skip it (listed) or stop.")
    ] = OnError.skip,
    column: Annotated[
        list[str] | None,
        typer.Option(
            "--column",
            help="CSV only: ELEMENT=COLUMN (elements: id, given, family, gender, birth_date, "
            "phone, identifier:SYSTEM). Defaults fit OpenCR's benchmark CSV.",
        ),
    ] = None,
    candidate_limit: Annotated[
        int, typer.Option("--candidate-limit", min=1, help="Most candidates scored per record.")
    ] = 200,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
    engine: Annotated[
        Engine,
        typer.Option(
            "--engine",
            help="local: this machine; spark: Apache Spark (needs clientregistry[spark]; "
            "INPUT and OUTPUT may also be .parquet).",
        ),
    ] = Engine.local,
    spark_master: Annotated[
        str | None,
        typer.Option(
            "--spark-master",
            help="With --engine spark: the master URL, e.g. spark://HOST:7077 (default local[*]).",
        ),
    ] = None,
    block_limit: BlockLimitOption = None,
) -> None:
    """Find the records of one person in a file of Patients; write clusters and potential matches.

    Records are processed in input order, each matched against those before it, exactly as the
    registry receives them. Potential matches and conflicts go to CLUSTERS.potential.csv.
    """
    _setup_logging(verbose)
    if not (input_path.is_file() or (engine is Engine.spark and input_path.is_dir())):
        raise fail(f"{input_path}: no such file")
    try:
        mapping = CsvMapping().with_overrides(column or [])
    except ValueError as error:
        raise fail(str(error)) from None
    rules = _load_rules(rules_path)
    systems = record_id_system if record_id_system is not None else DEFAULT_RECORD_ID_SYSTEMS
    if engine is Engine.spark:
        from clientregistry.cli_spark import dedupe_with_spark

        run = dedupe_with_spark(
            input_path,
            output,
            rules,
            systems,
            candidate_limit,
            mapping,
            spark_master,
            train,
            stop=on_error is OnError.stop,
            block_limit=block_limit,
        )
        if run.skipped:
            _write_skipped(output, run.skipped)
        _summary(run, output, run.potential_path, run.skipped)
        return
    if block_limit is not None:
        raise fail(
            "--block-limit is for --engine spark; this machine's engine already reads at "
            f"most the newest {DEFAULT_BLOCK_LIMIT} records of a block"
        )
    matcher = Matcher(rules, record_id_systems=systems, candidate_limit=candidate_limit)
    skipped: list[InvalidRecord] = []
    total = _count_lines(input_path)
    try:
        if train:
            dedup = _dedupe_trained(matcher, input_path, mapping, on_error, skipped)
        else:
            dedup = _dedupe_streaming(
                matcher, input_path, mapping, rules_path, on_error, skipped, total
            )
    except OSError as error:
        raise fail(f"{input_path}: {error}") from None
    dedup.stats.skipped = len(skipped)
    dedup.stats.finished = time.perf_counter()
    potential_path = dedup.write(output)
    if skipped:
        _write_skipped(output, skipped)
    _summary(dedup, output, potential_path, skipped)


def _dedupe_streaming(
    matcher: Matcher,
    input_path: Path,
    mapping: CsvMapping,
    rules_path: Path | None,
    on_error: OnError,
    skipped: list[InvalidRecord],
    total: int | None,
) -> Deduplicator:
    """Match records as a worker process reads and prepares them (see batch.pipeline)."""
    dedup = Deduplicator(matcher)
    systems = sorted(matcher.extractor.record_id_systems)
    gc.disable()  # the loop makes no reference cycles; collections only cost time here
    records = prepare_in_background(
        input_path, mapping, rules_path, systems, matcher.candidate_limit
    )
    with _progress(total) as progress:
        task = progress.add_task("dedupe", total=total, rate="-")
        for item in records:
            if isinstance(item, InvalidRecord):
                if on_error is OnError.stop:
                    raise fail(_where(input_path, item), 1)
                skipped.append(item)
                continue
            try:
                dedup.add_prepared(item.record_id, item.prepared)
            except InvalidRecord as error:
                located = InvalidRecord(
                    error.message if item.entry is None else f"{item.where}: {error.message}",
                    line=item.line,
                    record_id=item.record_id,
                )
                if on_error is OnError.stop:
                    raise fail(_where(input_path, located), 1) from None
                skipped.append(located)
                continue
            if dedup.stats.records % 1000 == 0:
                rate = f"{dedup.stats.records_per_second:,.0f}"
                progress.update(task, completed=dedup.stats.records, rate=rate)
    gc.enable()
    return dedup


def _dedupe_trained(
    matcher: Matcher,
    input_path: Path,
    mapping: CsvMapping,
    on_error: OnError,
    skipped: list[InvalidRecord],
) -> Deduplicator:
    from clientregistry.matching.training import train

    records: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for record in _records(input_path, mapping, on_error, skipped):
        if record.record_id in seen:
            error = InvalidRecord(f"duplicate Patient id {record.record_id!r}", line=record.line)
            if on_error is OnError.stop:
                raise fail(_where(input_path, error), 1)
            skipped.append(error)
            continue
        seen.add(record.record_id)
        records.append((record.record_id, matcher.extractor.extract(record.resource)))
    try:
        result = train(matcher, [features for _, features in records])
    except ValueError as error:
        raise fail(f"cannot train on {input_path}: {error}") from None
    err.print(
        f"trained: u from {result.random_pairs:,} random pairs, m by EM over "
        f"{result.candidate_pairs:,} pairs in {len(result.sessions)} sessions"
    )
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    trained = Matcher(
        result.rules,
        record_id_systems=matcher.extractor.record_id_systems,
        candidate_limit=matcher.candidate_limit,
    )
    dedup = Deduplicator(trained)
    for record_id, features in records:
        prepared = PreparedRecord(features, tuple(trained.blocker.keys(features)))
        dedup.add_prepared(record_id, prepared)
    return dedup


def _write_skipped(output: Path, skipped: list[InvalidRecord]) -> None:
    path = output.with_name(f"{output.stem}.skipped.csv")
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["line", "patient_id", "reason"])
        for error in skipped:
            writer.writerow([error.line or "", error.record_id or "", error.message])


def _summary(
    dedup: _Summarised, output: Path, potential_path: Path, skipped: list[InvalidRecord]
) -> None:
    stats = dedup.stats
    err.print(
        f"[bold]{stats.records:,}[/] records, [bold]{stats.clusters:,}[/] clusters, "
        f"{stats.auto_links:,} auto links, {stats.potential_matches:,} potential matches, "
        f"{stats.conflicts:,} conflicts ({stats.merges:,} joined clusters), "
        f"{stats.records_per_second:,.0f} records/s "
        f"({stats.seconds:.1f} s)"
    )
    if stats.capped_queries:
        err.print(
            f"[yellow]warning:[/] {stats.capped_queries:,} records had more candidates than "
            f"--candidate-limit {dedup.matcher.candidate_limit}; only the best were scored"
        )
    if skipped:
        skipped_path = output.with_name(f"{output.stem}.skipped.csv")
        err.print(f"[yellow]skipped {len(skipped):,} records[/] (listed in {skipped_path}):")
        for error in skipped[:10]:
            where = f"line {error.line}: " if error.line is not None else ""
            err.print(f"  {where}{error.message}", highlight=False, markup=False)
        if len(skipped) > 10:
            err.print(f"  ... and {len(skipped) - 10:,} more")
    err.print(f"clusters: {output}\npotential matches and conflicts: {potential_path}")


@app.command()
def evaluate(
    clusters: Annotated[Path, typer.Argument(help="Clusters CSV: patient_id,golden_id.")],
    truth: Annotated[Path, typer.Option("--truth", help="Truth CSV: patient_id,entity_id.")],
) -> None:
    """Pairwise precision, recall and F1 of clusters against the truth (JSON)."""
    try:
        scores = evaluate_files(clusters, truth)
    except ClientRegistryError as error:
        raise fail(str(error)) from None
    print(json.dumps(scores.to_json(), indent=2))
    if scores.missing_from_truth:
        err.print(f"[yellow]warning:[/] {scores.missing_from_truth} records are not in the truth")


@app.command("train")
def train_command(
    input_path: Annotated[
        Path | None,
        typer.Argument(
            metavar="[INPUT]", help="Patients: NDJSON, a FHIR Bundle or CSV (or --data-dir)."
        ),
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write trained rules.")
    ] = Path("trained-rules.json"),
    rules_path: RulesOption = None,
    record_id_system: RecordIdOption = None,
    on_error: Annotated[OnError, typer.Option("--on-error")] = OnError.skip,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Train from a registry's own records, under its rules in force (instead of "
            "INPUT).",
        ),
    ] = None,
) -> None:
    """Estimate m and u from the data: u from random pairs, m by EM (Splink's method).

    The trained rules are checked before they are written: a field whose estimate is not
    plausible keeps its values, and a model whose automatic links differ too much from the
    given rules' is not used (the given rules are written, with a warning). Rules trained
    from a registry are put in force with `clientregistry rematch --rules FILE`, or named in
    its configuration (`[matching] rules`) before its first record."""
    from clientregistry.matching.training import train

    skipped: list[InvalidRecord] = []
    if (input_path is None) == (data_dir is None):
        raise fail("give the records to train on: INPUT, or --data-dir DIR (a registry)")
    if data_dir is not None:
        if rules_path is not None or record_id_system is not None:
            raise fail(
                "--data-dir trains the registry's rules in force: no --rules / --record-id-system"
            )
        matcher, features = _registry_features(data_dir)
        where = str(data_dir)
    else:
        assert input_path is not None
        rules = _load_rules(rules_path)
        if not any(rs.probabilistic for rs in rules.rule_sets):
            raise fail(f"{rules.source}: no probabilistic rule set to train")
        systems = record_id_system if record_id_system is not None else DEFAULT_RECORD_ID_SYSTEMS
        matcher = Matcher(rules, record_id_systems=systems)
        try:
            features = [
                matcher.extractor.extract(record.resource)
                for record in _records(input_path, CsvMapping(), on_error, skipped)
            ]
        except OSError as error:
            raise fail(f"{input_path}: {error}") from None
        where = str(input_path)
    if not any(rs.probabilistic for rs in matcher.rules.rule_sets):
        raise fail(f"{matcher.rules.source}: no probabilistic rule set to train")
    try:
        result = train(matcher, features)
    except ValueError as error:
        raise fail(f"cannot train on {where}: {error}") from None
    output.write_text(json.dumps(result.rules.to_json(), indent=2) + "\n", encoding="utf-8")
    table = Table(title=f"m and u learned from {len(features):,} records")
    for name in ("rule set", "field", "level", "m", "u", "weight log10(m/u)"):
        table.add_column(name, justify="right" if name in ("m", "u") else "left")
    for row in result.estimates:
        table.add_row(
            str(row.rule_set + 1),
            row.field,
            row.level,
            f"{row.m:.4f}",
            f"{row.u:.6f}",
            f"{row.weight:+.2f}",
        )
    out.print(table)
    if result.thresholds:
        thresholds = Table(
            title="thresholds, as the learned model sees them"
            + (" (model not used)" if result.kept_given else "")
        )
        for name in (
            "rule set",
            "threshold",
            "score",
            "match probability at it",
            "est. precision at or above",
            "est. recall at or above",
        ):
            thresholds.add_column(name, justify="left" if name == "threshold" else "right")
        for t in result.thresholds:
            thresholds.add_row(
                str(t.rule_set + 1),
                t.name,
                f"{t.score:g}",
                f"{t.probability:.3f}",
                f"{t.precision:.3f}",
                f"{t.recall:.3f}",
            )
        out.print(thresholds)
    err.print(
        f"probability two random records match {result.match_probability:.3g}; "
        f"{result.candidate_pairs:,} pairs in {len(result.sessions)} EM sessions, "
        f"{result.random_pairs:,} random pairs{'' if result.converged else ' (not converged)'}"
    )
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if skipped:
        err.print(f"[yellow]skipped {len(skipped)} bad records[/]")
    kept = " (the rules given, unchanged)" if result.kept_given else ""
    err.print(f"trained rules written to {output}{kept}")


def _registry_features(data_dir: Path) -> tuple[Matcher, list[Any]]:
    """The matcher of a registry's rules in force and its records' stored features."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from clientregistry.registry.rules_in_force import read_in_force
    from clientregistry.settings import load_settings
    from clientregistry.store.db import create_engine_for
    from clientregistry.store.models import SourceRecord

    try:
        settings = load_settings(data_dir)
    except ConfigError as error:
        raise fail(str(error)) from None
    engine = create_engine_for(settings.database)
    try:
        with engine.connect() as connection, Session(bind=connection) as session:
            spec = read_in_force(session, settings).active
            features = list(
                session.scalars(
                    select(SourceRecord.features)
                    .where(SourceRecord.replaced_by.is_(None))
                    .order_by(SourceRecord.id)
                )
            )
    except ClientRegistryError as error:
        raise fail(str(error)) from None
    finally:
        engine.dispose()
    return spec.build(), features


@rules_app.command("check")
def rules_check(
    path: Annotated[Path, typer.Argument(help="Decision-rules JSON to check.")],
) -> None:
    """Check a decision-rules file and describe how it will match and block."""
    from clientregistry.registry.rules_store import check_rules

    try:
        content = path.read_bytes()
    except OSError as error:
        raise fail(f"{path}: cannot read file: {error.strerror}") from None
    checked = check_rules(content, str(path))  # the same check as the admin API's
    lines = checked.messages()
    if not checked.ok:
        err.print(f"[bold red]error:[/] {lines[0]}", highlight=False)
        for line in lines[1:]:
            err.print(line, highlight=False, markup=False)
        raise typer.Exit(2)
    for line in lines:
        if line.startswith("warning: "):
            err.print(f"[yellow]warning:[/]{line.removeprefix('warning:')}", highlight=False)
        else:
            out.print(line, highlight=False, markup=False)


@app.command()
def demo(
    output: Annotated[Path, typer.Option("--output", "-o")] = Path("out/demo-clusters.csv"),
) -> None:
    """Deduplicate the bundled demo patients and show the clusters."""
    source = Path(__file__).resolve().parent / "demo" / "patients.ndjson"
    if not source.is_file():
        raise fail(f"demo data missing: {source}")
    matcher = Matcher(default_rules(), record_id_systems=DEFAULT_RECORD_ID_SYSTEMS)
    dedup = Deduplicator(matcher)
    names: dict[str, str] = {}
    for result in read_patients(source):
        assert isinstance(result, SourceRecord), result
        dedup.add(result.record_id, result.resource, result.line)
        name = (result.resource.get("name") or [{}])[0]
        names[result.record_id] = f"{' '.join(name.get('given', []))} {name.get('family', '')}"
    dedup.stats.finished = time.perf_counter()
    potential_path = dedup.write(output)
    table = Table(title="demo: who is who")
    table.add_column("golden record")
    table.add_column("patient")
    table.add_column("name")
    for record_id, golden in sorted(dedup.golden_ids(), key=lambda row: row[1]):
        table.add_row(golden, record_id, names[record_id])
    out.print(table)
    _summary(dedup, output, potential_path, [])


def main() -> None:
    """Entry point of the ``clientregistry`` console script."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
