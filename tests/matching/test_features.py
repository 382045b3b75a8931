"""Tests of feature extraction: one normalised value per FHIRPath slot."""

from __future__ import annotations

from typing import Any

import pytest

from clientregistry.matching.features import FeatureExtractor, is_empty
from clientregistry.matching.rules import DecisionRules, parse_rules

OWN = "http://clientregistry.org/openmrs"
NID = "http://clientregistry.org/nationalid"


def _rules(fields: dict[str, dict[str, Any]], **extra: Any) -> DecisionRules:
    rule_set = {
        "matchingType": "deterministic",
        "fields": fields,
        "potentialMatchThreshold": 1,
        "autoMatchThreshold": 1,
    }
    rule_set.update(extra)
    return parse_rules({"rules": [rule_set]})


def _features(
    fields: dict[str, dict[str, Any]],
    resource: dict[str, Any],
    record_id_systems: tuple[str, ...] = (),
    **extra: Any,
) -> dict[str, Any]:
    """Field name -> its feature value."""
    rules = _rules(fields, **extra)
    extractor = FeatureExtractor(rules, record_id_systems)
    values = extractor.extract(resource)
    assert len(values) == extractor.slot_count
    return {f.name: values[extractor.slot(f)] for f in rules.rule_sets[0].fields}


PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "identifier": [
        {"system": OWN, "value": "431211"},
        {"system": NID, "value": "CF-219 27"},
        {"system": "http://system1.org", "value": "12349", "period": {"start": "2001-05-06"}},
        {"value": "no-system"},
        {"system": "http://nothing.org"},
    ],
    "active": True,
    "name": [
        {"use": "official", "family": "Gideon", "given": ["Namaalwa", "Émmanuel"]},
        {"use": "nickname", "given": ["Nam"]},
    ],
    "telecom": [
        {"system": "phone", "value": "+256 774 232423"},
        {"system": "email", "value": "Nam@Example.org"},
    ],
    "gender": "Male",
    "birthDate": "1974-12-25",
    "multipleBirthInteger": 2,
    "address": [{"line": ["Plot 12", "Kampala Rd."], "city": "Kampala"}],
}


def test_values_are_normalised_and_joined_with_spaces() -> None:
    features = _features(
        {
            "given": {"algorithm": "exact", "fhirpath": "name.given"},
            "official": {"algorithm": "exact", "fhirpath": "name.where(use='official').given"},
            "family": {"algorithm": "exact", "fhirpath": "name.family"},
            "line": {"algorithm": "exact", "fhirpath": "address.line"},
            "phone": {"algorithm": "exact", "fhirpath": "telecom.where(system='phone').value"},
            "email": {"algorithm": "exact", "fhirpath": "telecom.where(system='email').value"},
            "birth": {"algorithm": "exact", "fhirpath": "birthDate"},
            "gender": {"algorithm": "exact", "fhirpath": "gender"},
            "active": {"algorithm": "exact", "fhirpath": "active"},
            "births": {"algorithm": "exact", "fhirpath": "multipleBirthInteger"},
            "missing": {"algorithm": "exact", "fhirpath": "deceasedDateTime"},
        },
        PATIENT,
    )
    assert features == {
        "given": "namaalwa emmanuel nam",
        "official": "namaalwa emmanuel",
        "family": "gideon",
        "line": "plot 12 kampala rd",
        "phone": "774232423",
        "email": "nam example org",  # text: punctuation becomes spaces
        "birth": "1974-12-25",
        "gender": "male",
        "active": "true",
        "births": "2",
        "missing": "",
    }


def test_value_type_can_be_declared() -> None:
    features = _features(
        {
            "email": {
                "algorithm": "exact",
                "fhirpath": "telecom.where(system='email').value",
                "valueType": "code",
            },
            "nid": {
                "algorithm": "exact",
                "fhirpath": f"identifier.where(system='{NID}').value",
            },
            "nidtext": {
                "algorithm": "exact",
                "fhirpath": f"identifier.where(system='{NID}').value",
                "valueType": "text",
            },
        },
        PATIENT,
    )
    assert features == {"email": "nam@example.org", "nid": "cf21927", "nidtext": "cf 219 27"}


def test_invalid_and_empty_values_are_dropped() -> None:
    resource = {
        "birthDate": "1974-02-30",
        "name": [{"given": ["", "  ", "Ann", "..."]}],
        "telecom": [
            {"system": "phone", "value": "n/a"},
            {"system": "phone", "value": "0772410233"},
        ],
    }
    features = _features(
        {
            "birth": {"algorithm": "exact", "fhirpath": "birthDate"},
            "given": {"algorithm": "exact", "fhirpath": "name.given"},
            "phone": {"algorithm": "exact", "fhirpath": "telecom.where(system='phone').value"},
        },
        resource,
    )
    assert features == {"birth": "", "given": "ann", "phone": "772410233"}


def test_complex_values_are_ignored() -> None:
    features = _features(
        {
            "name": {"algorithm": "exact", "fhirpath": "name"},
            "identifier": {"algorithm": "exact", "fhirpath": "identifier"},
            "mixed": {"algorithm": "exact", "fhirpath": "name.given | name"},
            "period": {"algorithm": "exact", "fhirpath": "identifier.period"},
        },
        PATIENT,
    )
    assert features == {
        "name": "",
        "identifier": "",
        "mixed": "namaalwa emmanuel nam",
        "period": "",
    }


def test_null_primitives_are_ignored() -> None:
    # FHIR JSON puts null in a primitive array when only an extension is present
    resource = {
        "name": [{"given": [None, "Ann"], "_given": [{"extension": []}, None]}],
        "birthDate": None,
    }
    features = _features(
        {
            "given": {"algorithm": "exact", "fhirpath": "name.given"},
            "birth": {"algorithm": "exact", "fhirpath": "birthDate"},
        },
        resource,
    )
    assert features == {"given": "ann", "birth": ""}


def test_record_id_identifiers_are_removed_before_evaluation() -> None:
    fields = {
        "all": {"algorithm": "exact", "fhirpath": "identifier.value"},
        "own": {"algorithm": "exact", "fhirpath": f"identifier.where(system='{OWN}').value"},
        "ids": {"algorithm": "shared-identifier", "fhirpath": "identifier"},
    }
    kept = _features(fields, PATIENT)
    assert kept["all"] == "431211 cf21927 12349 nosystem"
    assert kept["own"] == "431211"
    assert kept["ids"] == frozenset({f"{OWN}|431211", f"{NID}|cf21927", "http://system1.org|12349"})
    removed = _features(fields, PATIENT, record_id_systems=(OWN, "http://system1.org"))
    assert removed["all"] == "cf21927 nosystem"
    assert removed["own"] == ""
    assert removed["ids"] == frozenset({f"{NID}|cf21927"})


def test_record_id_removal_leaves_the_resource_alone() -> None:
    rules = _rules({"all": {"algorithm": "exact", "fhirpath": "identifier.value"}})
    extractor = FeatureExtractor(rules, [OWN])
    before = [dict(i) for i in PATIENT["identifier"]]
    stripped = extractor.without_record_ids(PATIENT)
    assert [i.get("system") for i in stripped["identifier"]] == [
        NID,
        "http://system1.org",
        None,
        "http://nothing.org",
    ]
    assert PATIENT["identifier"] == before  # not modified in place
    unchanged = {"identifier": [{"system": NID, "value": "1"}]}
    assert extractor.without_record_ids(unchanged) is unchanged
    assert FeatureExtractor(rules).without_record_ids(PATIENT) is PATIENT


def test_identifier_set_values() -> None:
    resource = {
        "identifier": [
            {"system": NID, "value": " CF-219 27 "},
            {"system": NID, "value": "cf21927"},  # the same once normalised
            {"system": "http://b.org", "value": "X/1"},
            {"system": "http://c.org", "value": "--"},  # nothing left
            {"value": "no system"},
            {"system": "http://d.org"},
            {"system": "http://e.org", "value": 5},  # not a string
            "junk",
        ]
    }
    (ids,) = _features(
        {"ids": {"algorithm": "shared-identifier", "fhirpath": "identifier"}}, resource
    ).values()
    assert ids == frozenset({f"{NID}|cf21927", "http://b.org|x1"})
    (none,) = _features(
        {"ids": {"algorithm": "shared-identifier", "fhirpath": "identifier"}}, {}
    ).values()
    assert none == frozenset()
    assert is_empty(none)
    assert is_empty("")
    assert not is_empty(ids)
    assert not is_empty("x")


def test_slots_are_shared_between_fields_and_filters() -> None:
    rules = parse_rules(
        {
            "rules": [
                {
                    "matchingType": "deterministic",
                    "fields": {
                        "g1": {"algorithm": "exact", "fhirpath": "name.given"},
                        "gender": {"algorithm": "exact", "fhirpath": "gender"},
                        "sound": {"algorithm": "phonetic", "fhirpath": "name.family"},
                    },
                    "filters": {"gender": {"fhirpath": "gender"}},
                    "potentialMatchThreshold": 1,
                    "autoMatchThreshold": 1,
                },
                {
                    "matchingType": "deterministic",
                    "fields": {
                        "g2": {
                            "algorithm": "jaro-winkler",
                            "threshold": 0.9,
                            "fhirpath": "name.given",
                        },
                        "ids": {"algorithm": "shared-identifier", "fhirpath": "identifier"},
                        "idtext": {"algorithm": "exact", "fhirpath": "identifier"},
                    },
                    "potentialMatchThreshold": 1,
                    "autoMatchThreshold": 1,
                },
            ]
        }
    )
    extractor = FeatureExtractor(rules)
    first, second = rules.rule_sets
    assert extractor.slot(first.fields[0]) == extractor.slot(second.fields[0])
    assert extractor.slot(first.fields[1]) == extractor.slot(first.filters[0])
    # the identifier set and the text of 'identifier' are different slots
    assert extractor.slot(second.fields[1]) != extractor.slot(second.fields[2])
    assert extractor.slot_count == 5
    assert sorted(extractor.slot_names()) == sorted(
        ["name.given", "gender", "name.family", "identifier", "identifier"]
    )
    features = extractor.extract(PATIENT)
    assert features[extractor.slot(first.phonetic_blocks[0])] == "gideon"


@pytest.mark.parametrize(
    ("fhirpath", "expected"),
    [
        ("name.first().given", "namaalwa emmanuel"),
        ("name.last().given", "nam"),
        ("name.given.first()", "namaalwa"),
        ("Patient.name.where(use='nickname').given", "nam"),  # through fhirpathpy
        ("name.where(use='official').given.count()", "2"),
    ],
)
def test_any_fhirpath_gives_features(fhirpath: str, expected: str) -> None:
    features = _features({"f": {"algorithm": "exact", "fhirpath": fhirpath}}, PATIENT)
    assert features == {"f": expected}
