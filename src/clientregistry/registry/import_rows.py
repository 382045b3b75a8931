"""The rows of an import file, read from where an earlier run stopped and prepared for the
submit use case, by a second process while the first one matches and writes.

A row is one record of the file: a line of FHIR NDJSON, a row of CSV (built into a Patient
with the same column mapping as ``clientregistry dedupe``), or an entry of a Bundle. Each
comes with its number among the file's records, its line (or entry), and the position just
after it: the byte offset in an NDJSON or CSV file, the next entry in a Bundle. An import
keeps that position with every batch it commits, so a run started again reads on from there.

A row is checked as ``POST /fhir/Patient`` checks a body (FHIR R4, the submitting system's
own identifier) and prepared (:func:`~clientregistry.registry.submit.prepare_submission`:
features, blocking keys, search tokens). The submitting system is the import's, or, when the
import names none, the one a record's client tag names (a file this registry exported). A
record without the system's own identifier gets one from its id (the Patient's ``id``, the
CSV's id column): a file's ids are the sending system's record ids. A golden record (in an
export) is skipped; a bad row becomes an error row saying why.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import gc
import multiprocessing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from clientregistry.batch.readers import CsvMapping, csv_patient
from clientregistry.errors import InvalidRecord
from clientregistry.fhir import codes
from clientregistry.fhir.errors import FhirError
from clientregistry.fhir.patient import internal_identifier, patient_issues
from clientregistry.matching.matcher import Matcher
from clientregistry.registry.rules_in_force import InForce
from clientregistry.registry.submit import Submission, prepare_submission
from clientregistry.settings import ClientSystemConfig
from clientregistry.store.enums import RowOutcome

CHUNK = 200
"""Rows per message between the processes."""

MAX_MESSAGE = 500
"""An error message is cut to this many characters."""


class FileFormat:
    """The formats an import reads (by the file's name)."""

    NDJSON = "ndjson"
    CSV = "csv"
    BUNDLE = "json"


def file_format(name: str) -> str:
    """``csv`` for ``*.csv``, ``json`` for ``*.json`` (a Bundle or one Patient), else
    ``ndjson`` (FHIR bulk data: ``*.ndjson``, ``*.jsonl``), as ``dedupe`` reads them."""
    suffix = Path(name).suffix.lower()
    if suffix == ".csv":
        return FileFormat.CSV
    if suffix == ".json":
        return FileFormat.BUNDLE
    return FileFormat.NDJSON


@dataclass(frozen=True, slots=True)
class Position:
    """Where reading stands: rows read, the line of the last one, and the byte offset (or,
    in a Bundle, the entry) after it."""

    rows: int = 0
    line: int = 0
    offset: int = 0

    def to_json(self) -> dict[str, int]:
        return {"rows": self.rows, "line": self.line, "offset": self.offset}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Position:
        return cls(int(data.get("rows", 0)), int(data.get("line", 0)), int(data.get("offset", 0)))


@dataclass(frozen=True, slots=True)
class InputRow:
    """One row, prepared (``submission``) or not (an error or a skipped row, ``message``
    says why)."""

    number: int
    line: int | None
    entry: int | None
    after: Position
    input_id: str | None
    submission: Submission | None = None
    outcome: RowOutcome | None = None
    message: str | None = None

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.entry}]" if self.entry is not None else f"line {self.line}"


@dataclass(frozen=True, slots=True)
class _Raw:
    """A row as read: a resource, or why there is none."""

    line: int | None
    entry: int | None
    after: Position
    resource: dict[str, Any] | None
    input_id: str | None = None
    error: str | None = None


# ----------------------------------------------------------------------------- reading


def _ndjson(path: Path, start: Position) -> Iterator[_Raw]:
    rows, line, offset = start.rows, start.line, start.offset
    with path.open("rb") as fh:
        fh.seek(offset)
        for raw in fh:
            line += 1
            offset += len(raw)
            if not raw.strip():
                continue
            rows += 1
            after = Position(rows, line, offset)
            try:
                resource = orjson.loads(raw)
            except orjson.JSONDecodeError as error:
                yield _Raw(line, None, after, None, error=f"not JSON: {error}")
                continue
            if not isinstance(resource, dict):
                yield _Raw(line, None, after, None, error="not a JSON object")
                continue
            yield _Raw(line, None, after, resource, _text_id(resource))


def _text_id(resource: Mapping[str, Any]) -> str | None:
    value = resource.get("id")
    return value[:255] if isinstance(value, str) and value else None


def _csv(path: Path, start: Position, mapping: CsvMapping) -> Iterator[_Raw]:
    """CSV rows; the header is read again each time, the rows from ``start``."""
    with path.open("rb") as fh:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="surrogateescape")
        header_line = fh.readline()
        header_text = decoder.decode(header_line).lstrip("\ufeff")
        header = next(csv.reader([header_text], skipinitialspace=True), [])
        if any("\udc80" <= ch <= "\udcff" for name in header for ch in name):
            yield _Raw(1, None, Position(1, 1, len(header_line)), None, error=_NOT_UTF8)
            return
        if mapping.id not in header:
            columns = ", ".join(header)
            message = f"no column {mapping.id!r} for the record id; columns are {columns}"
            yield _Raw(1, None, Position(1, 1, len(header_line)), None, error=message)
            return
        offset = max(start.offset, len(header_line))
        line = max(start.line, 1)
        fh.seek(offset)
        consumed = [offset, line]

        def lines() -> Iterator[str]:
            for raw in fh:
                consumed[0] += len(raw)
                consumed[1] += 1
                yield decoder.decode(raw)

        rows = start.rows
        ended = line
        for values in csv.reader(lines(), skipinitialspace=True):
            row_line, ended = ended + 1, consumed[1]
            if not values or values == [""]:
                continue
            rows += 1
            after = Position(rows, consumed[1], consumed[0])
            record = dict(zip(header, values, strict=False))
            input_id = (record.get(mapping.id) or "").strip()[:255] or None
            if any("\udc80" <= ch <= "\udcff" for value in values for ch in value):
                yield _Raw(row_line, None, after, None, input_id, _NOT_UTF8)
                continue
            try:
                patient = csv_patient(record, mapping, row_line).resource
            except InvalidRecord as error:
                yield _Raw(row_line, None, after, None, input_id, error.message)
                continue
            patient.pop("id", None)  # the sending system's record id: its identifier
            yield _Raw(row_line, None, after, patient, input_id)


_NOT_UTF8 = "not UTF-8 text; save the file as UTF-8 and try again"


def _bundle(path: Path, start: Position) -> Iterator[_Raw]:
    """The entries of a Bundle (or the one Patient of a document), from entry
    ``start.offset``."""
    try:
        document = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as error:
        yield _Raw(1, None, Position(1, 1, 1), None, error=f"not JSON: {error}")
        return
    if isinstance(document, dict) and document.get("resourceType") == "Bundle":
        entries = document.get("entry") or []
        if not isinstance(entries, list):
            yield _Raw(None, None, Position(1, 0, 1), None, error="Bundle.entry is not a list")
            return
    else:
        entries = [{"resource": document}]
    for index in range(start.offset, len(entries)):
        entry = entries[index]
        after = Position(start.rows + index - start.offset + 1, 0, index + 1)
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            yield _Raw(None, index, after, None, error="the entry has no resource object")
            continue
        yield _Raw(None, index, after, resource, _text_id(resource))


def read_rows(path: Path, file_kind: str, start: Position, mapping: CsvMapping) -> Iterator[_Raw]:
    """The rows of ``path`` after ``start``."""
    if file_kind == FileFormat.CSV:
        return _csv(path, start, mapping)
    if file_kind == FileFormat.BUNDLE:
        return _bundle(path, start)
    return _ndjson(path, start)


def count_rows(path: Path, file_kind: str) -> int | None:
    """About how many rows ``path`` holds (its lines; a CSV's less the header), for a
    progress bar; None for a Bundle (counted as it is read)."""
    if file_kind == FileFormat.BUNDLE:
        return None
    with path.open("rb") as fh:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    return max(lines - 1, 0) if file_kind == FileFormat.CSV else lines


# ----------------------------------------------------------------------------- preparing


def _client_tag(resource: Mapping[str, Any]) -> str | None:
    meta = resource.get("meta")
    tags = meta.get("tag") if isinstance(meta, dict) else None
    for tag in tags if isinstance(tags, list) else ():
        if isinstance(tag, dict) and tag.get("system") == codes.CLIENT_ID_SYSTEM:
            code = tag.get("code")
            return code if isinstance(code, str) else None
    return None


def _is_golden(resource: Mapping[str, Any]) -> bool:
    meta = resource.get("meta")
    tags = meta.get("tag") if isinstance(meta, dict) else None
    return any(
        isinstance(tag, dict)
        and tag.get("code") == codes.GOLDEN_RECORD_CODE
        and tag.get("system") is None
        for tag in (tags if isinstance(tags, list) else ())
    )


def _issues_text(issues: Sequence[Any]) -> str:
    text = "; ".join(issue.diagnostics for issue in issues[:5])
    if len(issues) > 5:
        text += f"; and {len(issues) - 5} more"
    return text


class RowPreparer:
    """Checks and prepares rows as the submit use case needs them."""

    def __init__(
        self, matcher: Matcher, systems: Mapping[str, ClientSystemConfig], system: str | None
    ) -> None:
        self.matcher = matcher
        self.systems = systems
        self.system = system

    def prepare(self, raw: _Raw) -> InputRow:
        number, line, entry, after = raw.after.rows, raw.line, raw.entry, raw.after
        if raw.resource is None:
            message = (raw.error or "unreadable")[:MAX_MESSAGE]
            return InputRow(
                number, line, entry, after, raw.input_id, None, RowOutcome.ERROR, message
            )
        resource = raw.resource
        try:
            submission = self._submission(resource, raw.input_id)
        except _Skip as skip:
            return InputRow(
                number, line, entry, after, raw.input_id, None, RowOutcome.SKIPPED, skip.reason
            )
        except FhirError as error:
            message = error.diagnostics[:MAX_MESSAGE]
            return InputRow(
                number, line, entry, after, raw.input_id, None, RowOutcome.ERROR, message
            )
        return InputRow(number, line, entry, after, raw.input_id, submission)

    def _submission(self, resource: dict[str, Any], input_id: str | None) -> Submission:
        kind = resource.get("resourceType")
        if kind != "Patient":
            raise FhirError(400, "invalid", f"resourceType is {kind!r}, not 'Patient'")
        if _is_golden(resource):
            raise _Skip("a golden record (the registry makes its own)")
        name = self.system or _client_tag(resource)
        if name is None:
            raise FhirError(
                400,
                "invalid",
                "no client system: name one for the import (--system), or give the record "
                f"the client tag ({codes.CLIENT_ID_SYSTEM}) of a configured system",
            )
        client = self.systems.get(name)
        if client is None:
            raise FhirError(400, "invalid", f"{name!r} is not a client system of this registry")
        issues = patient_issues(resource)
        if issues:
            raise FhirError(400, "invalid", _issues_text(issues))
        if internal_identifier(resource, [client.internal_id_system]) is None:
            if input_id is None:
                raise FhirError(
                    422,
                    "business-rule",
                    f"no identifier of {client.internal_id_system} and no id to make one from",
                )
            identifiers = list(resource.get("identifier") or [])
            identifiers.append({"system": client.internal_id_system, "value": input_id})
            resource = {**resource, "identifier": identifiers}
        return prepare_submission(self.matcher, resource, client)


class _Skip(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ----------------------------------------------------------------------------- the reader process


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """What the reader process reads and how it prepares it (plain, picklable values)."""

    path: str
    file_kind: str
    start: Position
    mapping: CsvMapping
    rules: InForce
    systems: tuple[ClientSystemConfig, ...]
    system: str | None


def _prepared_rows(plan: ReadPlan) -> Iterator[InputRow]:
    preparer = RowPreparer(plan.rules.build(), {s.name: s for s in plan.systems}, plan.system)
    for raw in read_rows(Path(plan.path), plan.file_kind, plan.start, plan.mapping):
        yield preparer.prepare(raw)


def _reader(plan: ReadPlan, connection: Any) -> None:
    """The reader process: every row after ``plan.start``, prepared, in chunks; ``None``
    at the end; ``("failed", message)`` if reading fails."""
    try:
        gc.disable()  # no reference cycles are made here; collections only cost time
        chunk: list[tuple[Any, ...]] = []
        for row in _prepared_rows(plan):
            chunk.append(_flat(row))
            if len(chunk) >= CHUNK:
                connection.send(chunk)
                chunk = []
        connection.send(chunk)
        connection.send(None)
    except BaseException as error:  # report, never leave the importer waiting
        with contextlib.suppress(OSError):
            connection.send(("failed", f"{type(error).__name__}: {error}"))
    finally:
        connection.close()


def _flat(row: InputRow) -> tuple[Any, ...]:
    """A row as plain values, for the pipe (frozen dataclasses unpickle slowly: ~40 us a
    row in the process that matches, where every microsecond counts)."""
    after = row.after
    where = (row.number, row.line, row.entry, after.rows, after.line, after.offset, row.input_id)
    s = row.submission
    if s is None:
        return (*where, row.outcome, row.message)
    return (
        *where,
        s.patient,
        s.client.name,
        s.system,
        s.value,
        s.features,
        s.keys,
        s.hashes,
        s.tokens,
        s.survivor,
    )


def _row(item: tuple[Any, ...], clients: Mapping[str, ClientSystemConfig]) -> InputRow:
    """:func:`_flat` undone."""
    number, line, entry, rows, after_line, offset, input_id = item[:7]
    after = Position(rows, after_line, offset)
    if len(item) == 9:
        return InputRow(number, line, entry, after, input_id, None, item[7], item[8])
    patient, client, system, value, features, keys, hashes, tokens, survivor = item[7:]
    submission = Submission(
        patient, clients[client], system, value, features, keys, hashes, tokens, survivor
    )
    return InputRow(number, line, entry, after, input_id, submission)


def rows_in_background(plan: ReadPlan) -> Iterator[InputRow]:
    """The rows of ``plan``, read and prepared by a second process, in order. Stop early by
    closing the iterator (the process then stops)."""
    clients = {client.name: client for client in plan.systems}
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_reader, args=(plan, sender), daemon=True)
    process.start()
    sender.close()  # the reader's now: if it dies, receiving fails instead of waiting
    try:
        while True:
            try:
                chunk = receiver.recv()
            except EOFError:
                raise RuntimeError(f"reading {plan.path} failed: the reader stopped") from None
            if chunk is None:
                return
            if isinstance(chunk, tuple):
                raise RuntimeError(f"reading {plan.path} failed: {chunk[1]}")
            for item in chunk:
                yield _row(item, clients)
    finally:
        receiver.close()
        process.join(timeout=5)
        if process.is_alive():
            process.terminate()
            process.join(timeout=5)


def rows_here(plan: ReadPlan) -> Iterator[InputRow]:
    """:func:`rows_in_background` in this process (small files, tests)."""
    return _prepared_rows(plan)
