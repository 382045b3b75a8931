"""Issue #11 item 5: XML as well as JSON (PIXm and PDQm say SHALL), over real HTTPS.

``application/fhir+xml`` request bodies; ``Accept`` and ``_format`` (``xml``, ``json``, the
full media types) choose the response format on every FHIR route, errors included; an
unsupported format is 406 everywhere, never JSON silently. Every XML answer is parsed with
``fhir.resources`` (R4B models over lxml).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fhir.resources.R4B import get_fhir_model_class
from lxml import etree
from standards import id_system

XML = "application/fhir+xml"
SEND_XML = {"Content-Type": XML, "Accept": XML}


def to_xml(resource: dict[str, Any]) -> bytes:
    model = get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    written = model.model_dump_xml()
    return written if isinstance(written, bytes) else written.encode()


def from_xml(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    """The response is FHIR XML of resource type ``kind`` with ``status``: as JSON."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(XML), response.headers
    root = etree.fromstring(response.content)
    assert etree.QName(root).localname == kind, response.text
    model = get_fhir_model_class(kind).model_validate_xml(response.content)
    out: dict[str, Any] = model.model_dump(mode="json")
    return out


def test_submit_and_read_in_xml(registry_server, fhir) -> None:
    patient = fhir.patient("openmrs")
    created = registry_server.client("openmrs").post(
        "/fhir/Patient", content=to_xml(patient), headers=SEND_XML
    )
    body = from_xml(created, 201, "Patient")
    record_id, golden_id = fhir.ids(created)
    assert body["id"] == record_id
    assert body["name"] == patient["name"]
    assert created.headers["ETag"] == 'W/"1"'
    client = registry_server.client("hie")
    for params, headers in (
        ({"_format": "xml"}, {}),
        ({"_format": XML}, {"Accept": "application/fhir+json"}),  # _format wins
        ({}, {"Accept": f"{XML}; fhirVersion=4.0"}),
        ({}, {"Accept": "text/html;q=0.9, application/xml;q=0.8"}),
    ):
        read = client.get(f"/fhir/Patient/{record_id}", params=params, headers=headers)
        assert from_xml(read, 200, "Patient")["birthDate"] == patient["birthDate"]
    as_json = client.get(
        f"/fhir/Patient/{record_id}", params={"_format": "json"}, headers={"Accept": XML}
    )
    assert as_json.headers["content-type"].startswith("application/fhir+json")
    assert as_json.json()["id"] == record_id
    golden = registry_server.client("openmrs").get(f"/fhir/Patient/{golden_id}?_format=xml")
    assert from_xml(golden, 200, "Patient")["link"][0]["type"] == "seealso"


def test_errors_come_in_xml_when_xml_is_asked_for(registry_server, fhir) -> None:
    client = registry_server.client("openmrs")
    missing = from_xml(
        client.get("/fhir/Patient/no-such-patient", headers={"Accept": XML}),
        404,
        "OperationOutcome",
    )
    assert missing["issue"][0]["code"] == "not-found"
    nowhere = from_xml(client.get("/fhir/Observation?_format=xml"), 404, "OperationOutcome")
    assert nowhere["issue"][0]["severity"] == "error"
    bad_xml = client.post("/fhir/Patient", content=b"<Patient xmlns='http", headers=SEND_XML)
    assert from_xml(bad_xml, 400, "OperationOutcome")["issue"][0]["code"] == "structure"
    entity = (
        b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY a "aaaaaaaaaa">]>'
        b'<Patient xmlns="http://hl7.org/fhir"><id value="&a;"/></Patient>'
    )
    refused = from_xml(
        client.post("/fhir/Patient", content=entity, headers=SEND_XML), 400, "OperationOutcome"
    )
    assert "DOCTYPE" in refused["issue"][0]["diagnostics"]
    foreign = b'<Patient xmlns="urn:other"><active value="true"/></Patient>'
    from_xml(
        client.post("/fhir/Patient", content=foreign, headers=SEND_XML), 400, "OperationOutcome"
    )
    unknown = b'<Patient xmlns="http://hl7.org/fhir"><nickname value="x"/></Patient>'
    from_xml(
        client.post("/fhir/Patient", content=unknown, headers=SEND_XML), 400, "OperationOutcome"
    )
    invalid = to_xml(fhir.patient("openmrs")).replace(b'<birthDate value="', b'<birthDate value="x')
    from_xml(
        client.post("/fhir/Patient", content=invalid, headers=SEND_XML), 400, "OperationOutcome"
    )
    forbidden = registry_server.client("hie").post(
        "/fhir/Patient", content=to_xml(fhir.patient("hie")), headers=SEND_XML
    )
    assert from_xml(forbidden, 403, "OperationOutcome")["issue"][0]["code"] == "forbidden"


@pytest.mark.parametrize(
    ("method", "url", "headers"),
    [
        ("GET", "/fhir/metadata?_format=ttl", {}),
        ("GET", "/fhir/Patient/anything", {"Accept": "text/html"}),
        (
            "GET",
            "/fhir/Patient?identifier=a|1",
            {"Accept": "application/fhir+json; fhirVersion=5.0"},
        ),
        ("GET", "/fhir/Patient/$ihe-pix?sourceIdentifier=a|1&_format=text/turtle", {}),
        ("POST", "/fhir/Patient/$match", {"Accept": "application/pdf"}),
        ("GET", "/fhir/NoSuchThing", {"Accept": "image/png"}),
    ],
)
def test_an_unsupported_format_is_406_everywhere(
    registry_server, fhir, method: str, url: str, headers: dict[str, str]
) -> None:
    response = registry_server.client("hie").request(method, url, headers=headers)
    fhir.outcome(response, 406, "not-supported")


def test_pixm_search_match_and_metadata_answer_in_xml(registry_server, fhir) -> None:
    value = fhir.token()
    created = registry_server.submit("dhis2", fhir.patient("dhis2", value))
    record_id, golden_id = fhir.ids(created)
    client = registry_server.client("hie")
    pix = client.get(
        "/fhir/Patient/$ihe-pix",
        params={"sourceIdentifier": f"{id_system('dhis2')}|{value}", "_format": XML},
    )
    parameters = from_xml(pix, 200, "Parameters")
    assert {"reference": f"Patient/{golden_id}"} in [
        p.get("valueReference") for p in parameters["parameter"]
    ]
    search = client.get(
        "/fhir/Patient",
        params={"identifier": f"{id_system('dhis2')}|{value}"},
        headers={"Accept": XML},
    )
    assert from_xml(search, 200, "Bundle")["entry"][0]["resource"]["id"] == record_id
    match = client.post(
        "/fhir/Patient/$match",
        content=to_xml(
            {
                "resourceType": "Parameters",
                "parameter": [{"name": "resource", "resource": fhir.patient("dhis2", value)}],
            }
        ),
        headers=SEND_XML,
    )
    assert from_xml(match, 200, "Bundle")["type"] == "searchset"
    metadata = from_xml(
        client.get("/fhir/metadata", headers={"Accept": XML}), 200, "CapabilityStatement"
    )
    assert "xml" in metadata["format"]


def test_conditional_update_and_bundles_in_xml(registry_server, fhir) -> None:
    """ITI-104 in XML: the Patient Identity Source may send either format."""
    value = fhir.token()
    client = registry_server.client("lims")
    created = client.put(
        "/fhir/Patient",
        params={"identifier": f"{id_system('lims')}|{value}"},
        content=to_xml(fhir.patient("lims", value)),
        headers={"Content-Type": XML},
    )
    body = from_xml(created, 201, "Patient")  # no Accept: the answer follows the body
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": fhir.patient("lims"), "request": {"method": "POST", "url": "Patient"}}
        ],
    }
    answer = from_xml(client.post("/fhir", content=to_xml(bundle), headers=SEND_XML), 200, "Bundle")
    assert answer["type"] == "transaction-response"
    assert answer["entry"][0]["response"]["status"] == "201 Created"
    assert body["identifier"][0]["value"] == value
