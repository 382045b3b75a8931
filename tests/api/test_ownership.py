"""Issue #11 item 2: one identifier domain has one source — a submission never updates a record
another client system submitted, by any route (POST, ``PUT Patient/{id}``, the conditional
update, batch and transaction Bundles, ``$merge``'s ``result-patient``).

Configuration refuses two systems with one internal-id system (issue #16), so a record of the
caller's domain held by another system is made here the way it happens in a real registry: a
system that was renamed or replaced keeps its records. The test renames the owner of a record
in the database.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from standards import conditional_put, id_system, send

from clientregistry.store.models import SourceRecord


def foreign_record(server: Any, fhir: Any) -> tuple[str, str, str]:
    """A record of openmrs's identifier domain that another system ("legacy") submitted:
    (id, golden id, identifier value)."""
    value = fhir.token("legacy-")
    created = server.submit("openmrs", fhir.patient("openmrs", value))
    assert created.status_code == 201, created.text
    record_id, golden_id = fhir.ids(created)
    engine = server.engine()
    try:
        with engine.begin() as connection:
            connection.execute(
                update(SourceRecord)
                .where(SourceRecord.id == record_id)
                .values(client_system="legacy")
            )
    finally:
        engine.dispose()
    return record_id, golden_id, value


def unchanged(server: Any, fhir: Any, record_id: str) -> None:
    stored = server.read("hie", record_id).json()
    assert stored["meta"]["versionId"] == "1", stored
    assert [t["code"] for t in fhir.tags(stored) if t.get("system") == fhir.client_tag_system] == [
        "legacy"
    ]


def test_post_never_updates_another_systems_record(registry_server, fhir) -> None:
    record_id, _, value = foreign_record(registry_server, fhir)
    response = registry_server.submit("openmrs", fhir.patient("openmrs", value))
    body = fhir.outcome(response, 403, "forbidden")
    assert "another client system" in body["issue"][0]["diagnostics"]
    unchanged(registry_server, fhir, record_id)


def test_put_by_id_and_conditional_update_never_update_it(registry_server, fhir) -> None:
    record_id, _, value = foreign_record(registry_server, fhir)
    by_id = fhir.patient("openmrs", value, id=record_id)
    put = send(registry_server, "openmrs", "PUT", f"/fhir/Patient/{record_id}", by_id)
    fhir.outcome(put, 403, "forbidden")
    conditional = conditional_put(registry_server, "openmrs", fhir.patient("openmrs", value), value)
    fhir.outcome(conditional, 403, "forbidden")
    # nor by its id under a new identifier of the caller's (update as create): 409
    fresh = fhir.patient("openmrs", fhir.token(), id=record_id)
    taken = send(registry_server, "openmrs", "PUT", f"/fhir/Patient/{record_id}", fresh)
    fhir.outcome(taken, 409, "conflict", "Patient.id")
    unchanged(registry_server, fhir, record_id)


def test_bundles_never_update_it(registry_server, fhir) -> None:
    record_id, _, value = foreign_record(registry_server, fhir)
    entries = [
        {
            "resource": fhir.patient("openmrs", value),
            "request": {"method": "POST", "url": "Patient"},
        },
        {
            "resource": fhir.patient("openmrs", value),
            "request": {
                "method": "PUT",
                "url": f"Patient?identifier={id_system('openmrs')}|{value}",
            },
        },
    ]
    batch = {"resourceType": "Bundle", "type": "batch", "entry": entries}
    response = send(registry_server, "openmrs", "POST", "/fhir", batch)
    assert response.status_code == 200, response.text
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses == ["403 Forbidden", "403 Forbidden"]
    new = {"resource": fhir.patient("openmrs"), "request": {"method": "POST", "url": "Patient"}}
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [new, entries[0]]}
    refused = send(registry_server, "openmrs", "POST", "/fhir", transaction)
    fhir.outcome(refused, 403, "forbidden", "Bundle.entry[1].resource.identifier")
    unchanged(registry_server, fhir, record_id)


def test_merge_result_patient_never_updates_it(registry_server, fhir) -> None:
    record_id, _, value = foreign_record(registry_server, fhir)
    other = registry_server.submit("openmrs", fhir.patient("openmrs"))
    other_id, _ = fhir.ids(other)
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "source-patient", "valueReference": {"reference": f"Patient/{other_id}"}},
            {"name": "target-patient", "valueReference": {"reference": f"Patient/{record_id}"}},
            {"name": "result-patient", "resource": fhir.patient("openmrs", value, id=record_id)},
        ],
    }
    response = send(registry_server, "steward", "POST", "/fhir/Patient/$merge", body)
    fhir.outcome(response, 403, "forbidden")
    unchanged(registry_server, fhir, record_id)


def test_the_owner_still_updates_its_own_records(registry_server, fhir) -> None:
    value = fhir.token()
    created = registry_server.submit("dhis2", fhir.patient("dhis2", value))
    record_id, _ = fhir.ids(created)
    updated = registry_server.submit("dhis2", fhir.patient("dhis2", value))
    assert updated.status_code == 200, updated.text
    assert fhir.ids(updated)[0] == record_id
    assert updated.json()["meta"]["versionId"] == "2"
