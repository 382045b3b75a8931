"""Reading Patients from files: FHIR NDJSON, a FHIR Bundle (or one Patient), or CSV.

Every record comes with its line number (its entry index in a Bundle, where JSON parsers give
no positions); a record that cannot be used comes as an
:class:`~clientregistry.errors.InvalidRecord` saying why and where, so the caller can skip it
or stop, and count it either way.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from clientregistry.errors import InvalidRecord
from clientregistry.matching.normalize import parse_date

FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_NOT_UTF8 = re.compile("[\udc80-\udcff]")
"""Bytes that were not UTF-8, as ``errors="surrogateescape"`` decodes them."""
FHIR_DATE = re.compile(r"^\d{4}(-(0[1-9]|1[0-2])(-(0[1-9]|[12]\d|3[01]))?)?$")


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One Patient read from a file: its line, or its entry index in a Bundle."""

    line: int | None
    record_id: str
    resource: dict[str, Any]
    entry: int | None = None
    extra: Any = None
    """What a source other than a file hands on with the record (a registry's re-match: the
    record's version, golden record and state), passed through as it is."""

    @property
    def where(self) -> str:
        """``line N`` or ``Bundle.entry[N]``."""
        return f"Bundle.entry[{self.entry}]" if self.entry is not None else f"line {self.line}"


ReadResult = SourceRecord | InvalidRecord


@lru_cache(maxsize=1 << 14)
def _valid_date(value: str) -> bool:
    """Whether ``value`` is a FHIR date that is a real day, month or year (birth dates repeat:
    cached)."""
    return FHIR_DATE.fullmatch(value) is not None and parse_date(value) is not None


def check_patient(resource: Any, line: int | None, entry: int | None = None) -> SourceRecord:
    """Check the little ``dedupe`` needs of a Patient; raise :class:`InvalidRecord` if unusable."""
    if not isinstance(resource, dict):
        raise InvalidRecord("not a JSON object", line=line)
    kind = resource.get("resourceType")
    if kind != "Patient":
        raise InvalidRecord(f"resourceType is {kind!r}, not 'Patient'", line=line)
    record_id = resource.get("id")
    if not isinstance(record_id, str) or not record_id:
        raise InvalidRecord("Patient has no id", line=line)
    if not FHIR_ID.fullmatch(record_id):
        raise InvalidRecord(f"Patient id {record_id!r} is not a valid FHIR id", line=line)
    birth = resource.get("birthDate")
    if birth is not None and (not isinstance(birth, str) or not _valid_date(birth)):
        raise InvalidRecord(
            f"birthDate {birth!r} is not a valid date (YYYY, YYYY-MM or YYYY-MM-DD)",
            line=line,
            record_id=record_id,
        )
    return SourceRecord(line, record_id, resource, entry)


def read_ndjson(path: Path) -> Iterator[ReadResult]:
    """FHIR bulk-data NDJSON: one resource a line; blank lines are skipped."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if raw.strip():
                yield ndjson_record(raw, number)


def ndjson_record(raw: bytes | str, line: int | None) -> ReadResult:
    """One (non-blank) NDJSON line as a checked Patient, or why it is not one."""
    try:
        resource = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        return InvalidRecord(f"not JSON: {error}", line=line)
    try:
        return check_patient(resource, line)
    except InvalidRecord as error:
        return error


def read_json_document(path: Path) -> Iterator[ReadResult]:
    """A FHIR Bundle of Patients, or a single Patient, in one JSON document."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        yield InvalidRecord(f"not UTF-8 text (byte {error.start}): FHIR JSON must be UTF-8")
        return
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        yield InvalidRecord(f"not JSON: {error}", line=1)
        return
    if isinstance(document, dict) and document.get("resourceType") == "Bundle":
        entries = document.get("entry") or []
        if not isinstance(entries, list):
            yield InvalidRecord("Bundle.entry is not a list", line=1)
            return
        for index, entry in enumerate(entries):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if resource is None:
                yield InvalidRecord(f"Bundle.entry[{index}] has no resource")
                continue
            try:
                yield check_patient(resource, None, index)
            except InvalidRecord as error:
                yield InvalidRecord(
                    f"Bundle.entry[{index}]: {error.message}", record_id=error.record_id
                )
        return
    try:
        yield check_patient(document, 1)
    except InvalidRecord as error:
        yield error


@dataclass(frozen=True, slots=True)
class CsvMapping:
    """Which CSV column feeds which Patient element. Defaults fit OpenCR's benchmark CSV."""

    id: str = "rec_id"
    given: str = "given_name"
    family: str = "surname"
    gender: str = "sex"
    birth_date: str = "date_of_birth"
    phone: str = "phone_number"
    identifiers: Mapping[str, str] = field(
        default_factory=lambda: {
            "uganda_nin": "http://clientregistry.org/nationalid",
            "art_number": "http://clientregistry.org/artnumber",
        }
    )
    """column -> identifier system."""

    def with_overrides(self, pairs: Sequence[str]) -> CsvMapping:
        """Apply ``element=column`` overrides (``identifier:SYSTEM=column`` adds an identifier)."""
        values: dict[str, Any] = {
            "id": self.id,
            "given": self.given,
            "family": self.family,
            "gender": self.gender,
            "birth_date": self.birth_date,
            "phone": self.phone,
        }
        identifiers = dict(self.identifiers)
        for pair in pairs:
            element, sep, column = pair.partition("=")
            if not sep or not column:
                raise ValueError(f"column mapping {pair!r} is not ELEMENT=COLUMN")
            if element.startswith("identifier:"):
                identifiers[column] = element.removeprefix("identifier:")
            elif element.replace("-", "_") in values:
                values[element.replace("-", "_")] = column
            else:
                known = ", ".join([*values, "identifier:SYSTEM"])
                raise ValueError(f"unknown element {element!r} in {pair!r}; known: {known}")
        return CsvMapping(**values, identifiers=identifiers)


_GENDERS = {"m": "male", "male": "male", "f": "female", "female": "female", "o": "other"}
_GENDERS |= {"other": "other", "u": "unknown", "unknown": "unknown"}


def _csv_date(value: str) -> str | None:
    digits = value.replace("-", "").replace("/", "")
    if len(digits) == 8 and digits.isdigit() and "/" not in value:
        return parse_date(f"{digits[:4]}-{digits[4:6]}-{digits[6:]}")
    return parse_date(value) if FHIR_DATE.fullmatch(value) else None


def csv_patient(row: Mapping[str, str], mapping: CsvMapping, line: int) -> SourceRecord:
    """One CSV row as a FHIR Patient."""

    def cell(column: str) -> str:
        return (row.get(column) or "").strip()

    record_id = cell(mapping.id)
    if not record_id:
        raise InvalidRecord(f"no id in column {mapping.id!r}", line=line)
    patient: dict[str, Any] = {"resourceType": "Patient", "id": record_id}
    identifiers = [
        {"system": system, "value": cell(column)}
        for column, system in mapping.identifiers.items()
        if cell(column)
    ]
    if identifiers:
        patient["identifier"] = identifiers
    name: dict[str, Any] = {"use": "official"}
    if cell(mapping.family):
        name["family"] = cell(mapping.family)
    if cell(mapping.given):
        name["given"] = cell(mapping.given).split()
    if len(name) > 1:
        patient["name"] = [name]
    if cell(mapping.gender):
        gender = _GENDERS.get(cell(mapping.gender).lower())
        if gender is None:
            raise InvalidRecord(
                f"gender {cell(mapping.gender)!r} is not one of m, f, male, female, other, unknown",
                line=line,
                record_id=record_id,
            )
        patient["gender"] = gender
    if cell(mapping.birth_date):
        birth = _csv_date(cell(mapping.birth_date))
        if birth is None:
            raise InvalidRecord(
                f"date of birth {cell(mapping.birth_date)!r} is not a valid date",
                line=line,
                record_id=record_id,
            )
        patient["birthDate"] = birth
    if cell(mapping.phone):
        patient["telecom"] = [{"system": "phone", "value": cell(mapping.phone)}]
    return check_patient(patient, line)


def read_csv(path: Path, mapping: CsvMapping | None = None) -> Iterator[ReadResult]:
    """CSV with a header row; each row a Patient built by ``mapping``."""
    mapping = mapping or CsvMapping()
    with path.open(newline="", encoding="utf-8", errors="surrogateescape") as fh:
        reader = csv.DictReader(fh, skipinitialspace=True)
        header = reader.fieldnames or []
        if any(_NOT_UTF8.search(name) for name in header):
            yield InvalidRecord("header is not UTF-8 text; save the CSV as UTF-8", line=1)
            return
        if mapping.id not in header:
            yield InvalidRecord(
                f"no column {mapping.id!r} for the record id; columns are {', '.join(header)}",
                line=1,
            )
            return
        for row in reader:
            if any(
                _NOT_UTF8.search(value or "") for value in row.values() if isinstance(value, str)
            ):
                yield InvalidRecord(
                    "not UTF-8 text; save the CSV as UTF-8 and try again", line=reader.line_num
                )
                continue
            try:
                yield csv_patient(row, mapping, reader.line_num)
            except InvalidRecord as error:
                yield error


def read_patients(path: Path, mapping: CsvMapping | None = None) -> Iterator[ReadResult]:
    """Patients from ``path``, by its suffix: ``.csv``, ``.json`` (Bundle/Patient), else NDJSON."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv(path, mapping)
    if suffix == ".json":
        return read_json_document(path)
    return read_ndjson(path)
