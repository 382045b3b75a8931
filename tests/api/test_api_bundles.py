"""``POST /fhir`` with batch and transaction Bundles of Patients over HTTPS."""

from __future__ import annotations

import json

HEADERS = {"Content-Type": "application/fhir+json"}
CRUID_EXTENSION = "http://openclientregistry.org/fhir/StructureDefinition/cruid"


def post_entry(patient: dict) -> dict:
    return {"resource": patient, "request": {"method": "POST", "url": "Patient"}}


def conditional_entry(patient: dict, system: str, value: str) -> dict:
    url = f"Patient?identifier=http://clientregistry.org/{system}|{value}"
    return {"resource": patient, "request": {"method": "PUT", "url": url}}


def post_bundle(server, system: str, kind: str, entries: list[dict]):
    bundle = {"resourceType": "Bundle", "type": kind, "entry": entries}
    return server.client(system).post("/fhir", content=json.dumps(bundle), headers=HEADERS)


def conditional_put(server, system: str, patient: dict, value: str):
    return server.client(system).put(
        "/fhir/Patient",
        params={"identifier": f"http://clientregistry.org/{system}|{value}"},
        content=json.dumps(patient),
        headers=HEADERS,
    )


def header_array(response, name: str) -> list[str]:
    value = json.loads(response.headers[name])
    assert isinstance(value, list), value
    return value


def test_batch_processes_each_entry_on_its_own(registry_server, fhir) -> None:
    good = [fhir.patient("openmrs"), fhir.patient("openmrs")]
    bad = fhir.patient("openmrs", birthDate="1990-02-30")
    response = post_bundle(
        registry_server, "openmrs", "batch", [post_entry(p) for p in [*good, bad]]
    )
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "batch-response"
    entries = [e["response"] for e in bundle["entry"]]
    assert [e["status"].split()[0] for e in entries] == ["201", "201", "400"]

    outcome = entries[2]["outcome"]
    assert outcome["resourceType"] == "OperationOutcome"
    expressions = [x for issue in outcome["issue"] for x in issue.get("expression", [])]
    assert "Bundle.entry[2].resource.birthDate" in expressions
    assert "location" not in entries[2]

    locations = header_array(response, "Location")
    cruids = header_array(response, "LocationCRUID")
    assert len(locations) == len(cruids) == 2
    for entry, location, cruid in zip(entries[:2], locations, cruids, strict=True):
        assert entry["location"] == f"{location}/_history/1"
        assert entry["etag"] == 'W/"1"'
        assert entry["extension"] == [
            {"url": CRUID_EXTENSION, "valueReference": {"reference": cruid}}
        ]
        record = registry_server.read("hie", location).json()
        assert fhir.links(record, "refer") == [cruid]
    assert cruids[0] != cruids[1]  # two different people

    # the bad entry stored nothing
    value = bad["identifier"][0]["value"]
    fixed = fhir.patient("openmrs", value)
    assert conditional_put(registry_server, "openmrs", fixed, value).status_code == 201


def test_batch_entry_refused_for_permission_does_not_stop_the_others(registry_server, fhir) -> None:
    value = fhir.token()
    entries = [
        conditional_entry(fhir.patient("openmrs", value), "dhis2", value),
        post_entry(fhir.patient("openmrs")),
    ]
    response = post_bundle(registry_server, "openmrs", "batch", entries)
    assert response.status_code == 200, response.text
    statuses = [e["response"]["status"].split()[0] for e in response.json()["entry"]]
    assert statuses == ["403", "201"]
    assert response.json()["entry"][0]["response"]["outcome"]["issue"][0]["code"] == "forbidden"
    assert len(header_array(response, "Location")) == 1


def test_transaction_with_an_invalid_entry_stores_nothing(registry_server, fhir) -> None:
    first, second = fhir.patient("openmrs"), fhir.patient("openmrs")
    second_value = second["identifier"][0]["value"]
    bad = fhir.patient("openmrs", birthDate="1990-02-30")
    entries = [
        post_entry(first),
        conditional_entry(second, "openmrs", second_value),
        post_entry(bad),
    ]
    response = post_bundle(registry_server, "openmrs", "transaction", entries)
    fhir.outcome(response, 400, expression="Bundle.entry[2].resource.birthDate")
    assert "LocationCRUID" not in response.headers

    # none of the valid entries exists: a valid transaction creates them (201, not 200) ...
    again = post_bundle(registry_server, "openmrs", "transaction", [post_entry(first)])
    assert again.status_code == 200, again.text
    bundle = again.json()
    assert bundle["type"] == "transaction-response"
    assert [e["response"]["status"] for e in bundle["entry"]] == ["201 Created"]
    assert len(header_array(again, "Location")) == len(header_array(again, "LocationCRUID")) == 1
    # ... and so does a conditional update
    created = conditional_put(registry_server, "openmrs", second, second_value)
    assert created.status_code == 201, created.text


def test_transaction_failing_while_processing_is_rolled_back(registry_server, fhir) -> None:
    """The entries are valid FHIR, but the second is refused (another system's identifier):
    the first, already processed in the same database transaction, is undone."""
    first = fhir.patient("openmrs")
    value = fhir.token()
    entries = [
        post_entry(first),
        conditional_entry(fhir.patient("openmrs", value), "dhis2", value),
    ]
    response = post_bundle(registry_server, "openmrs", "transaction", entries)
    fhir.outcome(response, 403, "forbidden")
    assert registry_server.submit("openmrs", first).status_code == 201


def test_transaction_entries_match_each_other(registry_server, fhir) -> None:
    """Records of one person in one transaction end in one golden record."""
    person = fhir.person()
    entries = [
        post_entry(fhir.patient("openmrs", demographics=person)),
        post_entry(fhir.patient("openmrs", demographics=person)),
    ]
    response = post_bundle(registry_server, "openmrs", "transaction", entries)
    assert response.status_code == 200, response.text
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses == ["201 Created", "201 Created"]
    locations = header_array(response, "Location")
    cruids = header_array(response, "LocationCRUID")
    assert len(set(locations)) == 2
    assert len(set(cruids)) == 1
    golden = registry_server.read("openmrs", cruids[0]).json()
    assert set(fhir.links(golden, "seealso")) == set(locations)


def test_transaction_updates_by_identifier(registry_server, fhir) -> None:
    value = fhir.token()
    created = registry_server.submit("openmrs", fhir.patient("openmrs", value))
    record_id, _ = fhir.ids(created)
    patient = fhir.patient("openmrs", value)
    response = post_bundle(
        registry_server, "openmrs", "transaction", [conditional_entry(patient, "openmrs", value)]
    )
    assert response.status_code == 200, response.text
    entry = response.json()["entry"][0]["response"]
    assert entry["status"] == "200 OK"
    assert entry["location"] == f"Patient/{record_id}/_history/2"
    assert header_array(response, "Location") == [f"Patient/{record_id}"]


def test_bundle_needs_submit_permission(registry_server, fhir) -> None:
    response = post_bundle(registry_server, "hie", "batch", [post_entry(fhir.patient("hie"))])
    fhir.outcome(response, 403, "forbidden")


def test_bundle_of_another_type_is_refused(registry_server, fhir) -> None:
    response = post_bundle(registry_server, "openmrs", "collection", [])
    fhir.outcome(response, 400, expression="Bundle.type")


def test_transaction_entry_with_a_stale_if_match_is_refused(registry_server, fhir) -> None:
    value = fhir.token()
    created = registry_server.submit("openmrs", fhir.patient("openmrs", value))
    record_id, _ = fhir.ids(created)
    entry = conditional_entry(fhir.patient("openmrs", value), "openmrs", value)
    entry["request"]["ifMatch"] = 'W/"7"'
    response = post_bundle(registry_server, "openmrs", "transaction", [entry])
    assert response.status_code in (400, 412), response.text
    assert registry_server.read("hie", record_id).json()["meta"]["versionId"] == "1"


def test_a_large_transaction_holds_the_registry_while_ordinary_submissions_wait(
    registry_server, fhir
) -> None:
    """Above 16 entries a transaction takes one registry-wide lock instead of a lock per
    blocking key of each entry (PostgreSQL's lock table would not hold several such
    Bundles); it still matches its own entries, and everything commits."""
    person = fhir.person()
    entries = [post_entry(fhir.patient("openmrs", demographics=person)) for _ in range(3)]
    entries += [post_entry(fhir.patient("openmrs")) for _ in range(37)]
    response = post_bundle(registry_server, "openmrs", "transaction", entries)
    assert response.status_code == 200, response.text
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses == ["201 Created"] * 40
    cruids = header_array(response, "LocationCRUID")
    assert len(set(cruids[:3])) == 1  # one person, one golden record
    assert registry_server.submit("openmrs", fhir.patient("openmrs")).status_code == 201
