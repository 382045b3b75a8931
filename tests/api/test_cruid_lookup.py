"""Issue #11 item 4: OpenCR's CRUID look-up with the default configuration.

``GET /fhir/Patient?identifier=SYSTEM|VALUE&_include=Patient:link`` from a point-of-service
system that may not read demographics (the default permissions: submit, read-identifiers)
answers the record and its golden record with ids, identifiers, links and tags only — never a
403, never a name, date, address or phone. So does ``GET /fhir/Patient/{id}`` of its own
record (and of others'). A system that may only submit still reads its own records that way.
"""

from __future__ import annotations

import json
from typing import Any

from standards import id_system

DEMOGRAPHICS = {"name", "birthDate", "gender", "telecom", "address", "extension", "contact"}
ALLOWED = {"resourceType", "id", "meta", "identifier", "active", "link"}


def no_demographics(resource: dict[str, Any], fhir: Any, person: dict[str, Any]) -> None:
    assert set(resource) <= ALLOWED, resource
    text = json.dumps(resource)
    for value in (person["name"][0]["family"], person["birthDate"], person["telecom"][0]["value"]):
        assert value not in text, (value, resource)


def test_opencr_cruid_lookup_by_a_point_of_service_system(registry_server, fhir) -> None:
    person = fhir.person()
    value = fhir.token()
    created = registry_server.submit("openmrs", fhir.patient("openmrs", value, person))
    record_id, golden_id = fhir.ids(created)
    for system in ("openmrs", "dhis2"):  # its own record, and another system's
        response = registry_server.client(system).get(
            "/fhir/Patient",
            params={"identifier": f"{id_system('openmrs')}|{value}", "_include": "Patient:link"},
        )
        assert response.status_code == 200, response.text
        bundle = response.json()
        modes = [(e["search"]["mode"], e["resource"]["id"]) for e in bundle["entry"]]
        assert modes == [("match", record_id), ("include", golden_id)]
        source, golden = (e["resource"] for e in bundle["entry"])
        no_demographics(source, fhir, person)
        assert source["identifier"] == [{"system": id_system("openmrs"), "value": value}]
        assert fhir.links(source, "refer") == [f"Patient/{golden_id}"]
        tags = {t["code"] for t in fhir.tags(source)}
        assert {"openmrs", "SUBSETTED"} <= tags
        assert fhir.golden_code in {t["code"] for t in fhir.tags(golden)}
        assert fhir.links(golden, "seealso") == [f"Patient/{record_id}"]
        no_demographics(golden, fhir, person)


def test_a_point_of_service_system_reads_records_without_demographics(
    registry_server, fhir
) -> None:
    person = fhir.person()
    created = registry_server.submit("openmrs", fhir.patient("openmrs", demographics=person))
    record_id, golden_id = fhir.ids(created)
    for system in ("openmrs", "lims"):
        response = registry_server.read(system, record_id)
        assert response.status_code == 200, response.text
        no_demographics(response.json(), fhir, person)
        assert response.json()["link"][0]["other"]["reference"] == f"Patient/{golden_id}"
    full = registry_server.read("hie", record_id).json()  # read-demographics: everything
    assert full["name"] == person["name"]


def test_a_submit_only_system_reads_its_own_records_only(registry_server, fhir) -> None:
    person = fhir.person()
    own = registry_server.submit("kiosk", fhir.patient("kiosk", demographics=person))
    assert own.status_code == 201, own.text
    own_id, _ = fhir.ids(own)
    mine = registry_server.read("kiosk", own_id)
    assert mine.status_code == 200, mine.text
    no_demographics(mine.json(), fhir, person)
    theirs = registry_server.submit("dhis2", fhir.patient("dhis2"))
    fhir.outcome(registry_server.read("kiosk", fhir.ids(theirs)[0]), 403, "forbidden")
    search = registry_server.client("kiosk").get("/fhir/Patient", params={"_id": own_id})
    fhir.outcome(search, 403, "forbidden")


def test_demographic_searches_stay_refused(registry_server, fhir) -> None:
    person = fhir.person()
    registry_server.submit("openmrs", fhir.patient("openmrs", demographics=person))
    family = person["name"][0]["family"]
    for params in ({"family": family}, {"birthdate": person["birthDate"]}, {"name": family}):
        response = registry_server.client("openmrs").get("/fhir/Patient", params=params)
        body = fhir.outcome(response, 403, "forbidden")
        assert family not in json.dumps(body)


def test_the_lookup_by_id_and_golden_records(registry_server, fhir) -> None:
    person = fhir.person()
    created = registry_server.submit("lims", fhir.patient("lims", demographics=person))
    record_id, golden_id = fhir.ids(created)
    response = registry_server.client("openmrs").get(
        "/fhir/Patient", params={"_id": f"{record_id},{golden_id}"}
    )
    assert response.status_code == 200, response.text
    resources = {e["resource"]["id"]: e["resource"] for e in response.json()["entry"]}
    assert set(resources) == {record_id, golden_id}
    for resource in resources.values():
        no_demographics(resource, fhir, person)
