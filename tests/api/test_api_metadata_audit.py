"""``GET /fhir/metadata`` and the audit trail the API leaves in the store."""

from __future__ import annotations

import json

from sqlalchemy import select

from clientregistry.store.enums import AgentKind, AuditAction
from clientregistry.store.models import AuditEvent

HEADERS = {"Content-Type": "application/fhir+json"}


def test_capability_statement(registry_server) -> None:
    response = registry_server.client("openmrs").get("/fhir/metadata")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    statement = response.json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["kind"] == "instance"
    assert statement["status"] == "active"
    assert "application/fhir+json" in statement["format"]
    assert statement["implementation"]["url"] == f"{registry_server.base_url}/fhir"
    [rest] = statement["rest"]
    assert rest["mode"] == "server"
    [patient] = [r for r in rest["resource"] if r["type"] == "Patient"]
    interactions = {i["code"] for i in patient["interaction"]}
    assert {"create", "update", "read", "vread", "history-instance"} <= interactions
    assert "delete" not in interactions
    assert "search-type" in interactions  # PDQm search is served
    operations = {o["name"] for o in patient.get("operation", [])}
    assert {"ihe-pix", "match"} <= operations
    params = {p["name"] for p in patient.get("searchParam", [])}
    assert {"identifier", "family", "birthdate"} <= params
    assert patient["conditionalUpdate"] is True
    assert patient["updateCreate"] is True
    assert {i["code"] for i in rest["interaction"]} >= {"batch", "transaction"}
    services = [c["code"] for s in rest["security"]["service"] for c in s["coding"]]
    assert "Certificates" in services
    assert {r["type"] for r in rest["resource"]} == {"Patient"}


def audit_rows(server, entities: set[str]) -> list[AuditEvent]:
    engine = server.engine()
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(AuditEvent)
                .where(AuditEvent.entity.in_(sorted(entities)))
                .order_by(AuditEvent.id)
            ).all()
    finally:
        engine.dispose()
    return list(rows)


def test_requests_are_audited_with_agent_action_and_cruid(registry_server, fhir) -> None:
    value = fhir.token("audit-")
    person = fhir.person()
    created = registry_server.submit("openmrs", fhir.patient("openmrs", value, person))
    record_id, golden_id = fhir.ids(created)
    updated = registry_server.submit("openmrs", fhir.patient("openmrs", value, person))
    assert updated.status_code == 200
    other = registry_server.submit("dhis2", fhir.patient("dhis2", demographics=person))
    other_id, other_golden = fhir.ids(other)
    assert other_golden == golden_id
    assert registry_server.read("openmrs", golden_id).status_code == 200
    assert registry_server.read("hie", record_id).status_code == 200
    history = registry_server.client("hie").get(f"/fhir/Patient/{record_id}/_history")
    assert history.status_code == 200

    rows = audit_rows(
        registry_server, {f"Patient/{record_id}", f"Patient/{golden_id}", f"Patient/{other_id}"}
    )
    seen = [(r.agent, r.action, r.event_type, r.entity, r.outcome) for r in rows]
    assert seen == [
        ("openmrs", AuditAction.CREATE, "create", f"Patient/{record_id}", 0),
        ("openmrs", AuditAction.UPDATE, "update", f"Patient/{record_id}", 0),
        ("dhis2", AuditAction.CREATE, "create", f"Patient/{other_id}", 0),
        ("openmrs", AuditAction.READ, "read", f"Patient/{golden_id}", 0),
        ("hie", AuditAction.READ, "read", f"Patient/{record_id}", 0),
        ("hie", AuditAction.READ, "history-instance", f"Patient/{record_id}", 0),
    ]
    for row in rows:
        assert row.agent_kind is AgentKind.SYSTEM
        assert row.source_address == "127.0.0.1"
        assert (
            row.recorded.utcoffset() is not None and row.recorded.utcoffset().total_seconds() == 0
        )
        event = row.resource
        assert event["resourceType"] == "AuditEvent"
        assert event["action"] == row.action.value
        assert event["agent"][0]["who"]["display"] == row.agent
        assert event["recorded"].endswith("Z")
    writes = [r for r in rows if r.action is not AuditAction.READ]
    assert [r.detail["cruid"] for r in writes] == [golden_id] * 3
    assert [r.detail["match"] for r in writes] == ["none", "none", "auto"]
    assert writes[2].detail["score"] >= 105
    details = {d["type"]: d["valueString"] for d in writes[2].resource["entity"][0]["detail"]}
    assert details["cruid"] == golden_id


def test_bundle_entries_are_audited(registry_server, fhir) -> None:
    entries = [
        {"resource": fhir.patient("lims"), "request": {"method": "POST", "url": "Patient"}}
        for _ in range(2)
    ]
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": entries}
    response = registry_server.client("lims").post(
        "/fhir", content=json.dumps(bundle), headers=HEADERS
    )
    assert response.status_code == 200, response.text
    locations = json.loads(response.headers["Location"])
    cruids = json.loads(response.headers["LocationCRUID"])
    rows = audit_rows(registry_server, set(locations))
    assert sorted((r.entity, r.agent, r.action, r.detail["cruid"]) for r in rows) == sorted(
        (loc, "lims", AuditAction.CREATE, cruid.removeprefix("Patient/"))
        for loc, cruid in zip(locations, cruids, strict=True)
    )


def test_version_reads_are_audited(registry_server, fhir) -> None:
    created = registry_server.submit("openmrs", fhir.patient("openmrs"))
    record_id, _ = fhir.ids(created)
    response = registry_server.client("hie").get(f"/fhir/Patient/{record_id}/_history/1")
    assert response.status_code == 200
    rows = audit_rows(registry_server, {f"Patient/{record_id}"})
    assert [(r.agent, r.action) for r in rows] == [
        ("openmrs", AuditAction.CREATE),
        ("hie", AuditAction.READ),
    ]


def test_refused_reads_are_audited(registry_server, fhir) -> None:
    created = registry_server.submit("dhis2", fhir.patient("dhis2"))
    record_id, _ = fhir.ids(created)
    # kiosk may submit and read its own records, not other systems'
    fhir.outcome(registry_server.read("kiosk", record_id), 403, "forbidden")
    rows = audit_rows(registry_server, {f"Patient/{record_id}"})
    refused = [r for r in rows if r.agent == "kiosk"]
    assert len(refused) == 1
    assert refused[0].action is AuditAction.READ
    assert refused[0].outcome != 0
