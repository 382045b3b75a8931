"""parse_patient: every way a Patient body can be wrong, and the OpenCR demo patients."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from clientregistry.fhir.errors import FhirError
from clientregistry.fhir.operation_outcome import from_error
from clientregistry.fhir.patient import parse_patient

LIMIT = 64 * 1024


def body(resource: Any) -> bytes:
    return json.dumps(resource).encode()


def patient(**elements: Any) -> bytes:
    return body({"resourceType": "Patient", **elements})


def fail(raw: bytes, *, max_bytes: int = LIMIT) -> FhirError:
    with pytest.raises(FhirError) as info:
        parse_patient(raw, max_bytes=max_bytes)
    return info.value


def expressions(error: FhirError) -> set[str]:
    return {e for issue in error.issues for e in issue.expression}


def test_valid_patient_is_returned_exactly_as_sent() -> None:
    sent = {
        "resourceType": "Patient",
        "identifier": [{"system": "http://clientregistry.org/openmrs", "value": "1"}],
        "name": [{"family": "Gideon", "given": ["Namaalwa"]}],
        "gender": "male",
        "birthDate": "1974-12",
        "active": True,
        "multipleBirthInteger": 2,
        "extension": [{"url": "http://example.org/x", "valueDecimal": 1.50}],
    }
    assert parse_patient(body(sent), max_bytes=LIMIT) == sent


RICH_PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p-1.a",
    "meta": {
        "versionId": "1",
        "lastUpdated": "2024-01-01T10:00:00.123+03:00",
        "profile": ["https://profiles.ihe.net/ITI/PDQm/StructureDefinition/IHE.PDQm.Patient"],
        "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                      "code": "HTEST"}],
    },
    "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"},
    "contained": [{"resourceType": "Organization", "id": "org", "name": "Clinic"}],
    "extension": [
        {"url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
         "valueString": "Nakato"},
        {"url": "http://example.org/nested",
         "extension": [{"url": "a", "valueCodeableConcept": {"text": "x"}}]},
    ],
    "identifier": [
        {"use": "official", "type": {"coding": [{"system":
            "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
         "system": "urn:oid:1.2.3", "value": "42", "period": {"start": "2001-05-06"},
         "assigner": {"display": "test Org"}},
    ],
    "active": False,
    "name": [{"use": "maiden", "text": "Ann Kato", "family": "Kato", "given": ["Ann"],
              "prefix": ["Ms"], "period": {"end": "2010"}}],
    "telecom": [{"system": "email", "value": "a@example.org", "use": "work", "rank": 1}],
    "gender": "female",
    "birthDate": "1980",
    "deceasedBoolean": False,
    "address": [{"use": "home", "type": "both", "line": ["Plot 1"], "city": "Kampala",
                 "postalCode": "256", "country": "UG"}],
    "maritalStatus": {"coding": [{"system":
        "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M"}]},
    "multipleBirthBoolean": True,
    "photo": [{"contentType": "image/png", "url": "http://example.org/p.png",
               "data": "aGVsbG8=", "creation": "2020-01-01T00:00:00Z"}],
    "contact": [{"relationship": [{"text": "mother"}], "name": {"family": "Kato"},
                 "gender": "female", "organization": {"reference": "#org"}}],
    "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en"}]},
                       "preferred": True}],
    "generalPractitioner": [{"reference": "Practitioner/1"}],
    "managingOrganization": {"reference": "#org"},
    "link": [{"other": {"reference": "Patient/2"}, "type": "seealso"}],
}  # fmt: skip


def test_rich_valid_patient_has_no_false_alarms() -> None:
    assert parse_patient(body(RICH_PATIENT), max_bytes=LIMIT) == RICH_PATIENT


def test_primitive_extensions_and_null_twins_are_accepted() -> None:
    sent = {
        "resourceType": "Patient",
        "name": [
            {
                "given": ["Ann", None],
                "_given": [None, {"extension": [{"url": "http://e.org/x", "valueString": "y"}]}],
            }
        ],
        "_birthDate": {"extension": [{"url": "http://e.org/dt", "valueString": "unknown"}]},
    }
    assert parse_patient(body(sent), max_bytes=LIMIT) == sent


def test_body_over_the_limit_is_413() -> None:
    raw = patient(name=[{"family": "x" * 200}])
    error = fail(raw, max_bytes=100)
    assert (error.status, error.code) == (413, "too-costly")
    assert str(len(raw)) in error.diagnostics and "100" in error.diagnostics


@pytest.mark.parametrize(
    ("raw", "line", "column"),
    [
        (b'{"resourceType": "Patient",}', 1, 28),
        (b'{\n  "resourceType": "Patient"\n  "gender": "male"\n}', 3, 3),
    ],
)
def test_malformed_json_is_400_structure_with_line_and_column(
    raw: bytes, line: int, column: int
) -> None:
    error = fail(raw)
    assert (error.status, error.code) == (400, "structure")
    assert f"line {line}, column {column}" in error.diagnostics


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"", "empty"),
        (b"   ", "empty"),
        (b"\xff\xfe{}", "UTF-8"),
        (b'{"resourceType": "Patient", "gender": "male", "gender": "female"}', "more than once"),
        (b'{"resourceType": "Patient", "x": NaN}', "NaN"),
        (b"[]", "not an array"),
        (b'"Patient"', "not a string"),
    ],
)
def test_json_that_fhir_does_not_allow_is_400_structure(raw: bytes, words: str) -> None:
    error = fail(raw)
    assert (error.status, error.code) == (400, "structure")
    assert words in error.diagnostics


@pytest.mark.parametrize("depth", [40, 100_000])
def test_deep_nesting_is_refused_before_it_can_exhaust_the_stack(depth: int) -> None:
    nested = '{"url": "u", "extension": [' * depth + '{"url": "u", "valueString": "x"}'
    raw = '{"resourceType": "Patient", "extension": [' + nested + "]}" * depth + "]}"
    error = fail(raw.encode(), max_bytes=10_000_000)
    assert (error.status, error.code) == (400, "structure")
    assert "64 levels" in error.diagnostics


def test_byte_order_mark_is_tolerated() -> None:
    assert parse_patient(b"\xef\xbb\xbf" + patient(gender="male"), max_bytes=LIMIT)["gender"]


@pytest.mark.parametrize(
    ("resource", "words"),
    [
        ({"resourceType": "Observation"}, "resourceType 'Observation'"),
        ({"gender": "male"}, "no resourceType"),
        ({"resourceType": 7}, "not a string"),
    ],
)
def test_wrong_resource_type_is_400_invalid_naming_what_was_found(
    resource: dict[str, Any], words: str
) -> None:
    error = fail(body(resource))
    assert (error.status, error.code) == (400, "invalid")
    assert "Expected a Patient" in error.diagnostics and words in error.diagnostics


@pytest.mark.parametrize(
    ("elements", "expression", "issue_code", "words"),
    [
        ({"gender": "mail"}, "Patient.gender", "value", "male, female, other, unknown"),
        ({"birthDate": "1990-02-30"}, "Patient.birthDate", "value", "day value is outside"),
        ({"birthDate": "19900230"}, "Patient.birthDate", "value", "YYYY-MM-DD"),
        ({"birthDate": "1990-01-01T00:00:00"}, "Patient.birthDate", "value", "FHIR date"),
        ({"birthDate": 19900101}, "Patient.birthDate", "structure", "expected a string"),
        ({"deceasedDateTime": "2020-01-01T10:00:00"}, "Patient.deceasedDateTime", "value", "zone"),
        ({"foo": 1}, "Patient.foo", "structure", "unknown element 'foo'"),
        ({"fhir_comments": "x"}, "Patient.fhir_comments", "structure", "unknown element"),
        ({"birthDate__ext": {"id": "a"}}, "Patient.birthDate__ext", "structure", "unknown"),
        ({"active": "yes"}, "Patient.active", "structure", "true or false"),
        ({"multipleBirthInteger": "3"}, "Patient.multipleBirthInteger", "structure", "integer"),
        ({"gender": None}, "Patient.gender", "structure", "null"),
        ({"gender": ["male"]}, "Patient.gender", "structure", "single value"),
        ({"name": []}, "Patient.name", "structure", "empty arrays"),
        ({"name": {"family": "x"}}, "Patient.name", "structure", "expected an array"),
        ({"name": [{"given": "Ann"}]}, "Patient.name[0].given", "structure", "array"),
        ({"name": [{"given": ["Ann", None]}]}, "Patient.name[0].given[1]", "structure", "null"),
        ({"name": [{"family": ""}]}, "Patient.name[0].family", "value", "empty strings"),
        ({"telecom": [{}]}, "Patient.telecom[0]", "invariant", "ele-1"),
        ({"telecom": [{"system": "fax2"}]}, "Patient.telecom[0].system", "value", "phone"),
        ({"telecom": [{"value": "1", "rank": 0}]}, "Patient.telecom[0].rank", "value", "1"),
        ({"maritalStatus": "M"}, "Patient.maritalStatus", "structure", "expected an object"),
        ({"identifier": [{"value": 2}]}, "Patient.identifier[0].value", "structure", "string"),
        ({"link": [{"type": "refer"}]}, "Patient.link[0].other", "required", "'other'"),
        (
            {"link": [{"other": {"reference": "Patient/1"}, "type": "same"}]},
            "Patient.link[0].type",
            "value",
            "replaced-by",
        ),
        ({"id": "bad id!"}, "Patient.id", "value", "bad id!"),
        ({"meta": {"lastUpdated": "2020-01-01"}}, "Patient.meta.lastUpdated", "value", "instant"),
        ({"extension": [{"url": "http://e.org/x"}]}, "Patient.extension[0]", "invariant", "ext-1"),
        (
            {"extension": [{"url": "http://e.org/x", "valueString": "a", "valueBoolean": True}]},
            "Patient.extension[0]",
            "invariant",
            "valueBoolean, valueString",
        ),
        ({"contact": [{"gender": "male"}]}, "Patient.contact[0]", "invariant", "pat-1"),
        (
            {"deceasedBoolean": True, "deceasedDateTime": "2020"},
            "Patient",
            "invariant",
            "deceasedBoolean, deceasedDateTime",
        ),
        ({"contained": [{"resourceType": "Nope"}]}, "Patient.contained[0]", "structure", "Nope"),
        ({"contained": [{"resourceType": "Address"}]}, "Patient.contained[0]", "structure", "not"),
        ({"contained": [{"resourceType": "Resource"}]}, "Patient.contained[0]", "structure", "not"),
        (
            {"contained": [{"resourceType": "Organization", "name": "x", "foo": 1}]},
            "Patient.contained[0].foo",
            "structure",
            "unknown element",
        ),
    ],
)
def test_fhir_r4_violations_are_400_invalid_located_by_fhirpath(
    elements: dict[str, Any], expression: str, issue_code: str, words: str
) -> None:
    error = fail(patient(**elements))
    assert (error.status, error.code) == (400, "invalid")
    matching = [i for i in error.issues if expression in i.expression]
    assert matching, f"no issue at {expression}: {error.issues}"
    assert matching[0].code == issue_code
    assert words in matching[0].diagnostics
    assert matching[0].diagnostics.startswith(expression + ":")


def test_every_problem_is_reported_once() -> None:
    error = fail(patient(gender="mail", birthDate="1990-02-30", foo=1, active="yes"))
    assert expressions(error) == {
        "Patient.gender",
        "Patient.birthDate",
        "Patient.foo",
        "Patient.active",
    }
    assert len(error.issues) == 4
    assert "4 problems" in error.diagnostics


def test_error_becomes_an_operation_outcome() -> None:
    error = fail(patient(gender="mail"))
    outcome = from_error(error)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"] == [
        {
            "severity": "error",
            "code": "value",
            "diagnostics": "Patient.gender: 'mail' is not a valid code; use one of: male, "
            "female, other, unknown",
            "expression": ["Patient.gender"],
        }
    ]


def demo_files(reference_dir: Path) -> list[Path]:
    files = sorted((reference_dir / "opencr" / "DemoData").glob("*.json"))
    if not files:
        pytest.skip("OpenCR demo patients not found")
    return files


def test_opencr_demo_patients_parse(reference_dir: Path) -> None:
    for path in demo_files(reference_dir):
        raw = path.read_bytes()
        assert parse_patient(raw, max_bytes=LIMIT) == json.loads(raw), path.name


@pytest.mark.parametrize(
    ("extra", "where"),
    [
        (
            {"modifierExtension": [{"url": "http://x", "valueBoolean": True}]},
            "Patient.modifierExtension",
        ),
        ({"implicitRules": "http://example.org/rules"}, "Patient.implicitRules"),
        (
            {
                "contact": [
                    {
                        "name": {"family": "Z"},
                        "modifierExtension": [{"url": "http://y", "valueString": "z"}],
                    }
                ]
            },
            "Patient.contact[0].modifierExtension",
        ),
    ],
)
def test_modifier_extensions_and_implicit_rules_are_refused(extra: dict, where: str) -> None:
    """FHIR: a system must not take a resource whose meaning a modifier it does not know
    changes (and the PDQm Patient profile forbids both); plain extensions are fine."""
    body = json.dumps({"resourceType": "Patient", **extra}).encode()
    with pytest.raises(FhirError) as caught:
        parse_patient(body)
    assert caught.value.status == 400
    assert [(i.code, i.expression) for i in caught.value.issues] == [("extension", (where,))]
    fine = {"resourceType": "Patient", "extension": [{"url": "http://x", "valueString": "y"}]}
    assert parse_patient(json.dumps(fine).encode()) == fine
