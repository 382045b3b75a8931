"""Issue #11 item 7: PIXm (ITI-83) as callers send it, over HTTPS.

``targetSystem`` repeated or comma-joined (the OpenMRS client-registry module joins them with
commas, then reads the ``targetId`` references back with ``_id=Patient/a,Patient/b``); the
patient-id form of ``sourceIdentifier`` (ITI-83 §2:3.83.4.1.2.1,
``<FHIR base>|Patient/<id>``); XML answers.
"""

from __future__ import annotations

from typing import Any

from lxml import etree
from standards import id_system, parameter_values, pix


def one_person(server: Any, fhir: Any) -> dict[str, Any]:
    person = fhir.person()
    values = {system: fhir.token() for system in ("openmrs", "dhis2", "lims")}
    ids = {}
    for system, value in values.items():
        response = server.submit(system, fhir.patient(system, value, person))
        assert response.status_code == 201, response.text
        ids[system], golden = fhir.ids(response)
    return {"values": values, "ids": ids, "golden": golden}


def identifiers(response: Any) -> set[tuple[str, str]]:
    assert response.status_code == 200, response.text
    return {
        (i["system"], i["value"]) for i in parameter_values(response.json(), "targetIdentifier")
    }


def test_target_systems_repeated_or_comma_joined(registry_server, fhir) -> None:
    person = one_person(registry_server, fhir)
    source = f"{id_system('openmrs')}|{person['values']['openmrs']}"
    wanted = {(id_system(s), person["values"][s]) for s in ("dhis2", "lims")}
    repeated = pix(registry_server, "openmrs", source, id_system("dhis2"), id_system("lims"))
    joined = pix(registry_server, "openmrs", source, f"{id_system('dhis2')},{id_system('lims')}")
    assert identifiers(repeated) == identifiers(joined) == wanted
    raw = registry_server.client("openmrs").get(
        f"/fhir/Patient/$ihe-pix?sourceIdentifier={source}"
        f"&targetSystem={id_system('dhis2')},{id_system('lims')}"
    )
    assert identifiers(raw) == wanted
    one = pix(registry_server, "openmrs", source, id_system("lims"))
    assert identifiers(one) == {(id_system("lims"), person["values"]["lims"])}
    unknown = pix(registry_server, "openmrs", source, f"{id_system('lims')},urn:oid:9.9.9")
    fhir.outcome(unknown, 403, "code-invalid")


def test_openmrs_reads_the_target_ids_back(registry_server, fhir) -> None:
    """The module's getPatientsByPIX: $ihe-pix, then _id=<targetId references>&_count=10."""
    person = one_person(registry_server, fhir)
    source = f"{id_system('openmrs')}|{person['values']['openmrs']}"
    answer = pix(registry_server, "openmrs", source, f"{id_system('dhis2')},{id_system('lims')}")
    references = [v["reference"] for v in parameter_values(answer.json(), "targetId")]
    search = registry_server.client("openmrs").get(
        "/fhir/Patient", params={"_id": ",".join(references), "_count": "10"}
    )
    assert search.status_code == 200, search.text
    found = {e["resource"]["id"] for e in search.json()["entry"]}
    assert found == {r.removeprefix("Patient/") for r in references}
    assert all("name" not in e["resource"] for e in search.json()["entry"])


def test_the_patient_id_form_of_source_identifier(registry_server, fhir) -> None:
    person = one_person(registry_server, fhir)
    base = f"{registry_server.base_url}/fhir"
    by_id = pix(registry_server, "dhis2", f"{base}|Patient/{person['ids']['openmrs']}")
    assert identifiers(by_id) == {(id_system(s), v) for s, v in person["values"].items()}
    targets = [v["reference"] for v in parameter_values(by_id.json(), "targetId")]
    assert targets[0] == f"Patient/{person['golden']}"
    assert f"Patient/{person['ids']['openmrs']}" not in targets  # the source itself
    logical = pix(
        registry_server,
        "dhis2",
        f"{id_system('dhis2')}|{person['values']['dhis2']}",
        base,
    )
    assert identifiers(logical) == {
        (base, f"Patient/{person['ids'][s]}") for s in ("openmrs", "lims")
    }
    golden = pix(registry_server, "dhis2", f"{base}|Patient/{person['golden']}")
    assert len(identifiers(golden)) == 3
    fhir.outcome(pix(registry_server, "dhis2", f"{base}|Patient/nobody"), 404, "not-found")


def test_pixm_answers_in_xml(registry_server, fhir) -> None:
    person = one_person(registry_server, fhir)
    source = f"{id_system('lims')}|{person['values']['lims']}"
    response = pix(registry_server, "lims", source, _format="application/fhir+xml")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+xml")
    root = etree.fromstring(response.content)
    names = root.findall("{http://hl7.org/fhir}parameter/{http://hl7.org/fhir}name")
    assert {n.get("value") for n in names} == {"targetId", "targetIdentifier"}
