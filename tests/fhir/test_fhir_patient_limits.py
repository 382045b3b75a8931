"""What FHIR allows but the registry refuses (fhir/patient.py): NUL characters, identifiers
longer than it stores, a birth date in the future."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from clientregistry.fhir.patient import MAX_IDENTIFIER_LENGTH, patient_issues

TODAY = date(2026, 12, 7)


def _patient(**fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "http://example.org/mrn", "value": "1"}],
        **fields,
    }


def _expressions(resource: dict[str, Any]) -> list[str]:
    return [e for issue in patient_issues(resource, today=TODAY) for e in issue.expression]


@pytest.mark.parametrize("birth", ["2026-12-08", "2027-01", "2027"])
def test_a_birth_date_after_today_is_refused(birth: str) -> None:
    assert _expressions(_patient(birthDate=birth)) == ["Patient.birthDate"]


@pytest.mark.parametrize("birth", ["2026-12-07", "2026-12", "2026", "1950-02-28"])
def test_a_birth_date_up_to_today_is_accepted(birth: str) -> None:
    assert _expressions(_patient(birthDate=birth)) == []


def test_identifiers_over_the_limit_are_refused_by_element() -> None:
    long = "x" * (MAX_IDENTIFIER_LENGTH + 1)
    fine = "y" * MAX_IDENTIFIER_LENGTH
    resource = _patient(
        identifier=[{"system": "urn:a", "value": fine}, {"system": long, "value": long}]
    )
    assert sorted(_expressions(resource)) == [
        "Patient.identifier[1].system",
        "Patient.identifier[1].value",
    ]


def test_a_nul_anywhere_is_refused_by_element() -> None:
    resource = _patient(name=[{"family": "Ab\x00c", "given": ["ok", "d\x00"]}])
    assert sorted(_expressions(resource)) == ["Patient.name[0].family", "Patient.name[0].given[1]"]
    assert _expressions(_patient(name=[{"family": "a\\u0000 as text"}])) == []
