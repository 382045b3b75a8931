"""Issue #11 item 3: versions and concurrency over HTTPS on SQLite and PostgreSQL.

``ETag: W/"n"`` on create, read, vread and update; ``If-Match`` with a stale version is 412
and changes nothing; ``If-None-Exist`` makes a conditional create; ``Last-Modified`` is an
RFC 7231 HTTP date on every response carrying a Patient; ``meta.versionId`` and
``meta.lastUpdated`` agree with them.
"""

from __future__ import annotations

import re
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from standards import conditional_put, id_system, send

HTTP_DATE = re.compile(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT")


def agrees(response: httpx.Response, version: str) -> dict[str, Any]:
    """The response's ETag and Last-Modified agree with its Patient's meta (and ``version``)."""
    body: dict[str, Any] = response.json()
    meta = body["meta"]
    assert meta["versionId"] == version
    assert response.headers["ETag"] == f'W/"{version}"'
    modified = response.headers["Last-Modified"]
    assert HTTP_DATE.fullmatch(modified), modified
    updated = datetime.fromisoformat(meta["lastUpdated"])
    assert parsedate_to_datetime(modified) == updated.replace(microsecond=0)
    return body


def test_etag_and_last_modified_on_create_read_vread_update(registry_server, fhir) -> None:
    value = fhir.token()
    created = registry_server.submit("openmrs", fhir.patient("openmrs", value))
    assert created.status_code == 201, created.text
    record_id, golden_id = fhir.ids(created)
    agrees(created, "1")
    agrees(registry_server.read("openmrs", record_id), "1")  # a read (identifiers only)
    agrees(registry_server.read("hie", record_id), "1")
    golden = registry_server.read("openmrs", golden_id)
    agrees(golden, golden.json()["meta"]["versionId"])
    updated = registry_server.submit("openmrs", fhir.patient("openmrs", value))
    assert updated.status_code == 200, updated.text
    agrees(updated, "2")
    vread = registry_server.client("hie").get(f"/fhir/Patient/{record_id}/_history/1")
    agrees(vread, "1")


def test_if_match_with_a_stale_version_is_412_and_changes_nothing(registry_server, fhir) -> None:
    value = fhir.token()
    created = registry_server.submit("openmrs", fhir.patient("openmrs", value))
    record_id, _ = fhir.ids(created)
    changed = fhir.patient("openmrs", value, gender="other", id=record_id)
    routes = [
        ("POST", "/fhir/Patient", None),
        ("PUT", f"/fhir/Patient/{record_id}", None),
        ("PUT", "/fhir/Patient", {"identifier": f"{id_system('openmrs')}|{value}"}),
    ]
    for method, url, params in routes:
        stale = send(
            registry_server,
            "openmrs",
            method,
            url,
            changed,
            headers={"If-Match": 'W/"7"'},
            params=params,
        )
        fhir.outcome(stale, 412, "conflict")
    stored = registry_server.read("hie", record_id).json()
    assert stored["meta"]["versionId"] == "1"
    assert stored["gender"] != "other"
    current = conditional_put(
        registry_server, "openmrs", changed, value, headers={"If-Match": 'W/"1"'}
    )
    assert current.status_code == 200, current.text
    agrees(current, "2")
    again = conditional_put(
        registry_server, "openmrs", changed, value, headers={"If-Match": 'W/"1"'}
    )
    fhir.outcome(again, 412, "conflict")  # the version moved on
    fhir.outcome(
        send(
            registry_server, "openmrs", "POST", "/fhir/Patient", changed, headers={"If-Match": "2"}
        ),
        400,
    )


def test_if_match_on_a_record_that_does_not_exist_is_412(registry_server, fhir) -> None:
    value = fhir.token()
    for tag in ('W/"1"', "*"):
        response = conditional_put(
            registry_server, "openmrs", fhir.patient("openmrs", value), value, {"If-Match": tag}
        )
        fhir.outcome(response, 412)
    created = conditional_put(registry_server, "openmrs", fhir.patient("openmrs", value), value)
    assert created.status_code == 201, created.text
    star = conditional_put(
        registry_server, "openmrs", fhir.patient("openmrs", value), value, {"If-Match": "*"}
    )
    assert star.status_code == 200, star.text


def test_conditional_create(registry_server, fhir) -> None:
    value = fhir.token()
    condition = {"If-None-Exist": f"identifier={id_system('openmrs')}|{value}"}
    patient = fhir.patient("openmrs", value)
    first = send(registry_server, "openmrs", "POST", "/fhir/Patient", patient, headers=condition)
    assert first.status_code == 201, first.text
    record_id, golden_id = fhir.ids(first)
    second = send(
        registry_server,
        "openmrs",
        "POST",
        "/fhir/Patient",
        fhir.patient("openmrs", value, gender="other"),
        headers=condition,
    )
    assert second.status_code == 200, second.text
    assert fhir.ids(second) == (record_id, golden_id)
    agrees(second, "1")  # nothing was stored
    assert registry_server.read("hie", record_id).json()["gender"] == patient["gender"]


def test_conditional_create_on_another_identifier(registry_server, fhir) -> None:
    national = {"system": "urn:oid:1.2.3.11", "value": fhir.token()}
    patient = fhir.patient("dhis2")
    patient["identifier"].append(national)
    held = registry_server.submit("dhis2", patient)
    held_id, _ = fhir.ids(held)
    condition = {"If-None-Exist": f"identifier={national['system']}|{national['value']}"}
    mine = fhir.patient("openmrs")
    found = send(registry_server, "openmrs", "POST", "/fhir/Patient", mine, headers=condition)
    assert found.status_code == 200, found.text
    assert found.json()["id"] == held_id
    assert "name" not in found.json()  # openmrs may not read dhis2's demographics
    # a second holder makes the condition ambiguous: 412, nothing stored
    other = fhir.patient("lims")
    other["identifier"].append(national)
    assert registry_server.submit("lims", other).status_code == 201
    twice = send(registry_server, "openmrs", "POST", "/fhir/Patient", mine, headers=condition)
    fhir.outcome(twice, 412, "multiple-matches")
    # a condition by demographics needs read-demographics
    by_name = {"If-None-Exist": f"family={mine['name'][0]['family']}"}
    fhir.outcome(
        send(registry_server, "openmrs", "POST", "/fhir/Patient", mine, headers=by_name),
        403,
        "forbidden",
    )
    fhir.outcome(
        send(
            registry_server,
            "openmrs",
            "POST",
            "/fhir/Patient",
            mine,
            headers={"If-None-Exist": "nickname=x"},
        ),
        400,
    )
    identifier = mine["identifier"][0]
    search = registry_server.client("hie").get(
        "/fhir/Patient", params={"identifier": f"{identifier['system']}|{identifier['value']}"}
    )
    assert "entry" not in search.json()  # none of these stored the caller's Patient


def test_bundle_entries_check_versions_and_conditions(registry_server, fhir) -> None:
    value = fhir.token()
    created = registry_server.submit("openmrs", fhir.patient("openmrs", value))
    record_id, _ = fhir.ids(created)
    url = f"Patient?identifier={id_system('openmrs')}|{value}"
    fresh = fhir.token()
    entries = [
        {
            "resource": fhir.patient("openmrs", value),
            "request": {"method": "PUT", "url": url, "ifMatch": 'W/"3"'},
        },
        {
            "resource": fhir.patient("openmrs", value),
            "request": {
                "method": "POST",
                "url": "Patient",
                "ifNoneExist": f"identifier={id_system('openmrs')}|{value}",
            },
        },
        {
            "resource": fhir.patient("openmrs", fresh),
            "request": {
                "method": "POST",
                "url": "Patient",
                "ifNoneExist": f"identifier={id_system('openmrs')}|{fresh}",
            },
        },
    ]
    batch = {"resourceType": "Bundle", "type": "batch", "entry": entries}
    response = send(registry_server, "openmrs", "POST", "/fhir", batch)
    assert response.status_code == 200, response.text
    answers = [e["response"] for e in response.json()["entry"]]
    assert [a["status"] for a in answers] == [
        "412 Precondition Failed",
        "200 OK",
        "201 Created",
    ]
    assert answers[1]["location"] == f"Patient/{record_id}/_history/1"
    assert answers[2]["etag"] == 'W/"1"'
    assert registry_server.read("hie", record_id).json()["meta"]["versionId"] == "1"
    # a transaction fails as a whole on a stale version
    lost = fhir.token()
    new = {
        "resource": fhir.patient("openmrs", lost),
        "request": {"method": "POST", "url": "Patient"},
    }
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [new, entries[0]]}
    fhir.outcome(send(registry_server, "openmrs", "POST", "/fhir", transaction), 412)
    search = registry_server.client("hie").get(
        "/fhir/Patient", params={"identifier": f"{id_system('openmrs')}|{lost}"}
    )
    assert search.status_code == 200 and "entry" not in search.json(), search.text


def test_a_conditional_create_matching_a_record_the_caller_may_not_read(
    registry_server, fhir
) -> None:
    """kiosk may submit but not read others' records: the match is said, not shown."""
    national = {"system": "urn:oid:1.2.3.12", "value": fhir.token()}
    held = fhir.patient("dhis2")
    held["identifier"].append(national)
    held_id, _ = fhir.ids(registry_server.submit("dhis2", held))
    condition = {"If-None-Exist": f"identifier={national['system']}|{national['value']}"}
    mine = fhir.patient("kiosk")
    response = send(registry_server, "kiosk", "POST", "/fhir/Patient", mine, headers=condition)
    assert response.status_code == 200, response.text
    assert response.headers["Location"] == f"Patient/{held_id}"
    assert response.json()["resourceType"] == "OperationOutcome"
    assert "nothing was stored" in response.json()["issue"][0]["diagnostics"]
