"""PIXm cross-references (:mod:`clientregistry.registry.pix`) over the people of
:mod:`lookup_registry`.
"""

from __future__ import annotations

from typing import Any

import pytest
from lookup_registry import NID, Registry, sys_uri

from clientregistry.fhir.errors import FhirError
from clientregistry.registry.pix import PixQuery, parse_pix_query


def _params(parameters: dict[str, Any]) -> tuple[list[str], list[tuple[str, str]]]:
    assert parameters["resourceType"] == "Parameters"
    ids = [
        p["valueReference"]["reference"] for p in parameters["parameter"] if p["name"] == "targetId"
    ]
    identifiers = [
        (p["valueIdentifier"]["system"], p["valueIdentifier"]["value"])
        for p in parameters["parameter"]
        if p["name"] == "targetIdentifier"
    ]
    return ids, identifiers


def test_pix_by_internal_identifier(registry: Registry) -> None:
    ids, identifiers = _params(registry.pix(sys_uri("openmrs"), "ox1"))
    assert ids == [
        f"Patient/{registry.golden('amara-openmrs')}",
        f"Patient/{registry.record('amara-dhis2')}",
    ]
    assert sorted(identifiers) == sorted([(NID, "N-123"), (sys_uri("dhis2"), "dx1")])
    assert (sys_uri("openmrs"), "ox1") not in identifiers


def test_pix_target_system_restricts_identifiers_and_ids(registry: Registry) -> None:
    ids, identifiers = _params(registry.pix(sys_uri("openmrs"), "ox1", sys_uri("dhis2")))
    assert identifiers == [(sys_uri("dhis2"), "dx1")]
    assert ids == [
        f"Patient/{registry.golden('amara-openmrs')}",
        f"Patient/{registry.record('amara-dhis2')}",
    ]
    ids, identifiers = _params(registry.pix(sys_uri("openmrs"), "ox1", NID))
    assert identifiers == [(NID, "N-123")]
    assert f"Patient/{registry.golden('amara-openmrs')}" in ids


def test_pix_by_a_shared_identifier_lists_every_record(registry: Registry) -> None:
    ids, identifiers = _params(registry.pix(NID, "N-123"))
    assert set(ids) == {
        f"Patient/{registry.golden('amara-openmrs')}",
        f"Patient/{registry.record('amara-openmrs')}",
        f"Patient/{registry.record('amara-dhis2')}",
    }
    assert sorted(identifiers) == sorted([(sys_uri("openmrs"), "ox1"), (sys_uri("dhis2"), "dx1")])


def test_pix_target_in_the_source_system_gives_nothing_but_the_person(registry: Registry) -> None:
    ids, identifiers = _params(registry.pix(sys_uri("openmrs"), "ox1", sys_uri("openmrs")))
    assert identifiers == []
    assert ids == [f"Patient/{registry.golden('amara-openmrs')}"]


@pytest.mark.parametrize(
    ("system", "value", "targets", "status", "code", "text"),
    [
        (sys_uri("openmrs"), "nobody", (), 404, "not-found", "sourceIdentifier Patient"),
        (NID, "N-000", (), 404, "not-found", "sourceIdentifier Patient Identifier not found"),
        ("http://unknown.org/ids", "ox1", (), 400, "code-invalid", "Assigning Authority"),
        (sys_uri("openmrs"), "ox1", ("http://unknown.org",), 403, "code-invalid", "targetSystem"),
        ("http://unknown.org/ids", "x", ("http://unknown.org",), 400, "code-invalid", "Assigning"),
        (sys_uri("openmrs"), "nobody", ("http://unknown.org",), 403, "code-invalid", "target"),
    ],
)
def test_pix_errors(
    registry: Registry,
    system: str,
    value: str,
    targets: tuple[str, ...],
    status: int,
    code: str,
    text: str,
) -> None:
    with pytest.raises(FhirError) as caught:
        registry.pix(system, value, *targets)
    assert (caught.value.status, caught.value.code) == (status, code)
    assert text in caught.value.diagnostics


def test_pix_system_known_from_configuration_without_records(registry: Registry) -> None:
    with pytest.raises(FhirError) as caught:
        registry.pix(sys_uri("lims"), "nobody", sys_uri("openmrs"))
    assert caught.value.status == 404


def test_parse_pix_query() -> None:
    query = parse_pix_query(
        [
            ("sourceIdentifier", "urn:oid:1.2|A\\|1"),
            ("targetSystem", "urn:a"),
            ("targetSystem", "urn:b"),
            ("_format", "json"),
        ]
    )
    assert query == PixQuery("urn:oid:1.2", "A|1", ("urn:a", "urn:b"))


@pytest.mark.parametrize(
    ("pairs", "status"),
    [
        ([], 400),
        ([("sourceIdentifier", "urn:a|1"), ("sourceIdentifier", "urn:a|2")], 400),
        ([("sourceIdentifier", "1")], 400),
        ([("sourceIdentifier", "urn:a|")], 400),
        ([("sourceIdentifier", "urn:a|1,urn:a|2")], 400),
        ([("sourceIdentifier", "urn:a|1"), ("target", "x")], 400),
        ([("sourceIdentifier", "urn:a|1"), ("targetSystem", "")], 400),
        ([("sourceIdentifier", "urn:a|1"), ("_format", "html")], 406),
    ],
)
def test_parse_pix_query_refuses(pairs: list[tuple[str, str]], status: int) -> None:
    with pytest.raises(FhirError) as caught:
        parse_pix_query(pairs)
    assert caught.value.status == status
