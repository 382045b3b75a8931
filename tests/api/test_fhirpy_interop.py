"""Issue #11: a third-party FHIR client drives the registry — fhirpy (``SyncFHIRClient`` over
``requests``, with the client certificates) creates, reads, updates conditionally, searches
with ``count()``, ``sort()``, ``elements()`` and ``fetch_all()`` across pages, and calls
``$match``. Every response body is parsed strictly with ``fhir.resources`` (R4B models,
pydantic strict mode: unknown elements and wrong types fail) by a ``requests`` hook.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from fhir.resources.R4B import get_fhir_model_class
from fhirpy import SyncFHIRClient
from standards import id_system


class StrictChecker:
    """A ``requests`` response hook: every FHIR body must parse strictly."""

    def __init__(self) -> None:
        self.checked: list[str] = []

    def __call__(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        assert response.headers.get("content-type", "").startswith("application/fhir+json"), (
            response.status_code,
            response.headers,
        )
        body = response.json()
        get_fhir_model_class(body["resourceType"]).model_validate(body, strict=True)
        self.checked.append(body["resourceType"])


@pytest.fixture
def checker() -> StrictChecker:
    return StrictChecker()


def client(server: Any, system: str, checker: StrictChecker) -> SyncFHIRClient:
    cert, key = server.cert_files(system)
    return SyncFHIRClient(
        f"{server.base_url}/fhir",
        requests_config={
            "cert": (str(cert), str(key)),
            "verify": str(server.certs_dir / "ca.pem"),
            "hooks": {"response": [checker]},
            "timeout": 30,
        },
    )


def test_fhirpy_end_to_end(registry_server, fhir, checker: StrictChecker) -> None:
    writer = client(registry_server, "openmrs", checker)
    reader = client(registry_server, "hie", checker)
    family = fhir.token("Py").capitalize()
    births = ["1980-01-05", "1961-11-30", "1999-03-12", "1975-07-21", "1955-02-14"]
    values = []
    for number, born in enumerate(births):
        value = fhir.token()
        values.append(value)
        patient = writer.resource(
            "Patient",
            identifier=[{"system": id_system("openmrs"), "value": value}],
            name=[{"use": "official", "family": family, "given": [f"Given{number}"]}],
            gender="female",
            birthDate=born,
        )
        patient.save()  # POST
        assert patient.id and patient["meta"]["versionId"] == "1"

    # read
    first = (
        reader.resources("Patient").search(identifier=f"{id_system('openmrs')}|{values[0]}").get()
    )
    same = reader.reference("Patient", first.id).to_resource()
    assert same["name"][0]["family"] == family

    # conditional update (ITI-104 style): PUT Patient?identifier=…
    changed = writer.resource(
        "Patient",
        identifier=[{"system": id_system("openmrs"), "value": values[0]}],
        name=[{"use": "official", "family": family, "given": ["Renamed"]}],
        gender="female",
        birthDate=births[0],
    )
    updated, created = (
        writer.resources("Patient")
        .search(identifier=f"{id_system('openmrs')}|{values[0]}")
        .update(changed)
    )
    assert not created and updated.id == first.id and updated["meta"]["versionId"] == "2"

    # search: count, sort, elements, fetch_all across pages
    everyone = reader.resources("Patient").search(family=family)
    assert everyone.count() == 5
    by_birth = everyone.sort("-birthdate").limit(2).fetch_all()
    assert [p["birthDate"] for p in by_birth] == sorted(births, reverse=True)
    assert {p.id for p in everyone.limit(2).fetch_all()} == {p.id for p in by_birth}
    slim = everyone.elements("name").limit(3).fetch_all()
    assert len(slim) == 5
    assert all(set(p) <= {"resourceType", "id", "meta", "name"} for p in slim)

    # $match
    match = reader.resources("Patient").execute(
        "$match",
        data={
            "resourceType": "Parameters",
            "parameter": [
                {
                    "name": "resource",
                    "resource": {
                        "resourceType": "Patient",
                        "name": [{"family": family, "given": ["Renamed"]}],
                        "gender": "female",
                        "birthDate": births[0],
                    },
                }
            ],
        },
    )
    assert match["resourceType"] == "Bundle" and match["type"] == "searchset"
    assert match["entry"][0]["resource"]["id"] == first.id

    assert checker.checked.count("Bundle") >= 8
    assert "Patient" in checker.checked
