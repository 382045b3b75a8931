"""Issue #11 item 8: golden and source records as PDQm expects, over HTTPS.

The PDQm Patient profile (``IHE.PDQm.Patient``): a Patient with a ``link`` carries
``active`` (invariant iti-pdqm-linkstatus, checked here with FHIRPath as the profile states
it); the records of one person describe their relationships with ``link`` (source records
``refer`` to the golden record, which has ``seealso`` to each); a subsumed record is inactive
and points at its survivor with ``replaced-by``. Golden records carry ``active``; the golden
record is the person (README, "Standards").
"""

from __future__ import annotations

from typing import Any

from fhirpathpy import evaluate

LINKSTATUS = "link.exists() implies active.exists()"
"""iti-pdqm-linkstatus, from PDQmPatient.fsh (IHE ITI PDQm, CC BY 4.0)."""


def obeys_pdqm(resource: dict[str, Any]) -> None:
    assert evaluate(resource, LINKSTATUS) == [True], resource


def test_a_person_two_sources_and_the_golden_record(registry_server, fhir) -> None:
    person = fhir.person()
    first = registry_server.submit("openmrs", fhir.patient("openmrs", demographics=person))
    second = registry_server.submit(
        "dhis2", fhir.patient("dhis2", demographics=person, active=False)
    )
    a_id, golden_id = fhir.ids(first)
    b_id, golden_b = fhir.ids(second)
    assert golden_b == golden_id
    golden = registry_server.read("hie", golden_id).json()
    assert golden["active"] is True
    assert sorted(fhir.links(golden, "seealso")) == sorted([f"Patient/{a_id}", f"Patient/{b_id}"])
    a = registry_server.read("hie", a_id).json()
    b = registry_server.read("hie", b_id).json()
    assert a["active"] is True  # not sent: a linked Patient carries active
    assert b["active"] is False  # as the source said
    for record in (a, b):
        assert fhir.links(record, "refer") == [f"Patient/{golden_id}"]
    for resource in (golden, a, b):
        obeys_pdqm(resource)
    # the same in a search with the golden records included, and for a caller without
    # demographics
    for system in ("hie", "openmrs"):
        bundle = (
            registry_server.client(system)
            .get("/fhir/Patient", params={"_id": f"{a_id},{b_id}", "_include": "Patient:link"})
            .json()
        )
        for entry in bundle["entry"]:
            obeys_pdqm(entry["resource"])


def test_a_subsumed_record_and_a_retired_golden_record(registry_server, fhir) -> None:
    survivor_value, duplicate_value = fhir.token(), fhir.token()
    survivor = registry_server.submit("lims", fhir.patient("lims", survivor_value))
    duplicate = registry_server.submit("lims", fhir.patient("lims", duplicate_value))
    s_id, s_golden = fhir.ids(survivor)
    d_id, d_golden = fhir.ids(duplicate)
    resolve = fhir.patient("lims", duplicate_value, active=False)
    resolve["link"] = [
        {
            "other": {
                "identifier": {"system": "http://clientregistry.org/lims", "value": survivor_value}
            },
            "type": "replaced-by",
        }
    ]
    assert registry_server.submit("lims", resolve).status_code == 200
    subsumed = registry_server.read("hie", d_id).json()
    kept = registry_server.read("hie", s_id).json()
    retired = registry_server.read("hie", d_golden).json()
    golden = registry_server.read("hie", s_golden).json()
    assert subsumed["active"] is False
    assert fhir.links(subsumed, "replaced-by") == [f"Patient/{s_id}"]
    assert kept["active"] is True and fhir.links(kept, "replaces") == [f"Patient/{d_id}"]
    assert [r["active"] for r in (subsumed, kept)].count(True) == 1
    assert retired["active"] is False and fhir.links(retired, "replaced-by") == [
        f"Patient/{s_golden}"
    ]
    assert golden["active"] is True
    for resource in (subsumed, kept, retired, golden):
        obeys_pdqm(resource)
