"""Source and golden records in OpenCR's shape; identifiers; what the registry strips."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fhir.resources.R4B.patient import Patient

from clientregistry.fhir import codes
from clientregistry.fhir.errors import FhirError
from clientregistry.fhir.patient import (
    check_patient,
    golden_record_resource,
    internal_identifier,
    require_id,
    require_internal_identifier,
    source_record_resource,
    strip_registry_elements,
)

WHEN = datetime(2024, 5, 1, 14, 30, 5, 123456, tzinfo=timezone(timedelta(hours=3)))
OPENMRS = "http://clientregistry.org/openmrs"
SYSTEMS = {OPENMRS, "http://clientregistry.org/dhis2"}


def submitted() -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": "client-side-id",
        "meta": {
            "versionId": "9",
            "lastUpdated": "2020-01-01T00:00:00Z",
            "profile": ["http://example.org/StructureDefinition/p"],
            "tag": [
                {"system": codes.CLIENT_ID_SYSTEM, "code": "spoofed"},
                codes.coding(codes.AUTOMATCH_TAG),
                codes.coding(codes.GOLDEN_RECORD_TAG),
                {"system": "http://example.org/tags", "code": "mine"},
            ],
        },
        "extension": [
            {"url": codes.BROKEN_MATCH_EXTENSION, "valueReference": {"reference": "Patient/x"}},
            {"url": "http://example.org/ext", "valueString": "kept"},
        ],
        "identifier": [{"system": OPENMRS, "value": "431211"}],
        "name": [{"family": "Gideon", "given": ["Namaalwa"]}],
        "gender": "male",
        "link": [{"other": {"reference": "Patient/g"}, "type": "refer"}],
    }


def valid(resource: dict[str, Any]) -> None:
    Patient.model_validate(resource)
    check_patient(resource)  # the stricter checks of this package too


def test_strip_removes_only_what_the_registry_owns() -> None:
    sent = submitted()
    before = copy.deepcopy(sent)
    out = strip_registry_elements(sent)
    assert sent == before, "the input must not change"
    assert "link" not in out
    assert out["meta"] == {
        "profile": ["http://example.org/StructureDefinition/p"],
        "tag": [{"system": "http://example.org/tags", "code": "mine"}],
    }
    assert out["extension"] == [{"url": "http://example.org/ext", "valueString": "kept"}]
    assert out["name"] == sent["name"] and out["id"] == "client-side-id"


def test_strip_drops_meta_and_extension_when_emptied() -> None:
    sent = {
        "resourceType": "Patient",
        "meta": {"versionId": "1", "tag": [codes.coding(codes.CONFLICT_MATCH_TAG)]},
        "extension": [
            {"url": codes.BROKEN_MATCH_EXTENSION, "valueReference": {"reference": "Patient/1"}}
        ],
        "gender": "female",
    }
    assert strip_registry_elements(sent) == {"resourceType": "Patient", "gender": "female"}


def test_source_record_has_opencr_shape() -> None:
    record = source_record_resource(
        submitted(),
        "src-1",
        3,
        WHEN,
        "openmrs",
        "OpenMRS",
        "gold-1",
        [codes.AUTOMATCH_TAG, codes.HUMAN_ADJUDICATION_TAG],
        broken_matches=["other-1", "Patient/other-2"],
    )
    assert list(record)[:3] == ["resourceType", "id", "meta"]
    assert record["id"] == "src-1"
    assert record["meta"]["versionId"] == "3"
    assert record["meta"]["lastUpdated"] == "2024-05-01T11:30:05.123Z"
    assert record["meta"]["profile"] == ["http://example.org/StructureDefinition/p"]
    assert record["meta"]["tag"] == [
        {
            "system": "http://openclientregistry.org/fhir/clientid",
            "code": "openmrs",
            "display": "OpenMRS",
        },
        {"system": "http://openclientregistry.org/fhir/automatch", "code": "autoMatches"},
        {
            "system": "http://openclientregistry.org/fhir/humanAdjudication",
            "code": "humanAdjudication",
        },
        {"system": "http://example.org/tags", "code": "mine"},
    ]
    assert record["link"] == [{"other": {"reference": "Patient/gold-1"}, "type": "refer"}]
    assert record["extension"] == [
        {"url": "http://example.org/ext", "valueString": "kept"},
        {
            "url": "http://clientregistry.org/brokenMatch",
            "valueReference": {"reference": "Patient/other-1"},
        },
        {
            "url": "http://clientregistry.org/brokenMatch",
            "valueReference": {"reference": "Patient/other-2"},
        },
    ]
    assert record["identifier"] == [{"system": OPENMRS, "value": "431211"}]
    valid(record)


def test_source_record_without_golden_or_tags() -> None:
    sent = {"resourceType": "Patient", "gender": "female"}
    record = source_record_resource(sent, "s", "1", WHEN, "lims", None, None)
    assert "link" not in record and "extension" not in record
    assert record["meta"]["tag"] == [{"system": codes.CLIENT_ID_SYSTEM, "code": "lims"}]
    valid(record)


@pytest.mark.parametrize(
    "tag",
    [codes.POTENTIAL_MATCH_TAG, codes.CONFLICT_MATCH_TAG],
)
def test_match_issue_tags(tag: Any) -> None:
    record = source_record_resource(submitted(), "s", 1, WHEN, "openmrs", None, "g", [tag])
    assert record["meta"]["tag"][1] == {
        "system": "http://openclientregistry.org/fhir/matchIssues",
        "code": tag["code"],
    }
    assert tag["code"] in ("potentialMatches", "conflictMatches")
    valid(record)


def test_golden_record_has_opencr_shape() -> None:
    record = golden_record_resource("gold-1", 2, WHEN, ["src-1", "Patient/src-2"])
    assert record == {
        "resourceType": "Patient",
        "id": "gold-1",
        "meta": {
            "versionId": "2",
            "lastUpdated": "2024-05-01T11:30:05.123Z",
            "tag": [{"code": "5c827da5-4858-4f3d-a50c-62ece001efea", "display": "Golden Record"}],
        },
        "active": True,
        "link": [
            {"other": {"reference": "Patient/src-1"}, "type": "seealso"},
            {"other": {"reference": "Patient/src-2"}, "type": "seealso"},
        ],
    }
    assert codes.is_golden_record(record)
    valid(record)


def test_emptied_golden_record_is_replaced_by() -> None:
    record = golden_record_resource("gold-1", 5, WHEN, [], replaced_by="gold-2")
    assert record["link"] == [{"other": {"reference": "Patient/gold-2"}, "type": "replaced-by"}]
    assert record["active"] is False  # PDQm: the subsumed Patient is inactive
    valid(record)
    bare = golden_record_resource("gold-3", 1, WHEN, [])
    assert "link" not in bare
    valid(bare)


def test_constants_are_read_only() -> None:
    with pytest.raises(TypeError):
        codes.GOLDEN_RECORD_TAG["code"] = "x"  # type: ignore[index]
    assert codes.is_golden_record(submitted())  # as a client might send it: stripped later
    assert not codes.is_golden_record(strip_registry_elements(submitted()))
    assert not codes.is_golden_record({"meta": "x"})


def test_instants_need_a_time_zone() -> None:
    with pytest.raises(ValueError, match="time-zone"):
        golden_record_resource("g", 1, datetime(2024, 1, 1), [])
    assert (
        golden_record_resource("g", 1, datetime(2024, 1, 1, tzinfo=UTC), [])["meta"]["lastUpdated"]
        == "2024-01-01T00:00:00.000Z"
    )


def test_internal_identifier() -> None:
    sent = submitted()
    assert internal_identifier(sent, SYSTEMS) == (OPENMRS, "431211")
    assert internal_identifier(sent, {"http://other"}) is None
    assert internal_identifier({"resourceType": "Patient"}, SYSTEMS) is None
    empty_value = {"identifier": [{"system": OPENMRS, "value": ""}, {"system": OPENMRS}]}
    assert internal_identifier(empty_value, SYSTEMS) is None
    same_twice = {"identifier": [{"system": OPENMRS, "value": "1"}] * 2}
    assert internal_identifier(same_twice, SYSTEMS) == (OPENMRS, "1")


def test_two_internal_identifiers_are_ambiguous() -> None:
    sent = {
        "identifier": [
            {"system": OPENMRS, "value": "1"},
            {"system": "http://clientregistry.org/dhis2", "value": "2"},
        ]
    }
    with pytest.raises(FhirError) as info:
        internal_identifier(sent, SYSTEMS)
    assert (info.value.status, info.value.code) == (422, "business-rule")
    assert info.value.expression == ["Patient.identifier"]


def test_missing_internal_identifier_is_422() -> None:
    with pytest.raises(FhirError) as info:
        require_internal_identifier({"identifier": [{"system": "http://x", "value": "1"}]}, SYSTEMS)
    error = info.value
    assert (error.status, error.code, error.expression) == (
        422,
        "business-rule",
        ["Patient.identifier"],
    )
    assert OPENMRS in error.diagnostics
    assert require_internal_identifier(submitted(), SYSTEMS) == (OPENMRS, "431211")


def test_require_id_for_put() -> None:
    require_id({"id": "a"}, "a")
    for sent in ({}, {"id": "b"}):
        with pytest.raises(FhirError) as info:
            require_id(sent, "a")
        assert (info.value.status, info.value.code, info.value.expression) == (
            400,
            "invalid",
            ["Patient.id"],
        )
