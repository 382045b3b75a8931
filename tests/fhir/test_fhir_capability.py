"""The CapabilityStatement says exactly what it is told exists, and is valid FHIR."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from clientregistry.fhir.capability import capability_statement
from clientregistry.fhir.validation import validate_resource

WHEN = datetime(2024, 5, 1, tzinfo=UTC)


def full() -> dict[str, Any]:
    return capability_statement(
        "https://cr.example.org/fhir",
        "0.1.0",
        interactions=["read", "vread", "history-instance", "create", "update", "search-type"],
        system_interactions=["batch", "transaction"],
        search_params=["identifier", "_id"],
        search_includes=["Patient:link"],
        operations=["ihe-pix", "match"],
        conditional_update=True,
        date=WHEN,
        instantiates=["https://profiles.ihe.net/ITI/PIXm/CapabilityStatement/IHE.PIXm.Manager"],
    )


def test_full_statement_is_valid_r4() -> None:
    statement = full()
    CapabilityStatement.model_validate(statement)
    assert validate_resource(statement, CapabilityStatement, "CapabilityStatement") == []
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["kind"] == "instance"
    assert statement["date"] == "2024-05-01T00:00:00.000Z"
    assert "application/fhir+json" in statement["format"] and "json" in statement["format"]
    assert statement["implementation"]["url"] == "https://cr.example.org/fhir"
    assert statement["software"] == {"name": "clientregistry", "version": "0.1.0"}


def test_patient_resource_lists_what_exists() -> None:
    rest = full()["rest"][0]
    assert rest["mode"] == "server"
    assert [i["code"] for i in rest["interaction"]] == ["batch", "transaction"]
    (patient,) = rest["resource"]
    assert patient["type"] == "Patient"
    assert [i["code"] for i in patient["interaction"]] == [
        "read",
        "vread",
        "history-instance",
        "create",
        "update",
        "search-type",
    ]
    assert patient["conditionalUpdate"] is True
    assert patient["conditionalCreate"] is False
    assert patient["conditionalDelete"] == "not-supported"
    assert patient["readHistory"] is True
    assert patient["searchInclude"] == ["Patient:link"]
    assert patient["searchParam"] == [
        {
            "name": "identifier",
            "definition": "http://hl7.org/fhir/SearchParameter/Patient-identifier",
            "type": "token",
        },
        {
            "name": "_id",
            "definition": "http://hl7.org/fhir/SearchParameter/Resource-id",
            "type": "token",
        },
    ]
    assert [o["name"] for o in patient["operation"]] == ["ihe-pix", "match"]


def test_mutual_tls_security() -> None:
    security = full()["rest"][0]["security"]
    assert security["service"][0]["coding"] == [
        {
            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
            "code": "Certificates",
        }
    ]
    bare = capability_statement("https://x/fhir", "1", interactions=["read"], mutual_tls=False)
    assert "security" not in bare["rest"][0]


def test_minimal_statement_claims_nothing_more() -> None:
    statement = capability_statement("https://x/fhir", "1", interactions=["read"], date=WHEN)
    CapabilityStatement.model_validate(statement)
    assert validate_resource(statement, CapabilityStatement, "CapabilityStatement") == []
    rest = statement["rest"][0]
    assert "interaction" not in rest
    patient = rest["resource"][0]
    assert [i["code"] for i in patient["interaction"]] == ["read"]
    assert patient["readHistory"] is False and patient["conditionalUpdate"] is False
    assert "searchParam" not in patient and "operation" not in patient


@pytest.mark.parametrize(
    "kwargs",
    [
        {"interactions": ["read", "teleport"]},
        {"interactions": ["read"], "system_interactions": ["batch", "nap"]},
        {"interactions": ["search-type"], "search_params": ["shoe-size"]},
        {"interactions": ["read"], "search_params": ["identifier"]},
        {"interactions": ["read"], "operations": ["everything"]},
    ],
)
def test_unknown_capabilities_are_programming_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        capability_statement("https://x/fhir", "1", **kwargs)


def test_date_defaults_to_now() -> None:
    statement = capability_statement("https://x/fhir", "1", interactions=["read"])
    assert statement["date"].endswith("Z")
