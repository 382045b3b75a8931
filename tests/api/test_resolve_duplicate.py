"""Issue #11 item 1: Resolve Duplicate (ITI-104 §3.104.4.2.3) merges, and ``Patient/$merge``.

Over real HTTPS on SQLite and PostgreSQL. A Patient Identity Source updates its duplicate
record with ``active: false`` and a ``replaced-by`` link to the survivor (by identifier or by
reference): the duplicate joins the survivor's golden record as a person's decision, stays
inactive, and PIXm for its identifier answers the survivor's person. ``$merge`` does the same
for callers allowed to merge, with ``preview``, and every merge is audited and revertible.
"""

from __future__ import annotations

from typing import Any

import pytest
from standards import (
    conditional_put,
    id_system,
    parameter_values,
    pix,
    reviewer_token,
    send,
)

HUMAN = "humanAdjudication"


def two_people(server: Any, fhir: Any, system: str = "openmrs") -> dict[str, Any]:
    """Two records of ``system`` that matching keeps apart (different people on paper),
    and a third record of the survivor's person from dhis2."""
    survivor_value, duplicate_value = fhir.token("s-"), fhir.token("d-")
    person = fhir.person()
    survivor = server.submit(system, fhir.patient(system, survivor_value, person))
    duplicate = server.submit(system, fhir.patient(system, duplicate_value))
    other = server.submit("dhis2", fhir.patient("dhis2", fhir.token("x-"), person))
    for response in (survivor, duplicate, other):
        assert response.status_code == 201, response.text
    s_id, s_golden = fhir.ids(survivor)
    d_id, d_golden = fhir.ids(duplicate)
    o_id, o_golden = fhir.ids(other)
    assert s_golden == o_golden != d_golden
    return {
        "survivor": (s_id, s_golden, survivor_value),
        "duplicate": (d_id, d_golden, duplicate_value),
        "other": (o_id, o_golden),
        "person": person,
    }


def resolved(fhir: Any, system: str, value: str, other: dict[str, Any]) -> dict[str, Any]:
    patient = fhir.patient(system, value, active=False)
    patient["link"] = [{"other": other, "type": "replaced-by"}]
    return patient


def test_resolve_duplicate_by_identifier_merges_into_the_survivor(registry_server, fhir) -> None:
    setup = two_people(registry_server, fhir)
    s_id, s_golden, s_value = setup["survivor"]
    d_id, d_golden, d_value = setup["duplicate"]
    survivor = {"identifier": {"system": id_system("openmrs"), "value": s_value}}
    response = conditional_put(
        registry_server, "openmrs", resolved(fhir, "openmrs", d_value, survivor), d_value
    )
    assert response.status_code == 200, response.text
    assert fhir.ids(response) == (d_id, s_golden)
    body = response.json()
    assert body["active"] is False
    assert body["link"] == [
        {"other": {"reference": f"Patient/{s_golden}"}, "type": "refer"},
        {"other": {"reference": f"Patient/{s_id}"}, "type": "replaced-by"},
    ]
    assert HUMAN in {t["code"] for t in fhir.tags(body)}

    # the survivor links back; the golden record holds both; the old one is retired
    survivor_record = registry_server.read("hie", s_id).json()
    assert fhir.links(survivor_record, "replaces") == [f"Patient/{d_id}"]
    assert survivor_record["active"] is True
    golden = registry_server.read("openmrs", s_golden).json()
    assert f"Patient/{d_id}" in fhir.links(golden, "seealso")
    retired = registry_server.read("openmrs", d_golden).json()
    assert retired["active"] is False
    assert fhir.links(retired, "replaced-by") == [f"Patient/{s_golden}"]

    # PIXm for the subsumed identifier answers the survivor's person
    answer = pix(registry_server, "openmrs", f"{id_system('openmrs')}|{d_value}")
    assert answer.status_code == 200, answer.text
    targets = [v["reference"] for v in parameter_values(answer.json(), "targetId")]
    assert targets[0] == f"Patient/{s_golden}"
    assert f"Patient/{s_id}" in targets
    assert f"Patient/{setup['other'][0]}" in targets
    identifiers = parameter_values(answer.json(), "targetIdentifier")
    assert {"system": id_system("openmrs"), "value": s_value} in identifiers
    # ... and the survivor's identifier no longer cross-references the subsumed one
    back = pix(registry_server, "openmrs", f"{id_system('openmrs')}|{s_value}").json()
    assert {"system": id_system("openmrs"), "value": d_value} not in parameter_values(
        back, "targetIdentifier"
    )
    assert f"Patient/{d_id}" not in [v["reference"] for v in parameter_values(back, "targetId")]


def test_resolve_duplicate_by_reference_and_it_sticks_through_updates(
    registry_server, fhir
) -> None:
    setup = two_people(registry_server, fhir, "lims")
    s_id, s_golden, _ = setup["survivor"]
    d_id, _, d_value = setup["duplicate"]
    patient = resolved(fhir, "lims", d_value, {"reference": f"Patient/{s_id}"})
    response = registry_server.submit("lims", patient)  # OpenCR's POST works too
    assert response.status_code == 200, response.text
    assert fhir.ids(response) == (d_id, s_golden)
    # a later ordinary update of the subsumed record keeps it where it was put
    again = registry_server.submit("lims", fhir.patient("lims", d_value))
    assert again.status_code == 200, again.text
    assert fhir.ids(again) == (d_id, s_golden)
    assert again.json()["active"] is False
    assert fhir.links(again.json(), "replaced-by") == [f"Patient/{s_id}"]


@pytest.mark.parametrize(
    ("other", "status", "code"),
    [
        ({"identifier": {"system": "urn:oid:1.2.3", "value": "1"}}, 422, "business-rule"),
        ({"identifier": {"system": id_system("openmrs"), "value": "nobody"}}, 422, None),
        ({"reference": "Patient/no-such-patient"}, 422, "business-rule"),
        ({"display": "who?"}, 422, "business-rule"),
    ],
)
def test_resolve_duplicate_with_a_survivor_it_cannot_use_changes_nothing(
    registry_server, fhir, other: dict[str, Any], status: int, code: str | None
) -> None:
    value = fhir.token()
    created = registry_server.submit("openmrs", fhir.patient("openmrs", value))
    record_id, golden = fhir.ids(created)
    response = conditional_put(
        registry_server, "openmrs", resolved(fhir, "openmrs", value, other), value
    )
    fhir.outcome(response, status, code)
    stored = registry_server.read("hie", record_id).json()
    assert stored["meta"]["versionId"] == "1"
    assert fhir.links(stored, "refer") == [f"Patient/{golden}"]


def test_resolve_duplicate_into_another_systems_record_is_forbidden(registry_server, fhir) -> None:
    foreign = registry_server.submit("dhis2", fhir.patient("dhis2"))
    foreign_id, _ = fhir.ids(foreign)
    value = fhir.token()
    registry_server.submit("openmrs", fhir.patient("openmrs", value))
    patient = resolved(fhir, "openmrs", value, {"reference": f"Patient/{foreign_id}"})
    fhir.outcome(conditional_put(registry_server, "openmrs", patient, value), 403, "forbidden")


def merge_parameters(source: str, target: str, **extra: Any) -> dict[str, Any]:
    parameter = [
        {"name": "source-patient", "valueReference": {"reference": f"Patient/{source}"}},
        {"name": "target-patient", "valueReference": {"reference": f"Patient/{target}"}},
    ]
    if "preview" in extra:
        parameter.append({"name": "preview", "valueBoolean": extra["preview"]})
    return {"resourceType": "Parameters", "parameter": parameter}


def test_merge_preview_changes_nothing_then_merge_links_and_is_revertible(
    registry_server, fhir
) -> None:
    setup = two_people(registry_server, fhir, "dhis2")
    s_id, s_golden, _ = setup["survivor"]
    d_id, d_golden, _ = setup["duplicate"]
    url = "/fhir/Patient/$merge"

    preview = send(
        registry_server, "steward", "POST", url, merge_parameters(d_id, s_id, preview=True)
    )
    assert preview.status_code == 200, preview.text
    outcome = next(p["resource"] for p in preview.json()["parameter"] if p["name"] == "outcome")
    assert "would be" in outcome["issue"][0]["diagnostics"]
    unchanged = registry_server.read("hie", d_id).json()
    assert fhir.links(unchanged, "refer") == [f"Patient/{d_golden}"]
    assert "replaced-by" not in {link["type"] for link in unchanged["link"]}

    merged = send(registry_server, "steward", "POST", url, merge_parameters(d_id, s_id))
    assert merged.status_code == 200, merged.text
    names = [p["name"] for p in merged.json()["parameter"]]
    assert names == ["input", "outcome", "result"]
    result = merged.json()["parameter"][2]["resource"]
    assert result["id"] == s_id
    assert fhir.links(result, "replaces") == [f"Patient/{d_id}"]
    assert "name" not in result  # the steward may not read demographics
    record = registry_server.read("hie", d_id).json()
    assert record["active"] is False
    assert fhir.links(record, "replaced-by") == [f"Patient/{s_id}"]
    assert fhir.links(record, "refer") == [f"Patient/{s_golden}"]

    # an administrator finds the merge in the audit trail and reverts it
    token = reviewer_token(registry_server, f"adm-{fhir.token()}", "admin")
    admin = registry_server.new_client()
    admin.headers["Authorization"] = f"Bearer {token}"
    trail = admin.get("/admin/audit", params={"entity": f"Patient/{d_id}"})
    assert trail.status_code == 200, trail.text
    merges = [e for e in trail.json()["items"] if e["event_type"] == "merge"]
    assert len(merges) == 1 and merges[0]["revertible"], trail.json()
    assert merges[0]["agent"] == "steward"
    reverted = admin.post(f"/admin/audit/{merges[0]['id']}/revert")
    assert reverted.status_code == 200, reverted.text
    back = registry_server.read("hie", d_id).json()
    assert fhir.links(back, "refer") == [f"Patient/{d_golden}"]
    assert "replaced-by" not in {link["type"] for link in back["link"]}
    assert fhir.links(registry_server.read("hie", s_id).json(), "replaces") == []


def test_merge_by_identifier_and_by_a_reviewer(registry_server, fhir) -> None:
    setup = two_people(registry_server, fhir)
    _, s_golden, s_value = setup["survivor"]
    d_id, _, d_value = setup["duplicate"]
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "source-patient-identifier",
                "valueIdentifier": {"system": id_system("openmrs"), "value": d_value},
            },
            {
                "name": "target-patient-identifier",
                "valueIdentifier": {"system": id_system("openmrs"), "value": s_value},
            },
        ],
    }
    token = reviewer_token(registry_server, f"rev-{fhir.token()}")
    client = registry_server.new_client()
    response = client.post(
        "/fhir/Patient/$merge",
        json=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"},
    )
    assert response.status_code == 200, response.text
    result = response.json()["parameter"][2]["resource"]
    assert result["name"]  # a reviewer reads demographics
    assert fhir.ids(registry_server.submit("openmrs", fhir.patient("openmrs", d_value))) == (
        d_id,
        s_golden,
    )


def test_merge_needs_the_merge_permission_and_sane_parameters(registry_server, fhir) -> None:
    setup = two_people(registry_server, fhir)
    s_id, _, _ = setup["survivor"]
    d_id, d_golden, _ = setup["duplicate"]
    url = "/fhir/Patient/$merge"
    body = merge_parameters(d_id, s_id)
    fhir.outcome(send(registry_server, "openmrs", "POST", url, body), 403, "forbidden")
    fhir.outcome(send(registry_server, "hie", "POST", url, body), 403, "forbidden")
    same = merge_parameters(d_id, d_id)
    fhir.outcome(send(registry_server, "steward", "POST", url, same), 422, "business-rule")
    golden = merge_parameters(d_id, d_golden)
    fhir.outcome(send(registry_server, "steward", "POST", url, golden), 422, "business-rule")
    unknown = merge_parameters(d_id, "no-such-patient")
    fhir.outcome(send(registry_server, "steward", "POST", url, unknown), 422, "business-rule")
    no_target = {"resourceType": "Parameters", "parameter": body["parameter"][:1]}
    fhir.outcome(send(registry_server, "steward", "POST", url, no_target), 400)
    bad = {"resourceType": "Parameters", "parameter": [{"name": "source", "valueString": "x"}]}
    fhir.outcome(send(registry_server, "steward", "POST", url, bad), 400, "not-supported")
    # nothing happened
    assert fhir.links(registry_server.read("hie", d_id).json(), "refer") == [f"Patient/{d_golden}"]


def test_merge_result_patient_is_only_for_the_owner_of_the_target(registry_server, fhir) -> None:
    setup = two_people(registry_server, fhir)
    s_id, _, s_value = setup["survivor"]
    d_id, _, _ = setup["duplicate"]
    body = merge_parameters(d_id, s_id)
    result = fhir.patient("openmrs", s_value, setup["person"], id=s_id)
    body["parameter"].append({"name": "result-patient", "resource": result})
    response = send(registry_server, "steward", "POST", "/fhir/Patient/$merge", body)
    fhir.outcome(response, 403, "forbidden")
    assert "replaced-by" not in {
        link["type"] for link in registry_server.read("hie", d_id).json()["link"]
    }


def test_resolve_duplicate_in_a_batch_bundle(registry_server, fhir) -> None:
    setup = two_people(registry_server, fhir, "dhis2")
    s_id, s_golden, s_value = setup["survivor"]
    d_id, _, d_value = setup["duplicate"]
    survivor = {"identifier": {"system": id_system("dhis2"), "value": s_value}}
    url = f"Patient?identifier={id_system('dhis2')}|{d_value}"
    entry = {
        "resource": resolved(fhir, "dhis2", d_value, survivor),
        "request": {"method": "PUT", "url": url},
    }
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [entry]}
    response = send(registry_server, "dhis2", "POST", "/fhir", bundle)
    assert response.status_code == 200, response.text
    [answer] = response.json()["entry"]
    assert answer["response"]["status"] == "200 OK"
    assert (
        answer["response"]["extension"][0]["valueReference"]["reference"] == f"Patient/{s_golden}"
    )
    assert fhir.links(registry_server.read("hie", d_id).json(), "replaced-by") == [
        f"Patient/{s_id}"
    ]
