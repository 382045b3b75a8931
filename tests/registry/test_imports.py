"""The import job: batched submission through the submit use case, resumable from the
database, with a report per input row."""

from __future__ import annotations

import csv
import io
import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import orjson
import pytest
from bulk import backend, context, data_dir, state
from import_data import people, write_csv, write_ndjson
from sqlalchemy import func, select

from clientregistry.registry import import_report, imports
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.imports import ImportOptions
from clientregistry.registry.jobs import JobError
from clientregistry.registry.setup import init_data_dir
from clientregistry.registry.submit import Submitter
from clientregistry.settings import load_settings
from clientregistry.store.db import transaction
from clientregistry.store.enums import JobOrigin, JobState, RowOutcome
from clientregistry.store.models import AuditEvent, BulkJob, ImportRow, SourceRecord

__all__ = ["backend", "context", "data_dir"]

FreshDatabase = Callable[[str], AbstractContextManager[str]]
OPENMRS = "http://clientregistry.org/openmrs"
CLI = Path(sys.executable).with_name("clientregistry")


def run(context: RegistryContext, path: Path, **options: Any) -> imports.ImportStatus:
    background = options.pop("background", False)
    started = imports.start_import(
        context,
        path,
        ImportOptions(**options),
        origin=JobOrigin.CLI,
        actor="cli:test",
    )
    return imports.run_import(context, started.job_id, background=background)


def report(context: RegistryContext, job_id: int) -> list[dict[str, str]]:
    out = io.StringIO()
    with context.sessions() as session:
        import_report.write_csv(session, job_id, out)
    return list(csv.DictReader(io.StringIO(out.getvalue())))


# ----------------------------------------------------------------------------- what it stores


def _submitted_one_by_one(
    patients: list[dict[str, Any]], tmp_path: Path, fresh_database: FreshDatabase, backend: str
) -> dict[str, Any]:
    """The state of a fresh registry that received ``patients`` one submission each."""
    with fresh_database(backend) as url:
        other = tmp_path / "single"
        init_data_dir(other, hostnames=[], database_url=url)
        single = RegistryContext.open(load_settings(other, environ={}))
        try:
            client = single.settings.systems["openmrs"]
            for patient in patients:
                body = {k: v for k, v in patient.items() if k != "id"}
                body["identifier"] = [
                    *body.get("identifier", []),
                    {"system": OPENMRS, "value": patient["id"]},
                ]
                with transaction(single.sessions) as session:
                    Submitter(single).submit(session, body, client)
            return state(single)
        finally:
            single.close()


def test_an_import_stores_what_single_submissions_would(
    context: RegistryContext, tmp_path: Path, fresh_database: FreshDatabase, backend: str
) -> None:
    patients = people(400)
    status = run(
        context, write_ndjson(tmp_path / "p.ndjson", patients), system="openmrs", batch_size=37
    )
    assert status.state is JobState.DONE
    assert status.counts.created == 400 and status.counts.errors == 0
    imported = state(context)
    assert imported == _submitted_one_by_one(patients, tmp_path, fresh_database, backend)
    assert len(imported["persons"]) < 400  # duplicates were linked
    assert imported["issues"]  # and some are for review
    counts = status.counts
    assert counts.new_persons == len(imported["persons"])
    assert counts.linked == 400 - counts.new_persons


def _crowd(n: int, again: int) -> list[dict[str, Any]]:
    """``n`` people of one name (blocks of the name's keys far over the registry's block
    limit), then ``again`` of the first of them once more (a second record: same birth date and
    phone), from which the name's block now holds only newer records."""
    out: list[dict[str, Any]] = []
    for k in range(n):
        out.append(
            {
                "resourceType": "Patient",
                "id": f"c-{k}",
                "name": [{"family": "Mukasa", "given": ["Kato"]}],
                "gender": "male",
                "birthDate": f"{1940 + k % 60}-{1 + k % 12:02d}-{1 + k // 12 % 28:02d}",
                "telecom": [{"system": "phone", "value": f"0772{k:06d}"}],
            }
        )
    for k in range(again):
        second = orjson.loads(orjson.dumps(out[k]))
        second["id"] = f"c-{k}-again"
        out.append(second)
    return out


def test_a_crowded_name_is_read_as_single_submissions_read_it(
    context: RegistryContext, tmp_path: Path, fresh_database: FreshDatabase, backend: str
) -> None:
    """The import's batches choose candidates from the newest records of each block and few
    sharing one key, as the candidates query of a single submission does, also when the
    blocks outgrow the limit; second records still find their first through the other keys
    they share."""
    patients = _crowd(150, 12)
    status = run(
        context, write_ndjson(tmp_path / "c.ndjson", patients), system="openmrs", batch_size=23
    )
    assert status.state is JobState.DONE and status.counts.errors == 0
    imported = state(context)
    assert imported == _submitted_one_by_one(patients, tmp_path, fresh_database, backend)
    for k in range(12):
        assert [f"c-{k}", f"c-{k}-again"] in imported["persons"]
    assert status.counts.new_persons == 150


def test_every_imported_record_is_audited_with_its_import(
    context: RegistryContext, tmp_path: Path
) -> None:
    status = run(context, write_ndjson(tmp_path / "p.ndjson", people(60)), system="openmrs")
    with context.sessions() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.event_type == "create")).all()
        jobs = session.scalars(
            select(AuditEvent.event_type).where(AuditEvent.entity == f"BulkJob/{status.id}")
        ).all()
    assert len(events) == 60
    assert {e.agent for e in events} == {"openmrs"}
    assert all(e.detail and e.detail["import"] == status.id for e in events)
    assert all(e.detail and e.detail["cruid"] for e in events)
    assert sorted(jobs) == ["import-done", "import-start"]


def test_an_update_in_the_file_updates_the_record(context: RegistryContext, tmp_path: Path) -> None:
    patients = people(20)
    later = orjson.loads(orjson.dumps(patients[3]))
    later["name"][0]["given"] = ["Zebedee"]
    status = run(context, write_ndjson(tmp_path / "p.ndjson", [*patients, later]), system="openmrs")
    assert status.counts.created == 20 and status.counts.updated == 1
    assert ("p-4", 2) in state(context)["versions"]
    rows = report(context, status.id)
    assert rows[-1]["action"] == "updated" and rows[-1]["patient_id"] == "p-4"


# ----------------------------------------------------------------------------- bad rows


def test_bad_rows_are_reported_with_their_line_and_the_rest_is_loaded(
    context: RegistryContext, tmp_path: Path
) -> None:
    good = people(10)
    lines = [orjson.dumps(p) for p in good]
    lines.insert(2, b"{not json")
    lines.insert(5, orjson.dumps({"resourceType": "Observation", "id": "o1"}))
    lines.insert(7, orjson.dumps({**good[0], "id": "bad-date", "birthDate": "1990-02-30"}))
    lines.insert(9, b"")
    path = tmp_path / "mixed.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    status = run(context, path, system="openmrs")
    assert status.state is JobState.DONE
    assert status.counts.errors == 3 and status.counts.created == 10
    assert len(state(context)["records"]) == 10
    errors = [row for row in report(context, status.id) if row["outcome"] == "error"]
    assert [row["line"] for row in errors] == ["3", "6", "8"]
    assert "not JSON" in errors[0]["error"]
    assert "Observation" in errors[1]["error"]
    assert "birthDate" in errors[2]["error"] and errors[2]["patient_id"] == "bad-date"
    assert all(row["record_id"] == "" and row["CRUID"] == "" for row in errors)


def test_stop_on_error_keeps_what_came_before_and_says_where(
    context: RegistryContext, tmp_path: Path
) -> None:
    lines = [orjson.dumps(p) for p in people(8)]
    lines.insert(4, b"[1, 2]")
    path = tmp_path / "stop.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    status = run(context, path, system="openmrs", on_error="stop", batch_size=3)
    assert status.state is JobState.FAILED
    assert status.error is not None and "line 5" in status.error
    assert len(state(context)["records"]) == 4


def test_records_without_the_systems_identifier_get_it_from_their_id(
    context: RegistryContext, tmp_path: Path
) -> None:
    patients = people(5)
    patients[1]["identifier"] = [{"system": OPENMRS, "value": "own-17"}]
    patients[2].pop("id")
    status = run(context, write_ndjson(tmp_path / "p.ndjson", patients), system="openmrs")
    assert state(context)["records"] == ["own-17", "p-1", "p-4", "p-5"]
    third = report(context, status.id)[2]
    assert third["outcome"] == "error" and "no id" in third["error"]


def test_unknown_system_and_bad_options_are_refused(
    context: RegistryContext, tmp_path: Path
) -> None:
    path = write_ndjson(tmp_path / "p.ndjson", people(3))
    for options, message in [
        (ImportOptions(system="nobody"), "not a client system"),
        (ImportOptions(system="openmrs", columns=("shoe=size",)), "unknown element"),
        (ImportOptions(system="openmrs", on_error="ignore"), "on_error"),
    ]:
        with pytest.raises(JobError, match=message):
            imports.start_import(context, path, options, origin=JobOrigin.CLI, actor="t")
    with pytest.raises(JobError, match="no such file"):
        imports.start_import(
            context, tmp_path / "missing.ndjson", ImportOptions(), origin=JobOrigin.CLI, actor="t"
        )


# ----------------------------------------------------------------------------- formats


def test_csv_with_dedupes_column_mapping(context: RegistryContext, tmp_path: Path) -> None:
    patients = people(30)
    path = write_csv(tmp_path / "p.csv", patients)
    text = path.read_text().replace("uganda_nin", "national_id")
    path.write_text(text + "p-31,x,19900101,Ann,Lee,,\n")
    status = run(
        context,
        path,
        system="openmrs",
        columns=("identifier:http://example.org/fhir/sid/national-id=national_id",),
    )
    assert status.counts.created == 30 and status.counts.errors == 1
    rows = report(context, status.id)
    assert rows[-1]["line"] == "32" and "gender" in rows[-1]["error"]
    with context.sessions() as session:
        record = session.scalars(
            select(SourceRecord).where(SourceRecord.internal_value == "p-1")
        ).one()
    assert {"system": OPENMRS, "value": "p-1"} in record.resource["identifier"]
    assert any(i["system"].endswith("national-id") for i in record.resource["identifier"])


def test_a_bundle_is_read_entry_by_entry(context: RegistryContext, tmp_path: Path) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": p} for p in people(12)] + [{"request": {}}],
    }
    path = tmp_path / "b.json"
    path.write_bytes(orjson.dumps(bundle))
    status = run(context, path, system="openmrs", batch_size=5)
    assert status.counts.created == 12 and status.counts.errors == 1
    rows = report(context, status.id)
    assert rows[-1]["entry"] == "12" and rows[-1]["line"] == ""


# ----------------------------------------------------------------------------- jobs


def test_the_same_import_again_is_found_done(context: RegistryContext, tmp_path: Path) -> None:
    path = write_ndjson(tmp_path / "p.ndjson", people(10))
    first = run(context, path, system="openmrs")
    again = imports.start_import(
        context, path, ImportOptions(system="openmrs"), origin=JobOrigin.CLI, actor="t"
    )
    assert again.already_done and again.job_id == first.id
    forced = imports.start_import(
        context, path, ImportOptions(system="openmrs"), origin=JobOrigin.CLI, actor="t", again=True
    )
    assert forced.job_id != first.id
    status = imports.run_import(context, forced.job_id)
    assert status.counts.updated == 10 and len(state(context)["records"]) == 10


def test_a_stopped_import_continues_where_it_stopped(
    context: RegistryContext, tmp_path: Path
) -> None:
    path = write_ndjson(tmp_path / "p.ndjson", people(100))
    options = ImportOptions(system="openmrs", batch_size=10)
    started = imports.start_import(context, path, options, origin=JobOrigin.CLI, actor="t")
    calls = []
    first = imports.run_import(
        context, started.job_id, should_stop=lambda: calls.append(1) or len(calls) >= 3
    )
    assert first.state is JobState.INTERRUPTED and first.counts.rows == 30
    again = imports.start_import(context, path, options, origin=JobOrigin.CLI, actor="t")
    assert again.resumed and again.job_id == started.job_id
    final = imports.run_import(context, started.job_id)
    assert final.state is JobState.DONE and final.counts.rows == 100
    with context.sessions() as session:
        numbers = session.scalars(
            select(ImportRow.row).where(ImportRow.job_id == started.job_id).order_by(ImportRow.row)
        ).all()
    assert numbers == list(range(1, 101))


def test_cancel_stops_a_queued_import(context: RegistryContext, tmp_path: Path) -> None:
    path = write_ndjson(tmp_path / "p.ndjson", people(10))
    started = imports.start_import(
        context, path, ImportOptions(system="openmrs"), origin=JobOrigin.SERVER, actor="admin"
    )
    status = imports.cancel_import(context, started.job_id, "admin", None)
    assert status.state is JobState.CANCELLED
    assert imports.run_import(context, started.job_id).state is JobState.CANCELLED
    assert state(context)["records"] == []
    with pytest.raises(JobError, match="already ended"):
        imports.cancel_import(context, started.job_id, "admin", None)


# ----------------------------------------------------------------------------- the report


def test_the_report_lists_every_row_as_csv_and_xlsx(
    context: RegistryContext, tmp_path: Path
) -> None:
    lines = [orjson.dumps(p) for p in people(40)]
    lines.insert(10, b"oops")
    path = tmp_path / "p.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    status = run(context, path, system="openmrs")
    rows = report(context, status.id)
    assert [row["row"] for row in rows] == [str(n) for n in range(1, 42)]
    assert set(rows[0]) == set(import_report.COLUMNS)
    stored = [row for row in rows if row["outcome"] != "error"]
    assert all(
        row["record_id"] and row["CRUID"] and row["source_id"] == "openmrs" for row in stored
    )
    linked = [row for row in stored if row["outcome"] == RowOutcome.LINKED.value]
    assert linked and all(float(row["score"]) > 0 and row["rule_set"] for row in linked)
    workbook = tmp_path / "report.xlsx"
    with context.sessions() as session:
        import_report.write_xlsx(session, status.id, workbook)
    with zipfile.ZipFile(workbook) as xlsx:
        names = xlsx.namelist()
        book = xlsx.read("xl/workbook.xml").decode()
        shared = (
            xlsx.read("xl/sharedStrings.xml").decode() if "xl/sharedStrings.xml" in names else ""
        )
        sheets = [n for n in names if n.startswith("xl/worksheets/sheet")]
    assert any(n.startswith("xl/charts/chart") for n in names)
    for sheet in ("Summary", "Rows", "To review", "Errors"):
        assert f'name="{sheet}"' in book
    assert len(sheets) == 4
    assert "Import summary" in book + shared or "Import summary" in _all_text(workbook)


def _all_text(path: Path) -> str:
    with zipfile.ZipFile(path) as xlsx:
        return "".join(xlsx.read(n).decode(errors="replace") for n in xlsx.namelist())


# ----------------------------------------------------------------------------- kill -9


def _cli_import(data_dir: Path, path: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(CLI), "import", str(path), "--system", "openmrs", "--data-dir", str(data_dir), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "CR_DATA_DIR": str(data_dir)},
    )


def _rows_done(context: RegistryContext) -> int:
    with context.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(ImportRow)) or 0)


def test_imports_killed_at_random_points_end_as_an_uninterrupted_one(
    data_dir: Path, tmp_path: Path, fresh_database: FreshDatabase, backend: str
) -> None:
    path = write_ndjson(tmp_path / "p.ndjson", people(600, seed=11))
    options = ("--batch-size", "20")
    # the uninterrupted run, into a registry of its own
    with fresh_database(backend) as url:
        whole = tmp_path / "whole"
        init_data_dir(whole, hostnames=[], database_url=url)
        done = _cli_import(whole, path, *options)
        _, err = done.communicate(timeout=300)
        assert done.returncode == 0, err.decode()
        reference = RegistryContext.open(load_settings(whole, environ={}))
        try:
            expected = state(reference)
        finally:
            reference.close()
    # the same import, killed with SIGKILL at several points, then run to its end
    context = RegistryContext.open(load_settings(data_dir, environ={}))
    rng = random.Random(3)
    kills = 0
    try:
        for target in (40, 180, 330, 470):
            process = _cli_import(data_dir, path, *options)
            deadline = time.monotonic() + 120
            while _rows_done(context) < target and process.poll() is None:
                assert time.monotonic() < deadline, "the import made no progress"
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.15))  # often in the middle of a batch
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                kills += 1
            process.communicate(timeout=30)
        last = _cli_import(data_dir, path, *options)
        _, err = last.communicate(timeout=300)
        assert last.returncode == 0, err.decode()
        assert kills >= 3
        got = state(context)
        with context.sessions() as session:
            job = session.scalars(select(BulkJob)).one()
            numbers = session.scalars(select(ImportRow.row).order_by(ImportRow.row)).all()
            created = session.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.event_type == "create")
            )
    finally:
        context.close()
    assert got == expected
    assert job.state is JobState.DONE
    assert numbers == list(range(1, 601))
    assert created == 600  # each record audited once: no batch was committed twice


# ----------------------------------------------------------------------------- on a terminal


def _on_a_terminal(command: list[str], env: dict[str, str], timeout: float = 300) -> str:
    """Run ``command`` with a pseudo-terminal as its stdout and stderr; what it wrote."""
    import pty
    import select as poll

    leader, follower = pty.openpty()
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower, env=env
    )
    os.close(follower)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = poll.select([leader], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the terminal closed: the command ended
                    break
                if not chunk:
                    break
                out.extend(chunk)
            elif process.poll() is not None:
                break
        assert process.wait(timeout=30) == 0, out.decode(errors="replace")
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
    return out.decode(errors="replace")


def test_on_a_terminal_a_progress_bar_then_a_summary(data_dir: Path, tmp_path: Path) -> None:
    path = write_ndjson(tmp_path / "p.ndjson", people(3000, seed=13))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    env.pop("CI", None)
    shown = _on_a_terminal(
        [
            str(CLI),
            "import",
            str(path),
            "--system",
            "openmrs",
            "--data-dir",
            str(data_dir),
            "--batch-size",
            "50",
        ],
        env,
    )
    plain = _without_escapes(shown)
    # the bar: records done of the total, the rate, the time left
    assert "/3000" in plain.replace(",", "") and "rec/s" in plain, plain
    assert "\x1b[" in shown  # drawn and redrawn in place
    # the summary
    assert "3,000 rows, 3,000 records created" in plain, plain
    assert "new persons" in plain and "auto links" in plain and "0 errors" in plain, plain
    assert "rows/s" in plain


def _without_escapes(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).replace("\r", "\n")
