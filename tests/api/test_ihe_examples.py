"""The IHE guides' own example messages, run against the real server (HTTPS, client
certificates, SQLite and PostgreSQL) with the outcomes the guides state.

PIXm: the Patient Identity Source of the Red domain feeds Alissa Mohr, revises her to Alice
(ITI-104 §2:3.104.4.1.5), the Green and Blue sources feed Alice Mohr (the guide's example
Patients), and the ITI-83 example queries get the guide's example answers (plus the golden
record, a ``targetId`` too); then Red resolves its duplicate Maiden Alice into Alice
(§2:3.104.4.2.5, ``Patient-MohrMaidenResolvedByMohrMalice-Red.json``) and PIXm for the
subsumed identifier answers the survivor's person. PDQm: the guide's example Patients are
found by ITI-78 searches shaped like its example response, and its ``$match`` inputs (ITI-119)
get answers in the shape of its example outputs. The examples and their source and licence:
``tests/fhir/ihe_examples/README.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from standards import parameter_values, send

from clientregistry.settings import ClientSystemConfig

EXAMPLES = Path(__file__).resolve().parents[1] / "fhir" / "ihe_examples"
RED = "urn:oid:1.3.6.1.4.1.21367.13.20.1000"
GREEN = "urn:oid:1.3.6.1.4.1.21367.13.20.2000"
BLUE = "urn:oid:1.3.6.1.4.1.21367.13.20.3000"
SYSTEMS = (
    ClientSystemConfig("red", "Red Patient Identity Source", RED),
    ClientSystemConfig("green", "Green Patient Identity Source", GREEN),
    ClientSystemConfig("blue", "Blue Patient Identity Source", BLUE),
    ClientSystemConfig("example", "PDQm example source", "http://example.org/exampleSystem"),
)
XML = "application/fhir+xml"
FHIR = "{http://hl7.org/fhir}"


def example(path: str) -> Any:
    return json.loads((EXAMPLES / path).read_text(encoding="utf-8"))


def feed(server: Any, system: str, message: dict[str, Any]) -> Any:
    """An ITI-104 message of the guide: ``PUT Patient?identifier=…`` with its body."""
    return send(server, system, message["method"], f"/fhir/{message['url']}", message["body"])


def feed_patient(server: Any, system: str, domain: str, patient: dict[str, Any]) -> Any:
    """An example Patient fed by ITI-104 (the conditional update on its identifier)."""
    value = next(i["value"] for i in patient["identifier"] if i["system"] == domain)
    url = f"Patient?identifier={domain}|{value}"
    return feed(server, system, {"method": "PUT", "url": url, "body": patient})


def xml_parameters(path: str) -> list[tuple[str, dict[str, str]]]:
    """The parameters of an example Parameters (XML): (name, value element → value)."""
    root = etree.parse(str(EXAMPLES / path)).getroot()
    out = []
    for parameter in root.findall(f"{FHIR}parameter"):
        name = parameter.find(f"{FHIR}name").get("value")
        value = next(child for child in parameter if child.tag != f"{FHIR}name")
        if value.get("value") is not None:
            out.append((name, {"value": value.get("value")}))
        else:
            fields = {etree.QName(c).localname: c.get("value") for c in value}
            out.append((name, fields))
    return out


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def ihe(request: pytest.FixtureRequest, launch_server) -> dict[str, Any]:
    """A registry with the guide's identifier domains, fed as the guide feeds it."""
    server = launch_server(request.param, systems=SYSTEMS)
    add = feed(server, "red", example("pixm/iti-104-add-mohr-alissa-red.json"))
    assert add.status_code == 201, add.text  # Add Patient
    revise = feed(server, "red", example("pixm/iti-104-revise-mohr-alice-red.json"))
    assert revise.status_code == 200, revise.text  # Revise Patient: the same record
    assert revise.headers["Location"] == add.headers["Location"]
    assert revise.json()["name"][0]["given"] == ["ALICE"]
    for system, domain, path in (
        ("green", GREEN, "pixm/Patient-MohrAlice-Green.json"),
        ("blue", BLUE, "pixm/Patient-MohrAlice-Blue.json"),
    ):
        response = feed_patient(server, system, domain, example(path))
        assert response.status_code == 201, response.text
        # the example's id is free: it becomes the record's (update as create)
        assert response.headers["Location"] == f"Patient/{example(path)['id']}"
    red = add.headers["Location"].removeprefix("Patient/")
    return {"server": server, "red": red, "golden": add.headers["LocationCRUID"]}


def test_the_capability_statement_offers_conditional_update(ihe) -> None:
    """ITI-104 expected actions: conditionalUpdate on Patient; JSON and XML."""
    statement = ihe["server"].client("hie").get("/fhir/metadata").json()
    patient = statement["rest"][0]["resource"][0]
    assert patient["conditionalUpdate"] is True
    assert {"json", "xml"} <= set(statement["format"])


def test_iti83_get_all_identifiers(ihe) -> None:
    """``pixm-request-mohralice-red-all.xml`` gets ``pixm-response-mohralice-red-all.xml``."""
    request = dict(xml_parameters("pixm/pixm-request-mohralice-red-all.xml"))
    response = (
        ihe["server"]
        .client("hie")
        .get(
            "/fhir/Patient/$ihe-pix",
            params={"sourceIdentifier": request["sourceIdentifier"]["value"]},
            headers={"Accept": "application/fhir+json"},
        )
    )
    assert response.status_code == 200, response.text
    expected = xml_parameters("pixm/pixm-response-mohralice-red-all.xml")
    got = [
        (p["name"], p.get("valueReference") or p.get("valueIdentifier"))
        for p in response.json()["parameter"]
    ]
    for item in expected:  # in any order, says the guide
        assert item in got, (item, got)
    extra = [item for item in got if item not in expected]
    assert extra == [("targetId", {"reference": ihe["golden"]})]  # the golden record
    assert ("RED",) not in [(str(v),) for _, v in got]
    assert all(v.get("value") != "IHERED-994" for _, v in got)  # never the source identifier


def test_iti83_red_to_blue_in_xml(ihe) -> None:
    """``pixm-request-mohralice-red-to-blue.xml`` (with ``_format=application/fhir+xml``):
    an XML answer holding the guide's response (see the README on the Green domain)."""
    request = xml_parameters("pixm/pixm-request-mohralice-red-to-blue.xml")
    response = (
        ihe["server"]
        .client("hie")
        .get("/fhir/Patient/$ihe-pix", params=[(name, value["value"]) for name, value in request])
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(XML)
    root = etree.fromstring(response.content)
    got = []
    for parameter in root.findall(f"{FHIR}parameter"):
        name = parameter.find(f"{FHIR}name").get("value")
        value = next(child for child in parameter if child.tag != f"{FHIR}name")
        got.append((name, {etree.QName(c).localname: c.get("value") for c in value}))
    for item in xml_parameters("pixm/pixm-response-mohralice-red-to-blue.xml"):
        assert item in got, (item, got)
    identifiers = [v for name, v in got if name == "targetIdentifier"]
    assert {i["system"] for i in identifiers} == {BLUE, GREEN}


def test_iti83_failures_as_the_guide_says(ihe, fhir) -> None:
    client = ihe["server"].client("hie")

    def pix(**params: str) -> Any:
        return client.get("/fhir/Patient/$ihe-pix", params=params)

    not_found = fhir.outcome(pix(sourceIdentifier=f"{RED}|IHERED-000"), 404, "not-found")
    assert not_found["issue"][0]["diagnostics"] == "sourceIdentifier Patient Identifier not found"
    domain = fhir.outcome(pix(sourceIdentifier="urn:oid:1.2.3|1"), 400, "code-invalid")
    assert domain["issue"][0]["diagnostics"] == "sourceIdentifier Assigning Authority not found"
    target = fhir.outcome(
        pix(sourceIdentifier=f"{RED}|IHERED-994", targetSystem="urn:oid:1.2.3"), 403, "code-invalid"
    )
    assert target["issue"][0]["diagnostics"] == "targetSystem not found"


def test_iti104_resolve_duplicate(ihe) -> None:
    """§2:3.104.4.2.5: Maiden Alice (IHERED-m94) is subsumed by Alice (IHERED-994)."""
    server = ihe["server"]
    maiden = feed_patient(server, "red", RED, example("pixm/Patient-MaidenAlice-Red.json"))
    assert maiden.status_code == 201, maiden.text
    resolved = example("pixm/Patient-MohrMaidenResolvedByMohrMalice-Red.json")
    response = feed_patient(server, "red", RED, resolved)
    assert response.status_code == 200, response.text
    assert response.headers["Location"] == maiden.headers["Location"]
    assert response.headers["LocationCRUID"] == ihe["golden"]
    body = response.json()
    assert body["active"] is False
    assert {"other": {"reference": f"Patient/{ihe['red']}"}, "type": "replaced-by"} in body["link"]
    # the same message by the guide's text (no id) changes nothing further
    again = feed(server, "red", example("pixm/iti-104-resolve-maiden-alice-red.json"))
    assert again.status_code == 200, again.text
    # PIXm for the subsumed identifier answers the survivor's person
    answer = server.client("hie").get(
        "/fhir/Patient/$ihe-pix", params={"sourceIdentifier": f"{RED}|IHERED-m94"}
    )
    assert answer.status_code == 200, answer.text
    identifiers = {
        (i["system"], i["value"]) for i in parameter_values(answer.json(), "targetIdentifier")
    }
    assert identifiers == {(RED, "IHERED-994"), (GREEN, "IHEGREEN-994"), (BLUE, "IHEBLUE-994")}
    references = [v["reference"] for v in parameter_values(answer.json(), "targetId")]
    assert references[0] == ihe["golden"]
    assert f"Patient/{ihe['red']}" in references
    # ITI-78 Case 6: the deprecated Patient comes with the one it was merged into
    bundle = (
        server.client("hie")
        .get("/fhir/Patient", params={"family": "MOHR", "given": "MAIDEN"})
        .json()
    )
    modes = {(e["search"]["mode"], e["resource"]["id"]) for e in bundle["entry"]}
    assert ("include", ihe["red"]) in modes


@pytest.fixture(scope="module")
def pdqm(ihe) -> dict[str, Any]:
    server = ihe["server"]
    ids = {}
    for name in ("ex-patient", "ex-patient-mothers-maiden-name"):
        response = feed_patient(
            server, "example", "http://example.org/exampleSystem", example(f"pdqm/{name}.json")
        )
        assert response.status_code == 201, response.text
        ids[name] = response.headers["Location"].removeprefix("Patient/")
    return {"server": server, "ids": ids}


def test_iti78_the_guides_example_search(pdqm) -> None:
    """``family=Schmidt`` answers like ``ex-QueryPatientResourceResponseMessage``."""
    expected = example("pdqm/ex-QueryPatientResourceResponseMessage.json")
    for accept in ("application/fhir+json", XML):
        response = (
            pdqm["server"]
            .client("hie")
            .get("/fhir/Patient", params={"family": "Schmidt"}, headers={"Accept": accept})
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith(accept)
    bundle = pdqm["server"].client("hie").get("/fhir/Patient", params={"family": "Schmidt"}).json()
    assert (bundle["type"], bundle["total"]) == (expected["type"], expected["total"])
    [entry] = bundle["entry"]
    assert entry["fullUrl"].endswith(f"/Patient/{pdqm['ids']['ex-patient']}")
    resource = entry["resource"]
    for element in ("identifier", "name", "gender", "birthDate", "address"):
        assert resource[element] == expected["entry"][0]["resource"][element], element


@pytest.mark.parametrize(
    ("params", "who"),
    [
        ({"mothersMaidenName": "Doe"}, "ex-patient-mothers-maiden-name"),
        ({"family": "Schmidt", "gender": "other"}, "ex-patient"),
        ({"birthdate": "1932-07-25", "family": "Schmit"}, "ex-patient-mothers-maiden-name"),
        ({"identifier": "http://example.org/exampleSystem|8675309"}, "ex-patient"),
        ({"given": "Jingleheimer"}, "ex-patient"),
        ({"address-state": "WI", "gender": "male"}, "ex-patient-mothers-maiden-name"),
    ],
)
def test_iti78_parameters_and_combinations(pdqm, params: dict[str, str], who: str) -> None:
    bundle = pdqm["server"].client("hie").get("/fhir/Patient", params=params).json()
    assert [e["resource"]["id"] for e in bundle["entry"]] == [pdqm["ids"][who]]
    assert bundle["total"] == 1


def test_iti78_the_guides_example_query(ihe) -> None:
    """``family=MOHR&given=ALICE&active=true&gender=female``: Alice in every domain."""
    bundle = (
        ihe["server"]
        .client("hie")
        .get(
            "/fhir/Patient",
            params={"family": "MOHR", "given": "ALICE", "active": "true", "gender": "female"},
        )
        .json()
    )
    found = {i["system"] for e in bundle["entry"] for i in e["resource"]["identifier"]}
    assert found == {RED, GREEN, BLUE}


def test_iti78_cases_4_and_5(ihe, fhir) -> None:
    client = ihe["server"].client("hie")
    case4 = client.get(
        "/fhir/Patient", params={"family": "MOHR", "identifier": "urn:oid:9.9.9|"}
    ).json()
    assert case4["total"] == 0
    assert case4["entry"][0]["resource"]["issue"][0]["diagnostics"] == "targetSystem not found"
    fhir.outcome(client.get("/fhir/Patient", params={"family": "MOHR", "_format": "ttl"}), 406)


def test_iti119_the_guides_match_inputs(pdqm, fhir) -> None:
    client = pdqm["server"].client("hie")
    shape = example("pdqm/ex-match-output.json")

    def match(path: str) -> dict[str, Any]:
        response = send(pdqm["server"], "hie", "POST", "/fhir/Patient/$match", example(path))
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    only = match("pdqm/ex-match-input-patient-only.json")  # Case 1
    assert only["type"] == shape["type"] and only["entry"]
    best = only["entry"][0]
    assert best["resource"]["id"] == pdqm["ids"]["ex-patient"]
    assert 0 <= best["search"]["score"] <= 1
    [grade] = best["search"]["extension"]
    assert grade["url"] == shape["entry"][0]["search"]["extension"][0]["url"]
    assert grade["valueCode"] in ("certain", "probable", "possible", "certainly-not")
    certain = match("pdqm/ex-match-input-onlyCertainMatches.json")  # Case 3 or 4
    assert all(
        e["search"]["extension"][0]["valueCode"] == "certain" for e in certain.get("entry", [])
    )
    assert len(certain.get("entry", [])) <= 1
    assert len(match("pdqm/ex-match-input-count.json").get("entry", [])) <= 1  # Case 6
    bare = send(
        pdqm["server"],
        "hie",
        "POST",
        "/fhir/Patient/$match",
        example("pdqm/ex-match-input-patient.json"),
    )
    assert bare.json()["entry"][0]["resource"]["id"] == pdqm["ids"]["ex-patient"]
    # the test plan: an unrecognised modifierExtension is 400, with no Patient
    modified = example("pdqm/ex-match-input-patient.json")
    modified["modifierExtension"] = [{"url": "http://example.org/unknown", "valueBoolean": True}]
    refused = send(pdqm["server"], "hie", "POST", "/fhir/Patient/$match", modified)
    fhir.outcome(refused, 400)
    assert '"resourceType":"Patient"' not in refused.text
    # ... and an unknown (plain) extension is no failure
    extended = example("pdqm/ex-match-input-patient.json")
    extended["extension"] = [{"url": "http://example.org/unknown", "valueString": "x"}]
    assert send(pdqm["server"], "hie", "POST", "/fhir/Patient/$match", extended).status_code == 200
    assert client.get("/fhir/metadata").status_code == 200
