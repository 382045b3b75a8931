"""The search tokens of a Patient (a pure function: what the ``search_token`` table holds)."""

from __future__ import annotations

from typing import Any

from clientregistry.registry.search_tokens import (
    MAX_VALUE,
    MOTHERS_MAIDEN_NAME,
    folded,
    search_tokens,
    string_values,
)

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "identifier": [
        {"system": "http://clientregistry.org/openmrs", "value": "om-1"},
        {"system": "http://example.org/national-id", "value": "CF 123"},
        {"value": "no-system"},
        {"system": "http://example.org/empty"},
    ],
    "name": [
        {"family": "Ñúñez", "given": ["José  María", "Ana"], "prefix": ["Dr"], "text": "J Ñ"},
        {"family": "Okello"},
    ],
    "telecom": [{"system": "phone", "value": "+256 772 000001"}, {"system": "email"}],
    "birthDate": "1980-05-17",
    "gender": "male",
    "address": [{"city": "Kampala", "postalCode": "256 KLA", "country": "UG"}],
    "extension": [{"url": MOTHERS_MAIDEN_NAME, "valueString": "Akello"}],
}


def test_tokens_of_a_patient() -> None:
    assert search_tokens(PATIENT) == [
        ("address-city", "kampala"),
        ("address-postalcode", "256 kla"),
        ("birthdate", "1980-05-17"),
        ("family", "nunez"),
        ("family", "okello"),
        ("given", "ana"),
        ("given", "jose maria"),
        ("identifier", "CF 123"),
        ("identifier", "no-system"),
        ("identifier", "om-1"),
        ("identifier-system", "http://clientregistry.org/openmrs"),
        ("identifier-system", "http://example.org/national-id"),
        ("name", "ana"),
        ("name", "dr"),
        ("name", "j n"),
        ("name", "jose maria"),
        ("name", "nunez"),
        ("name", "okello"),
        ("telecom", "+256 772 000001"),
    ]


def test_an_empty_patient_has_no_tokens() -> None:
    assert search_tokens({"resourceType": "Patient"}) == []


def test_malformed_values_are_skipped() -> None:
    patient = {
        "identifier": "not a list",
        "name": [{"family": 3, "given": [None, "Ok"]}, "text"],
        "telecom": [None],
        "birthDate": "17 May 1980",
    }
    assert search_tokens(patient) == [("given", "ok"), ("name", "ok")]


def test_partial_dates_and_date_times_keep_their_iso_form() -> None:
    assert search_tokens({"birthDate": "1980"}) == [("birthdate", "1980")]
    assert search_tokens({"birthDate": "1980-05"}) == [("birthdate", "1980-05")]
    assert search_tokens({"birthDate": "1980-05-17T10:00:00Z"}) == [("birthdate", "1980-05-17")]
    assert search_tokens({"birthDate": "1980-02-30"}) == []


def test_long_values_are_cut() -> None:
    tokens = search_tokens({"name": [{"family": "A" * 300}]})
    assert tokens == [("family", "a" * MAX_VALUE), ("name", "a" * MAX_VALUE)]


def test_duplicates_are_stored_once() -> None:
    patient = {"name": [{"family": "Okello", "given": ["Ann"]}, {"family": "OKELLO"}]}
    assert search_tokens(patient).count(("family", "okello")) == 1


def test_string_values_of_each_parameter() -> None:
    assert string_values(PATIENT, "family") == ["Ñúñez", "Okello"]
    assert string_values(PATIENT, "address-country") == ["UG"]
    assert string_values(PATIENT, "address") == ["Kampala", "256 KLA", "UG"]
    assert string_values(PATIENT, "mothersMaidenName") == ["Akello"]


def test_folding_matches_the_search_comparison() -> None:
    assert folded("  Ñúñez   de la  Cruz ") == "nunez de la cruz"
    assert folded("STRASSE") == "strasse"
