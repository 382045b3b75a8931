"""FHIR XML through fhir.resources (:mod:`clientregistry.fhir.xml`)."""

from __future__ import annotations

import pytest

from clientregistry.fhir.errors import FhirError
from clientregistry.fhir.xml import json_to_xml, xml_to_json

PATIENT = {
    "resourceType": "Patient",
    "id": "p1",
    "meta": {"versionId": "2", "tag": [{"code": "x"}]},
    "extension": [{"url": "http://example.org/e", "valueString": "v"}],
    "identifier": [{"system": "urn:oid:1.2.3", "value": "A|1"}],
    "active": True,
    "name": [{"family": "Núñez", "given": ["Ana", "María"]}],
    "birthDate": "1958-01-30",
    "_birthDate": {"extension": [{"url": "http://example.org/t", "valueString": "12:00"}]},
    "link": [{"other": {"reference": "Patient/g"}, "type": "refer"}],
}


def test_a_patient_goes_to_xml_and_back_unchanged() -> None:
    xml = json_to_xml(PATIENT)
    assert xml.startswith(b"<?xml") and b'<family value="N' in xml
    assert xml_to_json(xml, max_bytes=1 << 20) == PATIENT


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"<Patient xmlns='http://hl7.org/fhir'", 400, "structure"),
        (b"<Patient><active value='true'/></Patient>", 400, "structure"),  # no namespace
        (b"<Nothing xmlns='http://hl7.org/fhir'/>", 400, "invalid"),
        (b"<Patient xmlns='http://hl7.org/fhir'><nick value='x'/></Patient>", 400, "structure"),
        (
            b"<Patient xmlns='http://hl7.org/fhir'><birthDate value='1990-02-30'/></Patient>",
            400,
            "invalid",
        ),
        (
            b"<!DOCTYPE p [<!ENTITY a 'b'>]><Patient xmlns='http://hl7.org/fhir'>"
            b"<id value='&a;'/></Patient>",
            400,
            "structure",
        ),
        (b"<Patient xmlns='http://hl7.org/fhir'/>" + b" " * 100, 413, "too-costly"),
    ],
)
def test_bad_xml_is_a_clear_error(body: bytes, status: int, code: str) -> None:
    with pytest.raises(FhirError) as caught:
        xml_to_json(body, max_bytes=100)
    assert (caught.value.status, caught.value.code) == (status, code), caught.value
