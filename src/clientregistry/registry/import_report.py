"""An import's report: one line per input row, as CSV, or as an XLSX workbook with a summary
sheet and a chart of outcomes.

OpenCR's CSV upload report is the anchor: per patient its CRUID (``OpenCR_UID``), the source
system and the patient's id there, and its matches. Here each row also says where it was in
the file (line, or entry of a Bundle), which record it made or updated, its outcome (the
record's match status, or why the row was not stored) and the score and rule set of the auto
match that linked it. Both are streamed from the import's rows in the database, so a report
of a million rows takes little memory (the workbook is written row by row, on disk).
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import xlsxwriter
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from clientregistry.registry import jobs
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.imports import ImportStatus, status_of
from clientregistry.store.db import transaction
from clientregistry.store.enums import JobKind, RowOutcome
from clientregistry.store.models import ImportRow, SourceRecord

COLUMNS = (
    "row",
    "line",
    "entry",
    "patient_id",
    "source_id",
    "record_id",
    "CRUID",
    "outcome",
    "action",
    "score",
    "rule_set",
    "potential_matches",
    "conflicts",
    "error",
)
"""The report's columns: ``patient_id`` is the row's own id (the Patient's ``id``, the CSV's
id column), ``source_id`` the submitting system (OpenCR's names), ``CRUID`` the golden
record, ``action`` ``created`` or ``updated``."""

CSV_MEDIA_TYPE = "text/csv"
XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

EXCEL_ROWS = 1_048_576
"""Rows of a worksheet (the header included)."""

OUTCOME_LABELS = {
    RowOutcome.NEW_PERSON: "new person",
    RowOutcome.LINKED: "linked (auto match)",
    RowOutcome.POTENTIAL: "potential match",
    RowOutcome.CONFLICT: "conflict",
    RowOutcome.ERROR: "error",
    RowOutcome.SKIPPED: "skipped",
}


def report_rows(
    session: Session,
    job_id: int,
    outcomes: Sequence[RowOutcome] = (),
    offset: int = 0,
    limit: int | None = None,
) -> Iterator[list[Any]]:
    """The report's lines of import ``job_id`` in input order (only those of ``outcomes``,
    when given; ``limit`` lines from ``offset``, when given)."""
    statement = (
        select(
            ImportRow.row,
            ImportRow.line,
            ImportRow.entry,
            ImportRow.input_id,
            SourceRecord.client_system,
            ImportRow.record_id,
            ImportRow.golden_id,
            ImportRow.outcome,
            ImportRow.created,
            ImportRow.score,
            ImportRow.rule_set,
            ImportRow.potential,
            ImportRow.conflicts,
            ImportRow.message,
        )
        .outerjoin(SourceRecord, SourceRecord.id == ImportRow.record_id)
        .where(ImportRow.job_id == job_id)
        .order_by(ImportRow.row)
    )
    if outcomes:
        statement = statement.where(ImportRow.outcome.in_(list(outcomes)))
    if offset or limit is not None:
        statement = statement.offset(offset).limit(limit)
    for row in session.execute(statement.execution_options(yield_per=5000)):
        (number, line, entry, input_id, system, record_id, golden, outcome) = row[:8]
        created, score, rule_set, potential, conflicts, message = row[8:]
        stored = record_id is not None
        yield [
            number,
            line,
            entry,
            input_id,
            system,
            record_id,
            golden,
            RowOutcome(outcome).value,
            ("created" if created else "updated") if stored else None,
            None if score is None else round(score, 4),
            rule_set,
            potential if stored else None,
            conflicts if stored else None,
            message,
        ]


def _job(session: Session, job_id: int) -> ImportStatus:
    return status_of(jobs.require(session, job_id, JobKind.IMPORT))


def write_csv(session: Session, job_id: int, out: TextIO) -> None:
    """The report as CSV (a header line, then one line per input row)."""
    _job(session, job_id)
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for line in report_rows(session, job_id):
        writer.writerow(["" if value is None else value for value in line])


def csv_chunks(session: Session, job_id: int, lines_per_chunk: int = 2000) -> Iterator[str]:
    """:func:`write_csv` as pieces of text (for a streamed HTTP response)."""
    import io

    _job(session, job_id)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for n, line in enumerate(report_rows(session, job_id), start=1):
        writer.writerow(["" if value is None else value for value in line])
        if n % lines_per_chunk == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def outcome_counts(session: Session, job_id: int) -> Counter[RowOutcome]:
    rows = session.execute(
        select(ImportRow.outcome, func.count())
        .where(ImportRow.job_id == job_id)
        .group_by(ImportRow.outcome)
    )
    return Counter({RowOutcome(outcome): int(n) for outcome, n in rows})


def write_xlsx(session: Session, job_id: int, path: Path) -> None:
    """The report as an XLSX workbook: a summary sheet with a chart of outcomes, every row
    (in sheets of at most a worksheet's rows), the rows to review and the errors."""
    status = _job(session, job_id)
    workbook = xlsxwriter.Workbook(str(path), {"constant_memory": True})
    try:
        bold = workbook.add_format({"bold": True})
        title = workbook.add_format({"bold": True, "font_size": 14})
        _summary_sheet(workbook, session, status, bold, title)
        _rows_sheets(workbook, "Rows", report_rows(session, job_id), bold)
        review = report_rows(session, job_id, outcomes=[RowOutcome.POTENTIAL, RowOutcome.CONFLICT])
        _rows_sheets(workbook, "To review", review, bold)
        errors = report_rows(session, job_id, outcomes=[RowOutcome.ERROR, RowOutcome.SKIPPED])
        _rows_sheets(workbook, "Errors", errors, bold)
    finally:
        workbook.close()


def _summary_sheet(
    workbook: Any, session: Session, status: ImportStatus, bold: Any, title: Any
) -> None:
    sheet = workbook.add_worksheet("Summary")
    sheet.set_column(0, 0, 28)
    sheet.set_column(1, 1, 40)
    sheet.write(0, 0, "Import summary", title)
    facts = [
        ("Import", status.id),
        ("File", status.file_name),
        ("Client system", status.system or "(each record's client tag)"),
        ("State", status.state.value),
        ("Started by", status.created_by),
        ("Started", str(status.created_at)),
        ("Finished", "" if status.finished_at is None else str(status.finished_at)),
    ]
    if status.error:
        facts.append(("Error", status.error))
    for n, (label, value) in enumerate(facts, start=2):
        sheet.write(n, 0, label, bold)
        sheet.write(n, 1, value)
    counts = status.counts
    totals = [
        ("Rows read", counts.rows),
        ("Records created", counts.created),
        ("Records updated", counts.updated),
        ("New persons", counts.new_persons),
        ("Linked by an auto match", counts.linked),
        ("With potential matches", counts.potential),
        ("With conflicts", counts.conflicts),
        ("Errors", counts.errors),
        ("Skipped", counts.skipped),
    ]
    top = len(facts) + 3
    sheet.write(top, 0, "Totals", bold)
    for n, (label, value) in enumerate(totals, start=top + 1):
        sheet.write(n, 0, label)
        sheet.write_number(n, 1, value)
    by_outcome = outcome_counts(session, status.id)
    first = top + len(totals) + 2
    sheet.write(first, 0, "Outcome", bold)
    sheet.write(first, 1, "Rows", bold)
    for n, outcome in enumerate(OUTCOME_LABELS, start=first + 1):
        sheet.write(n, 0, OUTCOME_LABELS[outcome])
        sheet.write_number(n, 1, by_outcome.get(outcome, 0))
    last = first + len(OUTCOME_LABELS)
    chart = workbook.add_chart({"type": "column"})
    chart.add_series(
        {
            "name": "Rows by outcome",
            "categories": ["Summary", first + 1, 0, last, 0],
            "values": ["Summary", first + 1, 1, last, 1],
            "data_labels": {"value": True},
        }
    )
    chart.set_title({"name": "Outcomes"})
    chart.set_legend({"none": True})
    sheet.insert_chart(1, 3, chart, {"x_scale": 1.3, "y_scale": 1.2})


def _rows_sheets(workbook: Any, name: str, lines: Iterator[list[Any]], bold: Any) -> None:
    """``lines`` in as many sheets as they need (``name``, ``name 2``, ...)."""
    sheet = None
    number = 0
    row = EXCEL_ROWS
    for line in lines:
        if row >= EXCEL_ROWS:
            number += 1
            sheet = workbook.add_worksheet(name if number == 1 else f"{name} {number}")
            sheet.write_row(0, 0, COLUMNS, bold)
            sheet.freeze_panes(1, 0)
            row = 1
        assert sheet is not None
        sheet.write_row(row, 0, ["" if value is None else value for value in line])
        row += 1
    if sheet is None:
        sheet = workbook.add_worksheet(name)
        sheet.write_row(0, 0, COLUMNS, bold)


# ----------------------------------------------------------------------------- use cases


@dataclass(frozen=True, slots=True)
class ReportPage:
    """Part of an import's report, for a page: the import, ``limit`` lines from
    ``offset``, and how many rows had each outcome so far."""

    status: ImportStatus
    offset: int
    limit: int
    lines: list[dict[str, Any]]
    by_outcome: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.by_outcome.values())


def report_page(context: RegistryContext, job_id: int, offset: int, limit: int) -> ReportPage:
    """Import ``job_id`` and ``limit`` lines of its report from ``offset`` (each a mapping
    of :data:`COLUMNS`); a :class:`~clientregistry.registry.jobs.JobError` 404 when there is
    no such import."""
    with transaction(context.sessions, write=False) as session:
        status = _job(session, job_id)
        lines = [
            dict(zip(COLUMNS, line, strict=True))
            for line in report_rows(session, job_id, offset=offset, limit=limit)
        ]
        counts = outcome_counts(session, job_id)
    return ReportPage(
        status, offset, limit, lines, {outcome.value: n for outcome, n in counts.items()}
    )


def csv_report(context: RegistryContext, job_id: int) -> Iterator[str]:
    """The report of import ``job_id`` as pieces of CSV text, read in one transaction (the
    admin API and the web UI stream it)."""
    with transaction(context.sessions, write=False) as session:
        yield from csv_chunks(session, job_id)


def xlsx_report(context: RegistryContext, job_id: int) -> Path:
    """The report of import ``job_id`` as an XLSX workbook in a temporary file (the caller
    removes it once sent)."""
    handle, name = tempfile.mkstemp(suffix=".xlsx", prefix=".report-")
    os.close(handle)
    path = Path(name)
    try:
        with transaction(context.sessions, write=False) as session:
            write_xlsx(session, job_id, path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
