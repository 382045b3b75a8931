"""$match grades and Bundles (:mod:`clientregistry.registry.person_match`) over the people of
:mod:`lookup_registry` (its docstring gives the weights the scores below add up).
"""

from __future__ import annotations

from typing import Any

import pytest
from lookup_registry import BASE, GOLDEN_CODE, Registry, patient, sys_uri

from clientregistry.fhir.errors import FhirError
from clientregistry.registry.person_match import MatchRequest, parse_match_request
from clientregistry.store.db import transaction
from clientregistry.store.models import BrokenMatch


def _zawadi(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "given": "Zawadi",
        "family": "Kiprotich",
        "birth": "1992-11-02",
        "gender": "female",
        "phone": "0700111222",
    }
    fields.update(changes)
    return patient("", "", **fields)


def test_match_certain(registry: Registry) -> None:
    [(golden, grade, score)] = registry.match(_zawadi())
    assert (golden, grade) == (registry.golden("zawadi"), "certain")
    assert 0.999 < score <= 1.0


def test_match_probable(registry: Registry) -> None:
    # given + family + gender, nothing else: 100 + 2.23 + 2.45 + 0.29 = 104.97
    [(golden, grade, score)] = registry.match(_zawadi(birth=None, phone=None))
    assert (golden, grade) == (registry.golden("zawadi"), "probable")
    assert score == pytest.approx(1 / (1 + 10**-1.9705), abs=1e-3)


def test_match_possible(registry: Registry) -> None:
    # given + family agree, gender disagrees: 100 + 2.23 + 2.45 − 1.22 = 103.46
    [(golden, grade, score)] = registry.match(_zawadi(birth=None, phone=None, gender="male"))
    assert (golden, grade) == (registry.golden("zawadi"), "possible")
    assert 0.5 <= score < 0.9


def test_match_certainly_not_by_a_conflicting_identifier(registry: Registry) -> None:
    # given + family agree, gender and national id disagree: 102.46, below potential
    baraka = patient("", "", "Baraka", "Mwangi", gender="female", nid="N-999")
    assert registry.match(baraka) == [(registry.golden("baraka"), "certainly-not", 0.0)]
    # without the national id: 103.46, a possible match
    without_id = patient("", "", "Baraka", "Mwangi", gender="female")
    assert [grade for _, grade, _ in registry.match(without_id)] == ["possible"]
    # below potential (names agree, birth date and gender do not: 102.16), no identifier
    # system in common: not a match, not returned
    unlike = _zawadi(birth="1950-01-01", gender="male", phone=None)
    assert registry.match(unlike) == []


def test_match_certainly_not_by_a_broken_match(registry: Registry) -> None:
    first = registry.submit(
        "chiku",
        "openmrs",
        patient("openmrs", "or1", "Chiku", "Achieng", birth="2001-01-01", gender="female"),
    )
    other = registry.submit(
        "imani",
        "openmrs",
        patient("openmrs", "os1", "Imani", "Otieno", birth="1999-09-09", gender="female"),
    )
    imani = {"given": "Imani", "family": "Otieno", "birth": "1999-09-09", "gender": "female"}
    assert registry.match(patient("openmrs", "or1", **imani))[0][:2] == (
        other.golden_id,
        "certain",
    )
    with transaction(registry.context.sessions) as session:
        session.add(BrokenMatch.pair(first.record_id, other.record_id))
    # The input is openmrs' record or1, known not to be Imani: certainly-not despite the score.
    assert registry.match(patient("openmrs", "or1", **imani)) == [
        (other.golden_id, "certainly-not", 0.0)
    ]
    # Anyone else with these demographics is Imani.
    assert registry.match(patient("openmrs", "elsewhere", **imani))[0][:2] == (
        other.golden_id,
        "certain",
    )


def test_match_results_are_ordered_and_graded(registry: Registry) -> None:
    neema = patient("", "", "Neema", "Wanjiru", birth="1988-08-08")
    found = registry.match(neema)
    assert {g for g, _, _ in found} == {registry.golden("neema-a"), registry.golden("neema-b")}
    assert [grade for _, grade, _ in found] == ["certain", "certain"]
    assert found[0][2] >= found[1][2]


def test_only_certain_matches_needs_exactly_one_certain_person(registry: Registry) -> None:
    neema = patient("", "", "Neema", "Wanjiru", birth="1988-08-08")
    assert registry.match(neema, only=True) == []
    assert registry.match(_zawadi(), only=True)[0][:2] == (registry.golden("zawadi"), "certain")
    assert registry.match(_zawadi(birth=None, phone=None), only=True) == []


def test_match_count_limits_results(registry: Registry) -> None:
    neema = patient("", "", "Neema", "Wanjiru", birth="1988-08-08")
    assert len(registry.match(neema, count=1)) == 1


def test_match_nothing_similar(registry: Registry) -> None:
    assert registry.match(patient("", "", "Nobody", "Atall", birth="1901-01-01")) == []
    assert registry.match({"resourceType": "Patient"}) == []


def test_match_bundle_for_a_point_of_service_caller(registry: Registry) -> None:
    bundle = registry.match_bundle(_zawadi(), demographics=False)
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "searchset"
    assert bundle["total"] == 1
    [entry] = bundle["entry"]
    resource = entry["resource"]
    assert resource["id"] == registry.golden("zawadi")
    assert entry["fullUrl"] == f"{BASE}/Patient/{registry.golden('zawadi')}"
    assert resource["meta"]["tag"][0]["code"] == GOLDEN_CODE
    assert resource["identifier"] == [{"system": sys_uri("lims"), "value": "lz1"}]
    assert not {"name", "birthDate", "gender", "telecom"} & set(resource)
    assert entry["search"]["mode"] == "match"
    assert entry["search"]["extension"] == [
        {"url": "http://hl7.org/fhir/StructureDefinition/match-grade", "valueCode": "certain"}
    ]
    assert 0 <= entry["search"]["score"] <= 1


def test_match_bundle_with_demographics(registry: Registry) -> None:
    bundle = registry.match_bundle(_zawadi(), demographics=True)
    [entry] = bundle["entry"]
    resource = entry["resource"]
    assert resource["id"] == registry.record("zawadi")
    assert resource["name"][0]["family"] == "Kiprotich"
    assert resource["link"] == [
        {"other": {"reference": f"Patient/{registry.golden('zawadi')}"}, "type": "refer"}
    ]


def test_match_bundle_empty(registry: Registry) -> None:
    bundle = registry.match_bundle(patient("", "", "Nobody", "Atall"), demographics=False)
    assert bundle["total"] == 0
    assert "entry" not in bundle


def test_parse_match_request() -> None:
    bare = patient("", "", "A", "B")
    assert parse_match_request(bare) == MatchRequest(bare)
    request = parse_match_request(
        {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "resource", "resource": bare},
                {"name": "onlyCertainMatches", "valueBoolean": True},
                {"name": "count", "valueInteger": 500},
            ],
        }
    )
    assert request == MatchRequest(bare, True, 100)


@pytest.mark.parametrize(
    ("body", "status", "expression"),
    [
        ({"resourceType": "Observation"}, 400, None),
        ({"resourceType": "Parameters"}, 400, "Parameters.parameter"),
        (
            {"resourceType": "Parameters", "parameter": [{"name": "count", "valueInteger": 3}]},
            400,
            "Parameters.parameter",
        ),
        (
            {
                "resourceType": "Parameters",
                "parameter": [{"name": "resource", "resource": {"resourceType": "Person"}}],
            },
            400,
            "Parameters.parameter[0].resource",
        ),
        (
            {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "resource", "resource": {"resourceType": "Patient", "gender": 3}}
                ],
            },
            400,
            None,
        ),
        (
            {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "resource", "resource": {"resourceType": "Patient"}},
                    {"name": "count", "valueInteger": 0},
                ],
            },
            400,
            "Parameters.parameter[1].valueInteger",
        ),
        (
            {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "resource", "resource": {"resourceType": "Patient"}},
                    {"name": "onlyCertainMatches", "valueString": "yes"},
                ],
            },
            400,
            "Parameters.parameter[1].valueBoolean",
        ),
        (
            {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "resource", "resource": {"resourceType": "Patient"}},
                    {"name": "threshold", "valueDecimal": 0.5},
                ],
            },
            400,
            "Parameters.parameter[1].name",
        ),
        (
            {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "resource", "resource": {"resourceType": "Patient"}},
                    {"name": "resource", "resource": {"resourceType": "Patient"}},
                ],
            },
            400,
            "Parameters.parameter[1]",
        ),
    ],
)
def test_parse_match_request_refuses(
    body: dict[str, Any], status: int, expression: str | None
) -> None:
    with pytest.raises(FhirError) as caught:
        parse_match_request(body)
    assert caught.value.status == status
    if expression is not None:
        assert expression in caught.value.expression
