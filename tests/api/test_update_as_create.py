"""Issue #11 item 9: update as create with client-assigned ids, as HAPI (OpenCR's store)
allows and the OpenMRS client-registry module uses (``PUT Patient/{uuid}`` with the
identifier ``http://clientregistry.org/openmrs|<root>/<uuid>``); an id taken by another
system's record is 409 with a clear OperationOutcome."""

from __future__ import annotations

import uuid

from standards import conditional_put, id_system, send


def test_put_creates_a_record_with_the_client_id_as_openmrs_does(registry_server, fhir) -> None:
    patient_uuid = str(uuid.uuid4())
    patient = fhir.patient(
        "openmrs", f"{id_system('openmrs')}/{patient_uuid}", id=patient_uuid, active=True
    )
    created = send(registry_server, "openmrs", "PUT", f"/fhir/Patient/{patient_uuid}", patient)
    assert created.status_code == 201, created.text
    assert created.headers["Location"] == f"Patient/{patient_uuid}"
    assert created.json()["id"] == patient_uuid
    patient["gender"] = "other"
    updated = send(registry_server, "openmrs", "PUT", f"/fhir/Patient/{patient_uuid}", patient)
    assert updated.status_code == 200, updated.text
    assert updated.json()["meta"]["versionId"] == "2"
    assert registry_server.read("hie", patient_uuid).json()["gender"] == "other"


def test_an_id_another_system_holds_is_409(registry_server, fhir) -> None:
    theirs = registry_server.submit("dhis2", fhir.patient("dhis2"))
    taken, _ = fhir.ids(theirs)
    response = send(
        registry_server,
        "openmrs",
        "PUT",
        f"/fhir/Patient/{taken}",
        fhir.patient("openmrs", id=taken),
    )
    body = fhir.outcome(response, 409, "conflict", "Patient.id")
    assert "another client system" in body["issue"][0]["diagnostics"]
    # nothing was stored: the dhis2 record is untouched
    assert registry_server.read("hie", taken).json()["meta"]["versionId"] == "1"


def test_an_id_of_the_callers_other_record_is_409(registry_server, fhir) -> None:
    mine = registry_server.submit("openmrs", fhir.patient("openmrs"))
    taken, _ = fhir.ids(mine)
    response = send(
        registry_server,
        "openmrs",
        "PUT",
        f"/fhir/Patient/{taken}",
        fhir.patient("openmrs", id=taken),
    )
    body = fhir.outcome(response, 409, "conflict", "Patient.identifier")
    assert "identifier never changes" in body["issue"][0]["diagnostics"]


def test_a_conditional_update_creates_with_the_body_id(registry_server, fhir) -> None:
    value, wanted = fhir.token(), fhir.token("client-")
    created = conditional_put(
        registry_server, "openmrs", fhir.patient("openmrs", value, id=wanted), value
    )
    assert created.status_code == 201, created.text
    assert fhir.ids(created)[0] == wanted
    # once the record exists its id stays, whatever the body says (IHE's examples carry ids)
    again = conditional_put(
        registry_server, "openmrs", fhir.patient("openmrs", value, id="another-id"), value
    )
    assert again.status_code == 200, again.text
    assert fhir.ids(again)[0] == wanted
