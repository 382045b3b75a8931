"""Issue #11 item 11: ``Prefer: return=minimal | representation | OperationOutcome`` on
create and update; ``Location`` keeps OpenCR's form, ``Content-Location`` carries the
absolute versioned URL."""

from __future__ import annotations

from standards import send


def create(server, fhir, prefer: str | None, value: str | None = None):
    headers = {"Prefer": prefer} if prefer else None
    return send(
        server, "openmrs", "POST", "/fhir/Patient", fhir.patient("openmrs", value), headers=headers
    )


def test_representation_is_the_default(registry_server, fhir) -> None:
    for prefer in (None, "return=representation"):
        response = create(registry_server, fhir, prefer)
        assert response.status_code == 201, response.text
        assert response.json()["resourceType"] == "Patient"


def test_minimal_has_no_body_but_every_header(registry_server, fhir) -> None:
    response = create(registry_server, fhir, "return=minimal")
    assert response.status_code == 201, response.text
    assert response.content == b""
    record_id, golden_id = fhir.ids(response)
    base = f"{registry_server.base_url}/fhir"
    assert response.headers["Location"] == f"Patient/{record_id}"  # OpenCR's form
    assert response.headers["LocationCRUID"] == f"Patient/{golden_id}"
    assert response.headers["Content-Location"] == f"{base}/Patient/{record_id}/_history/1"
    assert response.headers["ETag"] == 'W/"1"'


def test_operation_outcome_on_create_and_update(registry_server, fhir) -> None:
    value = fhir.token()
    created = create(registry_server, fhir, "return=OperationOutcome", value)
    assert created.status_code == 201, created.text
    record_id, golden_id = fhir.ids(created)
    outcome = created.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "information"
    assert f"Patient/{record_id}" in outcome["issue"][0]["diagnostics"]
    assert f"Patient/{golden_id}" in outcome["issue"][0]["diagnostics"]
    updated = create(registry_server, fhir, "handling=strict, return=OperationOutcome", value)
    assert updated.status_code == 200, updated.text
    assert updated.json()["resourceType"] == "OperationOutcome"
    assert updated.headers["Content-Location"].endswith(f"/Patient/{record_id}/_history/2")


def test_an_unknown_return_preference_is_400(registry_server, fhir) -> None:
    fhir.outcome(create(registry_server, fhir, "return=everything"), 400)


def test_bundle_entries_follow_prefer(registry_server, fhir) -> None:
    entry = {"resource": fhir.patient("openmrs"), "request": {"method": "POST", "url": "Patient"}}
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [entry]}
    plain = send(registry_server, "openmrs", "POST", "/fhir", bundle).json()["entry"][0]
    assert set(plain) == {"response"}
    entry["resource"] = fhir.patient("openmrs")
    full = send(
        registry_server,
        "openmrs",
        "POST",
        "/fhir",
        bundle,
        headers={"Prefer": "return=representation"},
    ).json()["entry"][0]
    record_id = full["resource"]["id"]
    assert full["fullUrl"] == f"{registry_server.base_url}/fhir/Patient/{record_id}"
    entry["resource"] = fhir.patient("openmrs")
    said = send(
        registry_server,
        "openmrs",
        "POST",
        "/fhir",
        bundle,
        headers={"Prefer": "return=OperationOutcome"},
    ).json()["entry"][0]
    assert said["response"]["outcome"]["resourceType"] == "OperationOutcome"
