"""OpenCR's four demo patients over HTTPS, then reading golden and source records back.

patient1 (openmrs), patient2 (dhis2) and patient3 (lims) are one person; patient4 is lims'
update of patient3 (another given name). ``openmrs`` holds the default permissions (submit,
read identifiers); ``hie`` may read demographics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

DEMO = (
    ("patient1_openmrs.json", "openmrs"),
    ("patient2_dhis2.json", "dhis2"),
    ("patient3_lims.json", "lims"),
    ("patient4_lims.json", "lims"),
)


@dataclass
class Demo:
    files: dict[str, dict]
    responses: list[httpx.Response]

    def ids(self, index: int) -> tuple[str, str]:
        headers = self.responses[index].headers
        return (
            headers["Location"].removeprefix("Patient/"),
            headers["LocationCRUID"].removeprefix("Patient/"),
        )


@pytest.fixture(scope="module")
def demo_dir(reference_dir: Path) -> Path:
    path = reference_dir / "opencr" / "DemoData"
    if not all((path / name).is_file() for name, _ in DEMO):
        pytest.skip(f"OpenCR's demo data not found in {path}")
    return path


@pytest.fixture(scope="module")
def demo(registry_server, demo_dir: Path) -> Demo:
    """The four demo patients, posted in order by their systems."""
    files = {}
    responses = []
    for name, system in DEMO:
        body = (demo_dir / name).read_bytes()
        files[name] = json.loads(body)
        responses.append(
            registry_server.client(system).post(
                "/fhir/Patient", content=body, headers={"Content-Type": "application/fhir+json"}
            )
        )
    return Demo(files, responses)


def test_demo_patients_are_created_then_updated(demo: Demo, fhir) -> None:
    assert [r.status_code for r in demo.responses] == [201, 201, 201, 200], [
        r.text for r in demo.responses
    ]
    cruids = {r.headers["LocationCRUID"] for r in demo.responses}
    assert len(cruids) == 1, cruids  # all four are one person
    locations = [r.headers["Location"] for r in demo.responses]
    assert len(set(locations[:3])) == 3
    assert locations[3] == locations[2]  # patient4 updates patient3's record
    assert demo.responses[2].json()["meta"]["versionId"] == "1"
    assert demo.responses[3].json()["meta"]["versionId"] == "2"
    assert demo.responses[3].headers["ETag"] == 'W/"2"'


def test_demo_response_bodies_are_opencr_source_records(demo: Demo, fhir) -> None:
    for index, (name, system) in enumerate(DEMO):
        body = demo.responses[index].json()
        record_id, golden_id = demo.ids(index)
        assert body["resourceType"] == "Patient"
        assert body["id"] == record_id
        client_tags = [t for t in fhir.tags(body) if t.get("system") == fhir.client_tag_system]
        assert [t["code"] for t in client_tags] == [system]
        assert body["link"] == [{"other": {"reference": f"Patient/{golden_id}"}, "type": "refer"}]
        sent = demo.files[name]
        assert body["identifier"] == sent["identifier"]
        assert body["name"] == sent["name"]
        assert body["birthDate"] == sent["birthDate"]
    # the three later records joined the first one's golden record by an automatic match
    for response in demo.responses[1:]:
        codes = {t["code"] for t in fhir.tags(response.json())}
        assert "autoMatches" in codes
    assert demo.responses[3].json()["name"][0]["given"] == ["Namirimu", "Emmanuel"]


def test_golden_record_lists_its_sources_without_demographics(
    registry_server, demo: Demo, fhir
) -> None:
    _, golden_id = demo.ids(0)
    response = registry_server.read("openmrs", golden_id)
    assert response.status_code == 200, response.text
    golden = response.json()
    assert golden["id"] == golden_id
    assert {"code": fhir.golden_code, "display": "Golden Record"} in fhir.tags(golden)
    for element in ("name", "birthDate", "gender", "telecom", "identifier", "address"):
        assert element not in golden, element
    sources = {f"Patient/{demo.ids(i)[0]}" for i in range(3)}
    assert set(fhir.links(golden, "seealso")) == sources
    assert len(golden["link"]) == 3
    assert response.headers["ETag"] == f'W/"{golden["meta"]["versionId"]}"'


DEMOGRAPHICS = ("name", "birthDate", "gender", "telecom", "address", "extension", "contact")


def test_point_of_service_systems_may_not_read_demographics(
    registry_server, demo: Demo, fhir
) -> None:
    """Without read-demographics a source record (its own or another system's) reads as ids,
    identifiers, links and tags only (issue #11 item 4: never a 403 by default)."""
    for index, system in ((0, "openmrs"), (1, "openmrs"), (1, "dhis2")):
        record_id, golden_id = demo.ids(index)
        response = registry_server.read(system, record_id)
        assert response.status_code == 200, response.text
        body = response.json()
        assert "Namaalwa" not in json.dumps(body)
        assert not set(DEMOGRAPHICS) & set(body), body
        assert body["identifier"] and fhir.links(body, "refer") == [f"Patient/{golden_id}"]
        assert "SUBSETTED" in {t["code"] for t in fhir.tags(body)}
    record_id, _ = demo.ids(2)
    client = registry_server.client("lims")
    for url in (f"/fhir/Patient/{record_id}/_history", f"/fhir/Patient/{record_id}/_history/1"):
        response = client.get(url)
        assert response.status_code == 200, response.text
        assert "Namaalwa" not in response.text


def test_a_reader_gets_source_records_and_their_history(registry_server, demo: Demo, fhir) -> None:
    first_id, golden_id = demo.ids(0)
    response = registry_server.read("hie", first_id)
    assert response.status_code == 200, response.text
    record = response.json()
    assert record["name"] == demo.files["patient1_openmrs.json"]["name"]
    assert [t["code"] for t in fhir.tags(record) if t.get("system") == fhir.client_tag_system] == [
        "openmrs"
    ]
    assert fhir.links(record, "refer") == [f"Patient/{golden_id}"]

    third_id, _ = demo.ids(2)
    current = registry_server.read("hie", third_id).json()
    assert current["meta"]["versionId"] == "2"
    assert current["name"][0]["given"][0] == "Namirimu"

    client = registry_server.client("hie")
    history = client.get(f"/fhir/Patient/{third_id}/_history")
    assert history.status_code == 200, history.text
    bundle = history.json()
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "history"
    assert bundle["total"] == 2
    assert len(bundle["entry"]) == 2
    versions = [e["resource"]["meta"]["versionId"] for e in bundle["entry"]]
    assert versions == ["2", "1"]  # newest first
    given = [e["resource"]["name"][0]["given"][0] for e in bundle["entry"]]
    assert given == ["Namirimu", "Namaalwa"]
    assert all(e["resource"]["id"] == third_id for e in bundle["entry"])

    first = client.get(f"/fhir/Patient/{third_id}/_history/1")
    assert first.status_code == 200, first.text
    assert first.headers["ETag"] == 'W/"1"'
    assert first.json()["meta"]["versionId"] == "1"
    assert first.json()["name"][0]["given"] == ["Namaalwa", "Emmanuel"]
    fhir.outcome(client.get(f"/fhir/Patient/{third_id}/_history/3"), 404, "not-found")


def test_unknown_patient_is_404(registry_server, fhir) -> None:
    fhir.outcome(registry_server.read("openmrs", "no-such-patient"), 404, "not-found")
    fhir.outcome(registry_server.read("hie", "no-such-patient"), 404, "not-found")


def test_a_reader_without_submit_permission_may_not_submit(registry_server, fhir) -> None:
    value = fhir.token("hie-")
    response = registry_server.submit("hie", fhir.patient("hie", value))
    fhir.outcome(response, 403, "forbidden")
