"""AuditEvents are valid FHIR R4, in UTC, with the IHE/DICOM codes."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from fhir.resources.R4B.auditevent import AuditEvent

from clientregistry.fhir.audit import QUERY, audit_event
from clientregistry.fhir.validation import validate_resource

LOCAL = datetime(2024, 5, 1, 15, 4, 5, 678000, tzinfo=timezone(timedelta(hours=3)))


def valid(event: dict[str, Any]) -> None:
    AuditEvent.model_validate(event)
    assert validate_resource(event, AuditEvent, "AuditEvent") == []


def test_identity_feed_event() -> None:
    event = audit_event(
        "C",
        "0",
        recorded=LOCAL,
        agent_name="openmrs",
        agent_is_user=False,
        source_address="10.1.2.3",
        entity_reference="Patient/src-1",
        event_type_code="ITI-104",
        detail={"cruid": "Patient/gold-1", "matched": 2},
    )
    valid(event)
    assert event["type"] == {
        "system": "http://dicom.nema.org/resources/ontology/DCM",
        "code": "110110",
        "display": "Patient Record",
    }
    assert event["subtype"] == [
        {
            "system": "urn:ihe:event-type-code",
            "code": "ITI-104",
            "display": "Patient Identity Feed FHIR",
        }
    ]
    assert event["recorded"] == "2024-05-01T12:04:05.678Z"  # UTC, 24-hour clock
    assert (event["action"], event["outcome"]) == ("C", "0")
    client, server = event["agent"]
    assert client["who"] == {"display": "openmrs"} and client["requestor"] is True
    assert client["type"]["coding"][0]["code"] == "110153"
    assert client["network"] == {"address": "10.1.2.3", "type": "2"}
    assert server["requestor"] is False and server["type"]["coding"][0]["code"] == "110152"
    (patient,) = event["entity"]
    assert patient["what"] == {"reference": "Patient/src-1"}
    assert patient["role"]["code"] == "1" and patient["type"]["code"] == "1"
    assert patient["detail"] == [
        {"type": "cruid", "valueString": "Patient/gold-1"},
        {"type": "matched", "valueString": "2"},
    ]


def test_user_read_with_restful_subtype() -> None:
    event = audit_event(
        "R",
        "4",
        recorded=LOCAL,
        agent_name="admin",
        agent_is_user=True,
        source_address="cr-admin.local",
        entity_reference="Patient/x",
        event_type_code="read",
        outcome_desc="not found",
        id="ae-1",
    )
    valid(event)
    assert event["subtype"] == [
        {"system": "http://terminology.hl7.org/CodeSystem/restful-interaction", "code": "read"}
    ]
    assert event["agent"][0]["type"]["coding"][0]["code"] == "humanuser"
    assert event["agent"][0]["network"] == {"address": "cr-admin.local", "type": "1"}
    assert event["outcomeDesc"] == "not found" and event["id"] == "ae-1"


def test_query_event_without_patient() -> None:
    event = audit_event(
        "E",
        "0",
        recorded=LOCAL,
        agent_name="dhis2",
        agent_is_user=False,
        source_address=None,
        entity_reference=None,
        event_type_code="ITI-83",
        event_type=QUERY,
        query=b"sourceIdentifier=http://x|1",
    )
    valid(event)
    assert event["type"]["code"] == "110112"
    assert "network" not in event["agent"][0]
    (query,) = event["entity"]
    assert query["role"]["code"] == "24"
    assert base64.b64decode(query["query"]) == b"sourceIdentifier=http://x|1"


@pytest.mark.parametrize(
    ("action", "outcome", "code"),
    [("X", "0", "read"), ("C", "1", "read"), ("C", "0", "ITI-999")],
)
def test_bad_codes_are_programming_errors(action: Any, outcome: Any, code: str) -> None:
    with pytest.raises(ValueError):
        audit_event(
            action,
            outcome,
            recorded=LOCAL,
            agent_name="a",
            agent_is_user=False,
            source_address=None,
            entity_reference=None,
            event_type_code=code,
        )


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError):
        audit_event(
            "C",
            "0",
            recorded=datetime(2024, 1, 1),
            agent_name="a",
            agent_is_user=False,
            source_address=None,
            entity_reference=None,
            event_type_code="create",
        )
