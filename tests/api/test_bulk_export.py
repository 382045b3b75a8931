"""FHIR Bulk Data export over HTTPS with mutual TLS: kick-off, status, files, ``_since``,
``_type``, refusals, delete."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import orjson
from admin_routes import patient
from registry_servers import RegistryServer

ASYNC = {"Accept": "application/fhir+json", "Prefer": "respond-async"}


def kick_off(client: httpx.Client, query: str = "") -> httpx.Response:
    return client.get(f"/fhir/Patient/$export{query}", headers=ASYNC)


def wait(client: httpx.Client, url: str, timeout: float = 120) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(url, headers={"Accept": "application/fhir+json"})
        if response.status_code != 202:
            return response
        assert "X-Progress" in response.headers
        assert time.monotonic() < deadline, "the export did not finish"
        time.sleep(0.2)


def ndjson(client: httpx.Client, url: str) -> list[dict[str, Any]]:
    response = client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+ndjson")
    return [orjson.loads(line) for line in response.content.splitlines()]


def test_an_export_hands_out_source_and_golden_records(registry_server: RegistryServer) -> None:
    marker = f"Exportova{time.time_ns() % 10**8}"
    for system, value, given in (("openmrs", "x1", "Amina"), ("dhis2", "x1", "Amina")):
        body = patient(system, f"{marker}-{value}", given, marker, birth_date="1977-03-04")
        response = registry_server.submit(system, body)
        assert response.status_code == 201, response.text
    reader = registry_server.client("hie")
    started = kick_off(reader)
    assert started.status_code == 202, started.text
    status_url = started.headers["Content-Location"]
    assert "/fhir/$export-status/" in status_url
    done = wait(reader, status_url)
    assert done.status_code == 200, done.text
    manifest = done.json()
    assert manifest["requiresAccessToken"] is True and manifest["error"] == []
    assert manifest["request"].endswith("/fhir/Patient/$export")
    assert "Expires" in done.headers
    resources = [r for item in manifest["output"] for r in ndjson(reader, item["url"])]
    assert all(item["type"] == "Patient" for item in manifest["output"])
    assert sum(item["count"] for item in manifest["output"]) == len(resources)
    mine = [r for r in resources if r.get("name", [{}])[0].get("family") == marker]
    assert len(mine) == 2
    golden = {r["link"][0]["other"]["reference"] for r in mine}
    assert len(golden) == 1  # one person
    golden_id = golden.pop().removeprefix("Patient/")
    person = next(r for r in resources if r["id"] == golden_id)
    assert {link["other"]["reference"] for link in person["link"]} == {
        f"Patient/{r['id']}" for r in mine
    }
    assert "name" not in person
    # _since: only what changed since
    later = kick_off(reader, "?_since=2999-01-01T00:00:00Z")
    empty = wait(reader, later.headers["Content-Location"]).json()
    assert empty["output"] == []
    # the files are the asker's only; DELETE removes them
    other = registry_server.new_client("hie")
    assert other.get(status_url).status_code == 200
    removed = reader.delete(status_url)
    assert removed.status_code == 202
    assert reader.get(status_url).status_code == 404
    assert reader.get(manifest["output"][0]["url"]).status_code == 404


def test_exports_that_cannot_be_made_are_refused(registry_server: RegistryServer) -> None:
    reader = registry_server.client("hie")
    cases = [
        ("", {"Accept": "application/fhir+json"}, 400, "respond-async"),
        ("?_type=Observation", ASYNC, 400, "Observation"),
        ("?_outputFormat=text/csv", ASYNC, 400, "_outputFormat"),
        ("?_since=yesterday", ASYNC, 400, "_since"),
        ("?_since=2026-01-01T00:00:00", ASYNC, 400, "time zone"),
        ("?_elements=name", ASYNC, 400, "_elements"),
    ]
    for query, headers, status, words in cases:
        response = reader.get(f"/fhir/Patient/$export{query}", headers=headers)
        assert response.status_code == status, (query, response.text)
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert words in json.dumps(outcome), (query, outcome)
    submitter = registry_server.client("openmrs")  # may not read demographics
    assert kick_off(submitter).status_code == 403
    assert reader.get("/fhir/$export-status/999999").status_code == 404
    assert registry_server.new_client().get("/fhir/Patient/$export", headers=ASYNC).status_code in (
        401,
        403,
    )
