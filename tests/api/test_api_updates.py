"""Updates over HTTPS: re-matching on update (``replaced-by``), ``PUT Patient/{id}`` and the
conditional update ``PUT Patient?identifier=system|value`` (IHE PMIR ITI-104)."""

from __future__ import annotations

import json

HEADERS = {"Content-Type": "application/fhir+json"}


def put(server, system: str, url: str, patient: dict, **params: str):
    return server.client(system).put(
        url, content=json.dumps(patient), headers=HEADERS, params=params or None
    )


# ----------------------------------------------------------------------------- re-matching


def test_update_that_rematches_retires_the_emptied_golden_record(registry_server, fhir) -> None:
    person_a = fhir.person()
    a = registry_server.submit("openmrs", fhir.patient("openmrs", demographics=person_a))
    assert a.status_code == 201, a.text
    a_id, a_golden = fhir.ids(a)
    b_value = fhir.token("b-")
    b = registry_server.submit("dhis2", fhir.patient("dhis2", b_value))
    assert b.status_code == 201, b.text
    b_id, b_golden = fhir.ids(b)
    assert b_golden != a_golden

    # dhis2 corrects B: it is A after all
    updated = registry_server.submit("dhis2", fhir.patient("dhis2", b_value, person_a))
    assert updated.status_code == 200, updated.text
    assert fhir.ids(updated) == (b_id, a_golden)
    body = updated.json()
    assert body["meta"]["versionId"] == "2"
    assert fhir.links(body, "refer") == [f"Patient/{a_golden}"]
    assert "autoMatches" in {t["code"] for t in fhir.tags(body)}

    old = registry_server.read("openmrs", b_golden)
    assert old.status_code == 200, old.text
    retired = old.json()
    assert {"code": fhir.golden_code, "display": "Golden Record"} in fhir.tags(retired)
    assert retired["link"] == [
        {"other": {"reference": f"Patient/{a_golden}"}, "type": "replaced-by"}
    ]
    assert int(retired["meta"]["versionId"]) >= 2

    survivor = registry_server.read("openmrs", a_golden).json()
    assert set(fhir.links(survivor, "seealso")) == {f"Patient/{a_id}", f"Patient/{b_id}"}
    assert fhir.links(survivor, "replaced-by") == []


def test_update_of_a_lone_record_keeps_its_golden_record(registry_server, fhir) -> None:
    value = fhir.token()
    first = registry_server.submit("openmrs", fhir.patient("openmrs", value))
    record_id, golden_id = fhir.ids(first)
    second = registry_server.submit("openmrs", fhir.patient("openmrs", value))  # a new person
    assert second.status_code == 200, second.text
    assert fhir.ids(second) == (record_id, golden_id)
    golden = registry_server.read("openmrs", golden_id).json()
    assert golden["link"] == [{"other": {"reference": f"Patient/{record_id}"}, "type": "seealso"}]


def test_update_replaces_the_record_instead_of_merging(registry_server, fhir) -> None:
    value = fhir.token()
    person = fhir.person()
    extra = {"system": "http://example.org/national-id", "value": fhir.token()}
    first = fhir.patient("openmrs", value, person)
    first["identifier"].append(extra)
    first["address"] = [{"city": "Kampala"}]
    created = registry_server.submit("openmrs", first)
    record_id, _ = fhir.ids(created)
    second = fhir.patient("openmrs", value, person)
    assert registry_server.submit("openmrs", second).status_code == 200
    stored = registry_server.read("hie", record_id).json()
    assert stored["identifier"] == second["identifier"]
    assert "address" not in stored


# ----------------------------------------------------------------------------- PUT Patient/{id}


def test_put_by_id_creates_then_updates(registry_server, fhir) -> None:
    record_id = fhir.token("om-")
    value = fhir.token()
    patient = fhir.patient("openmrs", value, id=record_id)
    created = put(registry_server, "openmrs", f"/fhir/Patient/{record_id}", patient)
    assert created.status_code == 201, created.text
    assert created.headers["Location"] == f"Patient/{record_id}"
    _, golden_id = fhir.ids(created)
    assert created.json()["id"] == record_id
    assert created.json()["meta"]["versionId"] == "1"

    patient["telecom"] = [{"system": "phone", "value": "0700000001"}]
    updated = put(registry_server, "openmrs", f"/fhir/Patient/{record_id}", patient)
    assert updated.status_code == 200, updated.text
    assert fhir.ids(updated) == (record_id, golden_id)
    assert updated.json()["meta"]["versionId"] == "2"
    assert updated.headers["ETag"] == 'W/"2"'
    stored = registry_server.read("hie", record_id).json()
    assert stored["telecom"] == patient["telecom"]

    # the POST route finds the same record by the identifier
    again = registry_server.submit("openmrs", fhir.patient("openmrs", value, id=record_id))
    assert again.status_code == 200, again.text
    assert fhir.ids(again)[0] == record_id


def test_put_by_id_needs_the_same_id_in_the_body(registry_server, fhir) -> None:
    record_id = fhir.token("om-")
    value = fhir.token()
    missing = put(registry_server, "openmrs", f"/fhir/Patient/{record_id}", fhir.patient("openmrs"))
    fhir.outcome(missing, 400, "invalid", "Patient.id")
    other = fhir.patient("openmrs", value, id="someone-else")
    fhir.outcome(
        put(registry_server, "openmrs", f"/fhir/Patient/{record_id}", other),
        400,
        "invalid",
        "Patient.id",
    )
    fhir.outcome(registry_server.read("hie", record_id), 404)  # nothing was stored
    assert registry_server.submit("openmrs", fhir.patient("openmrs", value)).status_code == 201


def test_put_to_the_id_of_another_record_of_the_same_identifier_is_a_conflict(
    registry_server, fhir
) -> None:
    value = fhir.token()
    first = registry_server.submit("openmrs", fhir.patient("openmrs", value))
    assert first.status_code == 201, first.text
    other_id = fhir.token("om-")
    patient = fhir.patient("openmrs", value, id=other_id)
    response = put(registry_server, "openmrs", f"/fhir/Patient/{other_id}", patient)
    fhir.outcome(response, 409, "conflict", "Patient.identifier")
    fhir.outcome(registry_server.read("hie", other_id), 404)


def test_put_to_the_id_of_a_record_with_another_identifier_is_a_conflict(
    registry_server, fhir
) -> None:
    taken = registry_server.submit("dhis2", fhir.patient("dhis2"))
    taken_id, _ = fhir.ids(taken)
    patient = fhir.patient("openmrs", id=taken_id)
    response = put(registry_server, "openmrs", f"/fhir/Patient/{taken_id}", patient)
    fhir.outcome(response, 409, "conflict")


def test_put_to_a_golden_record_id_is_refused(registry_server, fhir) -> None:
    existing = registry_server.submit("openmrs", fhir.patient("openmrs"))
    _, golden_id = fhir.ids(existing)
    patient = fhir.patient("openmrs", id=golden_id)
    response = put(registry_server, "openmrs", f"/fhir/Patient/{golden_id}", patient)
    assert response.status_code in (400, 403, 409), response.text


def test_put_with_an_id_longer_than_fhir_allows_is_refused(registry_server, fhir) -> None:
    long_id = "a" * 60 + fhir.token()[:5]
    patient = fhir.patient("openmrs", id=long_id)
    response = put(registry_server, "openmrs", f"/fhir/Patient/{long_id}", patient)
    fhir.outcome(response, 400, expression="Patient.id")


# ----------------------------------------------------------------------------- conditional PUT


def test_conditional_update_creates_then_updates(registry_server, fhir) -> None:
    value = fhir.token("123-")
    condition = f"http://clientregistry.org/openmrs|{value}"
    patient = fhir.patient("openmrs", value)
    created = put(registry_server, "openmrs", "/fhir/Patient", patient, identifier=condition)
    assert created.status_code == 201, created.text
    record_id, golden_id = fhir.ids(created)

    patient["gender"] = "other"
    # the same condition, written unencoded in the query string
    updated = registry_server.client("openmrs").put(
        f"/fhir/Patient?identifier={condition}", content=json.dumps(patient), headers=HEADERS
    )
    assert updated.status_code == 200, updated.text
    assert fhir.ids(updated) == (record_id, golden_id)
    assert updated.json()["meta"]["versionId"] == "2"
    assert registry_server.read("hie", record_id).json()["gender"] == "other"


def test_conditional_update_on_another_systems_identifier_is_forbidden(
    registry_server, fhir
) -> None:
    value = fhir.token()
    patient = fhir.patient("openmrs", value)
    patient["identifier"].append({"system": "http://clientregistry.org/dhis2", "value": value})
    response = put(
        registry_server,
        "openmrs",
        "/fhir/Patient",
        patient,
        identifier=f"http://clientregistry.org/dhis2|{value}",
    )
    fhir.outcome(response, 403, "forbidden")
    # nothing was stored: the caller's own identifier is still unknown
    created = put(
        registry_server,
        "openmrs",
        "/fhir/Patient",
        fhir.patient("openmrs", value),
        identifier=f"http://clientregistry.org/openmrs|{value}",
    )
    assert created.status_code == 201, created.text


def test_conditional_update_must_carry_the_identifier_of_the_condition(
    registry_server, fhir
) -> None:
    patient = fhir.patient("openmrs")
    other = f"http://clientregistry.org/openmrs|{fhir.token()}"
    response = put(registry_server, "openmrs", "/fhir/Patient", patient, identifier=other)
    fhir.outcome(response, 422, "business-rule", "Patient.identifier")
    no_condition = put(registry_server, "openmrs", "/fhir/Patient", patient)
    fhir.outcome(no_condition, 400)
