"""Tests of reading Patients from NDJSON, Bundles, single Patients and CSV."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clientregistry.batch.readers import (
    CsvMapping,
    ReadResult,
    SourceRecord,
    check_patient,
    read_csv,
    read_json_document,
    read_ndjson,
    read_patients,
)
from clientregistry.errors import ClientRegistryError, InvalidRecord

NATIONAL_ID = "http://clientregistry.org/nationalid"
ART_NUMBER = "http://clientregistry.org/artnumber"
OPENCR_HEADER = "rec_id,sex,date_of_birth,given_name,surname,phone_number,uganda_nin,art_number"


def patient(record_id: str, **extra: object) -> dict[str, object]:
    return {"resourceType": "Patient", "id": record_id, **extra}


def split(results: list[ReadResult]) -> tuple[list[SourceRecord], list[InvalidRecord]]:
    good = [r for r in results if isinstance(r, SourceRecord)]
    bad = [r for r in results if isinstance(r, InvalidRecord)]
    assert len(good) + len(bad) == len(results)
    return good, bad


# --------------------------------------------------------------------------- NDJSON


@pytest.fixture
def mixed_ndjson(tmp_path: Path) -> Path:
    lines = [
        json.dumps(patient("good-1", birthDate="1990-01-02")),  # 1
        "this is not json",  # 2
        "",  # 3 blank: skipped silently
        "[1, 2, 3]",  # 4 a JSON array
        json.dumps({"resourceType": "Observation", "id": "obs-1"}),  # 5
        json.dumps({"resourceType": "Patient", "gender": "male"}),  # 6 no id
        json.dumps(patient("not a valid id!")),  # 7
        json.dumps(patient("bad-date", birthDate="1990-02-30")),  # 8
        "   ",  # 9 whitespace only: skipped silently
        json.dumps(patient("good-2", birthDate="1990-02")),  # 10
        json.dumps(patient("good-3", birthDate="1990")),  # 11
    ]
    path = tmp_path / "patients.ndjson"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_ndjson_good_and_bad_lines(mixed_ndjson: Path) -> None:
    good, bad = split(list(read_ndjson(mixed_ndjson)))

    assert [(r.line, r.record_id) for r in good] == [(1, "good-1"), (10, "good-2"), (11, "good-3")]
    assert good[0].resource == patient("good-1", birthDate="1990-01-02")

    assert [e.line for e in bad] == [2, 4, 5, 6, 7, 8]
    messages = {e.line: e.message for e in bad}
    assert messages[2].startswith("not JSON")
    assert "not a JSON object" in messages[4]
    assert "Observation" in messages[5]
    assert "Patient" in messages[5]
    assert "no id" in messages[6]
    assert "not a valid FHIR id" in messages[7]
    assert "'not a valid id!'" in messages[7]
    assert "1990-02-30" in messages[8]
    assert "not a valid date" in messages[8]
    # The bad date belongs to a Patient with a usable id: it is kept for the skipped list.
    assert next(e for e in bad if e.line == 8).record_id == "bad-date"


def test_invalid_record_is_a_client_registry_error_carrying_the_line() -> None:
    error = InvalidRecord("Patient has no id", line=7, record_id=None)
    assert isinstance(error, ClientRegistryError)
    assert str(error) == "line 7: Patient has no id"
    assert str(InvalidRecord("no line")) == "no line"


def test_read_patients_dispatches_on_suffix(mixed_ndjson: Path, tmp_path: Path) -> None:
    assert len(list(read_patients(mixed_ndjson))) == 9
    other = tmp_path / "patients.jsonl"
    other.write_text(json.dumps(patient("x")) + "\n", encoding="utf-8")
    assert [r.record_id for r in read_patients(other)] == ["x"]  # type: ignore[union-attr]


def test_empty_ndjson_yields_nothing(tmp_path: Path) -> None:
    path = tmp_path / "empty.ndjson"
    path.write_text("\n\n", encoding="utf-8")
    assert list(read_ndjson(path)) == []


@pytest.mark.parametrize(
    ("resource", "fragment"),
    [
        ("a string", "not a JSON object"),
        (None, "not a JSON object"),
        ({"id": "x"}, "resourceType is None"),
        ({"resourceType": "Patient", "id": ""}, "no id"),
        ({"resourceType": "Patient", "id": 12}, "no id"),
        (patient("x" * 65), "not a valid FHIR id"),
        (patient("a_b"), "not a valid FHIR id"),
        (patient("ok", birthDate=19900101), "not a valid date"),
        (patient("ok", birthDate="1990-13"), "not a valid date"),
        (patient("ok", birthDate="1990-1-2"), "not a valid date"),
        (patient("ok", birthDate="1990-02-29"), "not a valid date"),
        (patient("ok", birthDate="02/01/1990"), "not a valid date"),
    ],
)
def test_check_patient_rejects(resource: object, fragment: str) -> None:
    with pytest.raises(InvalidRecord) as info:
        check_patient(resource, 42)
    assert info.value.line == 42
    assert fragment in info.value.message


@pytest.mark.parametrize("birth", ["1992-02-29", "1990-12", "1990", None])
def test_check_patient_accepts_valid_and_partial_dates(birth: str | None) -> None:
    resource = patient("A-1.b") if birth is None else patient("A-1.b", birthDate=birth)
    record = check_patient(resource, 3)
    assert record == SourceRecord(3, "A-1.b", resource)


@pytest.mark.parametrize(
    "resource", [patient("a1\n"), patient("a1", birthDate="1990-01-02\n")], ids=["id", "date"]
)
def test_check_patient_rejects_trailing_newline(resource: dict[str, object]) -> None:
    with pytest.raises(InvalidRecord):
        check_patient(resource, 1)


# --------------------------------------------------------------------------- JSON documents

BUNDLE = {
    "resourceType": "Bundle",
    "type": "collection",
    "entry": [
        {"fullUrl": "urn:uuid:no-resource"},
        {"resource": patient("p1", birthDate="1974-12-25")},
        {"resource": patient("p2", birthDate="1974-02-30")},
        {"resource": {"resourceType": "Observation", "id": "o1"}},
        "not an object",
        {"resource": patient("p5", contained=[{"resourceType": "Organization", "id": "o"}])},
    ],
}


def test_bundle_entries(tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(BUNDLE, indent=2), encoding="utf-8")
    results = list(read_patients(path))
    assert len(results) == 6  # one result per entry, in order
    good, bad = split(results)
    assert [r.record_id for r in good] == ["p1", "p5"]
    assert good[0].resource == patient("p1", birthDate="1974-12-25")
    # Errors in a Bundle are located by entry index (in the message), not by a line.
    assert [e.message.split(" ", 1)[0].rstrip(":") for e in bad] == [
        "Bundle.entry[0]",
        "Bundle.entry[2]",
        "Bundle.entry[3]",
        "Bundle.entry[4]",
    ]
    assert "has no resource" in bad[0].message
    assert "birthDate '1974-02-30' is not a valid date" in bad[1].message
    assert bad[1].record_id == "p2"  # kept for the skipped list
    assert "Observation" in bad[2].message
    assert "has no resource" in bad[3].message


def test_bundle_without_entries_and_with_bad_entry_list(tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    path.write_text('{"resourceType": "Bundle", "type": "collection"}', encoding="utf-8")
    assert list(read_patients(path)) == []

    path.write_text('{"resourceType": "Bundle", "entry": {"resource": {}}}', encoding="utf-8")
    (error,) = list(read_patients(path))
    assert isinstance(error, InvalidRecord)
    assert error.line == 1
    assert "Bundle.entry is not a list" in error.message


def test_single_patient_document(tmp_path: Path) -> None:
    path = tmp_path / "patient.json"
    resource = patient("solo", gender="female", birthDate="1984-01-12")
    path.write_text(json.dumps(resource, indent=2), encoding="utf-8")
    assert list(read_patients(path)) == [SourceRecord(1, "solo", resource)]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{not json", "not JSON"),
        ('{"resourceType": "Observation", "id": "o"}', "Observation"),
        ('[{"resourceType": "Patient", "id": "p"}]', "not a JSON object"),
    ],
)
def test_bad_json_document(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "doc.json"
    path.write_text(text, encoding="utf-8")
    (error,) = list(read_json_document(path))
    assert isinstance(error, InvalidRecord)
    assert error.line == 1
    assert fragment in error.message


# --------------------------------------------------------------------------- CSV

OPENCR_ROWS = [
    "rec-2762-org, f,19671207, zuwena, acile, 712 300633,CF21927470OWMT, KMC-819708",
    "rec-2762-dup-0, f,19671207, zuwena, acile, 712 300633,, KMC-819708",
    "rec-1609-org, m,19270719, zuraika mary, akantambira,,CF68008770HZML,",
]


def write_csv(path: Path, rows: list[str], header: str = OPENCR_HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_csv_with_opencr_defaults(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "opencr.csv", OPENCR_ROWS)
    good, bad = split(list(read_patients(path)))
    assert bad == []
    assert [(r.line, r.record_id) for r in good] == [
        (2, "rec-2762-org"),
        (3, "rec-2762-dup-0"),
        (4, "rec-1609-org"),
    ]
    assert good[0].resource == {
        "resourceType": "Patient",
        "id": "rec-2762-org",
        "identifier": [
            {"system": NATIONAL_ID, "value": "CF21927470OWMT"},
            {"system": ART_NUMBER, "value": "KMC-819708"},
        ],
        "name": [{"use": "official", "family": "acile", "given": ["zuwena"]}],
        "gender": "female",
        "birthDate": "1967-12-07",
        "telecom": [{"system": "phone", "value": "712 300633"}],
    }
    # Empty cells are left out, not turned into empty values.
    assert good[1].resource["identifier"] == [{"system": ART_NUMBER, "value": "KMC-819708"}]
    third = good[2].resource
    assert third["gender"] == "male"
    assert third["name"] == [
        {"use": "official", "family": "akantambira", "given": ["zuraika", "mary"]}
    ]
    assert third["identifier"] == [{"system": NATIONAL_ID, "value": "CF68008770HZML"}]
    assert "telecom" not in third


def test_opencr_benchmark_csv_reads_cleanly(reference_dir: Path) -> None:
    path = reference_dir / "opencr" / "benchmark" / "uganda_data_v21_20201501.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    good, bad = split(list(read_csv(path)))
    # Nothing dropped silently: every one of the 5,000 rows is a record or an error. The file
    # carries deliberate typos in date_of_birth and sex ('19560 720', 'k'); those rows are
    # reported with their line (header = line 1) rather than read with the bad cell dropped.
    assert len(good) + len(bad) == 5000
    assert len(bad) == 55
    assert all(e.line is not None and 2 <= e.line <= 5001 for e in bad)
    assert all(e.record_id and e.record_id.startswith("rec-") for e in bad)
    assert {e.message.split(" ", 1)[0] for e in bad} == {"date", "gender"}
    assert bad[0].line == 78
    assert bad[0].message == "date of birth '19560 720' is not a valid date"
    first = good[0].resource
    assert first["id"] == "rec-2762-org"
    assert first["gender"] == "female"
    assert first["birthDate"] == "1967-12-07"
    systems = {i["system"] for r in good for i in r.resource.get("identifier", [])}
    assert systems == {NATIONAL_ID, ART_NUMBER}


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ("r1, f,19671307, zuwena, acile, 712 300633,CF1, KMC-1", "date of birth '19671307'"),
        ("r1, f,1967-02-30, zuwena, acile, 712 300633,CF1, KMC-1", "not a valid date"),
        ("r1, f,07/12/1967, zuwena, acile, 712 300633,CF1, KMC-1", "not a valid date"),
        ("r1, x,19671207, zuwena, acile, 712 300633,CF1, KMC-1", "gender 'x'"),
    ],
)
def test_csv_bad_cells_give_the_csv_line(tmp_path: Path, row: str, fragment: str) -> None:
    path = write_csv(tmp_path / "bad.csv", [OPENCR_ROWS[0], row, OPENCR_ROWS[2]])
    results = list(read_csv(path))
    good, bad = split(results)
    assert [r.line for r in good] == [2, 4]
    (error,) = bad
    assert error.line == 3
    assert error.record_id == "r1"
    assert fragment in error.message


def test_csv_accepts_iso_dates_and_long_gender_names(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "iso.csv",
        ["r1,Female,1967-12-07,a,b,,,", "r2,OTHER,1967-12,a,b,,,", "r3,,,a,b,,,"],
    )
    good, bad = split(list(read_csv(path)))
    assert bad == []
    assert good[0].resource["gender"] == "female"
    assert good[0].resource["birthDate"] == "1967-12-07"
    assert good[1].resource["gender"] == "other"
    assert good[1].resource["birthDate"] == "1967-12"
    assert "gender" not in good[2].resource
    assert "birthDate" not in good[2].resource


def test_csv_row_without_id(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "noid.csv", [" , f,19671207, zuwena, acile,,,"])
    (error,) = list(read_csv(path))
    assert isinstance(error, InvalidRecord)
    assert error.line == 2
    assert "no id in column 'rec_id'" in error.message


def test_csv_without_the_id_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "nocol.csv", ["1,f"], header="id,sex")
    (error,) = list(read_csv(path))
    assert isinstance(error, InvalidRecord)
    assert error.line == 1
    assert "no column 'rec_id'" in error.message
    assert "id, sex" in error.message


def test_csv_with_custom_mapping(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "custom.csv",
        ["p-1,Jane,Doe,F,1980-05-04,555 1234,NIN-9,zzz"],
        header="pid,first,last,gender,dob,tel,nin,ignored",
    )
    mapping = CsvMapping().with_overrides(
        [
            "id=pid",
            "given=first",
            "family=last",
            "gender=gender",
            "birth-date=dob",
            "phone=tel",
            "identifier:http://example.org/nin=nin",
        ]
    )
    (record,) = list(read_patients(path, mapping))
    assert isinstance(record, SourceRecord)
    assert record.record_id == "p-1"
    assert record.resource["name"] == [{"use": "official", "family": "Doe", "given": ["Jane"]}]
    assert record.resource["gender"] == "female"
    assert record.resource["birthDate"] == "1980-05-04"
    assert record.resource["telecom"] == [{"system": "phone", "value": "555 1234"}]
    # The default identifier columns are absent from this file; only the added one is used.
    assert record.resource["identifier"] == [{"system": "http://example.org/nin", "value": "NIN-9"}]


# --------------------------------------------------------------------------- CsvMapping


def test_csv_mapping_defaults_fit_opencr() -> None:
    mapping = CsvMapping()
    assert (mapping.id, mapping.given, mapping.family) == ("rec_id", "given_name", "surname")
    assert (mapping.gender, mapping.birth_date, mapping.phone) == (
        "sex",
        "date_of_birth",
        "phone_number",
    )
    assert dict(mapping.identifiers) == {"uganda_nin": NATIONAL_ID, "art_number": ART_NUMBER}


def test_csv_mapping_overrides() -> None:
    base = CsvMapping()
    mapping = base.with_overrides(
        ["given=first", "birth_date=dob", "identifier:http://example.org/ssn=ssn"]
    )
    assert mapping.given == "first"
    assert mapping.birth_date == "dob"
    assert mapping.family == "surname"
    assert dict(mapping.identifiers) == {
        "uganda_nin": NATIONAL_ID,
        "art_number": ART_NUMBER,
        "ssn": "http://example.org/ssn",
    }
    # The original is untouched, and no overrides is the same mapping.
    assert base.given == "given_name"
    assert "ssn" not in base.identifiers
    assert base.with_overrides([]) == base
    # A system may be re-pointed at a column already mapped to another system.
    repointed = base.with_overrides(["identifier:http://example.org/nin=uganda_nin"])
    assert repointed.identifiers["uganda_nin"] == "http://example.org/nin"


@pytest.mark.parametrize(
    ("pair", "fragment"),
    [
        ("given", "is not ELEMENT=COLUMN"),
        ("given=", "is not ELEMENT=COLUMN"),
        ("nickname=nick", "unknown element 'nickname'"),
        ("identifiers=x", "unknown element 'identifiers'"),
    ],
)
def test_csv_mapping_bad_overrides(pair: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        CsvMapping().with_overrides([pair])
    assert fragment in str(info.value)
    assert repr(pair) in str(info.value)


def test_csv_mapping_unknown_element_lists_the_known_ones() -> None:
    with pytest.raises(ValueError) as info:
        CsvMapping().with_overrides(["dob=x"])
    for known in ("id", "given", "family", "gender", "birth_date", "phone", "identifier:SYSTEM"):
        assert known in str(info.value)


# --------------------------------------------------------------------------- not UTF-8


def test_csv_not_utf8_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(f"{OPENCR_HEADER}\nr1, f,19671207, z\xe9na, acile,,,\n".encode("latin-1"))
    (error,) = list(read_csv(path))
    assert isinstance(error, InvalidRecord)
    assert "not UTF-8" in error.message
    assert error.line is not None


def test_json_document_not_utf8_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes('{"resourceType": "Patient", "id": "a", "gender": "f\xe9"}'.encode("latin-1"))
    (error,) = list(read_json_document(path))
    assert isinstance(error, InvalidRecord)
    assert "not UTF-8" in error.message


def test_ndjson_line_not_utf8_is_one_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "in.ndjson"
    path.write_bytes(
        json.dumps(patient("a")).encode()
        + b"\n"
        + '{"resourceType": "Patient", "id": "b", "gender": "f\xe9"}'.encode("latin-1")
        + b"\n"
        + json.dumps(patient("c")).encode()
        + b"\n"
    )
    good, bad = split(list(read_ndjson(path)))
    assert [r.record_id for r in good] == ["a", "c"]
    assert [e.line for e in bad] == [2]


def test_csv_not_utf8_late_in_the_file_drops_nothing_silently(tmp_path: Path) -> None:
    rows = [f"r{i}, f,19671207, name{i}, fam{i}, 712 {i:06d},CF{i}, KMC-{i}" for i in range(1000)]
    rows[699] = rows[699].replace("name699", "n\xe9me699")  # line 701 (the header is line 1)
    path = tmp_path / "late.csv"
    path.write_bytes(("\n".join([OPENCR_HEADER, *rows]) + "\n").encode("latin-1"))
    good, bad = split(list(read_csv(path)))
    assert [e.line for e in bad] == [701]
    assert len(good) + len(bad) == 1000
