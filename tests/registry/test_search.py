"""Patient search (:mod:`clientregistry.registry.search`) over the people of
:mod:`lookup_registry`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from lookup_registry import BASE, GOLDEN_CODE, NID, Registry, patient, sys_uri


def test_search_family_is_case_and_accent_insensitive_starts_with(registry: Registry) -> None:
    muller = [registry.record("muller")]
    assert registry.found("family=Müller") == muller
    assert registry.found("family=muller") == muller
    assert registry.found("family=MUL") == muller
    assert registry.found("family=ller") == []
    assert registry.found("family:contains=LLER") == muller
    assert registry.found("family:exact=Müller") == muller
    assert registry.found("family:exact=muller") == []
    assert registry.found("given=jurg") == muller
    assert registry.found("name=jürgen") == muller
    assert registry.found("name=muller") == muller


def test_search_ascii_name_finds_accented_and_plain(registry: Registry) -> None:
    assert registry.found("family=okonkwo") == sorted(
        [registry.record("amara-openmrs"), registry.record("amara-dhis2")]
    )


def test_search_accented_value_finds_plain_records(registry: Registry) -> None:
    assert registry.found("family=Okönkwo") == sorted(
        [registry.record("amara-openmrs"), registry.record("amara-dhis2")]
    )


def test_search_values_stored_with_leading_spacing(registry: Registry) -> None:
    spacey = [registry.record("spacey")]
    assert registry.found("family=leading") == spacey
    assert registry.found("family=leading space") == spacey
    assert registry.found("family=LEADING   SPACE") == spacey
    assert registry.found("given=tabi") == spacey
    assert registry.found("family:exact=  Leading Space") == spacey
    assert registry.found("family:contains=space") == spacey


def test_search_strings_or_and_and(registry: Registry) -> None:
    testers = sorted(registry.record(f"tester-{i}") for i in range(5))
    assert registry.found("family=Tester") == testers
    assert registry.found("family=Tester&given=Anna,Ben") == sorted(
        [registry.record("tester-0"), registry.record("tester-1")]
    )
    assert registry.found("family=Tester&given=Anna&given=Ben") == []


def test_search_family_and_gender(registry: Registry) -> None:
    assert registry.found("family=Tester&gender=female") == sorted(
        registry.record(f"tester-{i}") for i in (0, 2, 4)
    )
    assert registry.found(
        "family=Tester&gender=http://hl7.org/fhir/administrative-gender|male"
    ) == sorted(registry.record(f"tester-{i}") for i in (1, 3))


def test_search_birthdate_and_family(registry: Registry) -> None:
    assert registry.found("family=Tester&birthdate=1960-02-02") == [registry.record("tester-1")]
    assert registry.found("family=Tester&birthdate=1960") == [registry.record("tester-1")]
    assert registry.found("family=Tester&birthdate=1960-02-03") == []


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("birthdate=ge1982-04-04", [3, 4]),
        ("birthdate=gt1982-04-04", [4]),
        ("birthdate=le1960-02-02", [0, 1]),
        ("birthdate=lt1960-02-02", [0]),
        ("birthdate=ne1960-02-02", [0, 2, 3, 4]),
        ("birthdate=sa1982", [4]),
        ("birthdate=eb1960-03", [0, 1]),
        ("birthdate=1950,1993", [0, 4]),
        ("birthdate=ge1960&birthdate=lt1980", [1, 2]),
    ],
)
def test_search_birthdate_prefixes(registry: Registry, query: str, expected: list[int]) -> None:
    assert registry.found(f"family=Tester&{query}") == sorted(
        registry.record(f"tester-{i}") for i in expected
    )


def test_search_partial_birth_dates(registry: Registry) -> None:
    muller = [registry.record("muller")]  # born 1970-06 (month precision)
    assert registry.found("family=Müller&birthdate=1970") == muller
    assert registry.found("family=Müller&birthdate=1970-06") == muller
    assert registry.found("family=Müller&birthdate=1970-06-15") == []
    assert registry.found("family=Müller&birthdate=ge1970-06-15") == muller
    assert registry.found("family=Müller&birthdate=lt1970-06-15") == muller
    assert registry.found("family=Müller&birthdate=gt1970-06") == []


def test_search_identifier(registry: Registry) -> None:
    amara = sorted([registry.record("amara-openmrs"), registry.record("amara-dhis2")])
    assert registry.found(f"identifier={NID}|N-123") == amara
    assert registry.found("identifier=N-123") == amara
    assert registry.found(f"identifier={sys_uri('openmrs')}|ox1") == [
        registry.record("amara-openmrs")
    ]
    assert registry.found(f"identifier={sys_uri('openmrs')}|OX1") == []
    assert registry.found(f"identifier={NID}|N-123&identifier={sys_uri('dhis2')}|") == [
        registry.record("amara-dhis2")
    ]
    assert registry.found("identifier=|N-123") == []


def test_search_index_edges(registry: Registry) -> None:
    """Values cut in the token index, characters beyond the BMP, dates without a family."""
    long_family = "Zq" + "x" * 250
    long = registry.submit(
        "edge-long",
        "openmrs",
        patient("openmrs", "edge-1", "Edge", long_family, birth="1901-01-01", gender="male"),
    ).record_id
    emoji = registry.submit(
        "edge-emoji",
        "dhis2",
        patient("dhis2", "edge-2", "Edgé", "Zq\U0001f600 Ü", birth="1901-02", gender="female"),
    ).record_id
    both = sorted([long, emoji])
    assert registry.found("family=zq") == both
    assert registry.found("family=ZQ" + "X" * 240) == [long]
    assert registry.found(f"family={long_family}") == [long]
    assert registry.found(f"family={long_family}x") == []
    assert registry.found(f"family:exact={long_family}") == [long]
    assert registry.found("family=zq\U0001f600") == [emoji]
    assert registry.found("family=zq\U0001f600 u") == [emoji]
    assert registry.found("family:contains=\U0001f600") == [emoji]
    assert registry.found("given=edge") == both
    assert registry.found("given:exact=Edgé") == [emoji]
    assert registry.found("birthdate=1901") == both
    assert registry.found("birthdate=1901-01") == [long]
    assert registry.found("birthdate=1901-02-01") == []
    assert registry.found("birthdate=le1901-12-31&given=edge") == both
    assert registry.found("birthdate=lt1901-02&given=edge") == [long]
    assert registry.found("birthdate=ge1901-02-01&given=edge") == [emoji]
    assert registry.found("birthdate=ne1901-01-01&given=edge") == [emoji]
    assert registry.found("identifier=edge-2") == [emoji]
    assert registry.found(f"identifier={sys_uri('dhis2')}|edge-2") == [emoji]
    assert registry.found(f"identifier={sys_uri('openmrs')}|edge-2") == []


def test_search_identifier_system_restricts_returned_identifiers(registry: Registry) -> None:
    bundle = registry.search(f"identifier={NID}|N-123&identifier={NID}|")
    for entry in bundle["entry"]:
        assert entry["resource"]["identifier"] == [{"system": NID, "value": "N-123"}]
    bundle = registry.search(f"identifier={NID}|N-123")
    assert len(bundle["entry"][0]["resource"]["identifier"]) == 2


def test_search_telecom_address_and_more(registry: Registry) -> None:
    muller = [registry.record("muller")]
    assert registry.found("telecom=0700111222") == [registry.record("zawadi")]
    assert registry.found("telecom=phone|0700111222") == [registry.record("zawadi")]
    assert registry.found("telecom=email|0700111222") == []
    assert registry.found("address-city=kamp") == muller
    assert registry.found("address-postalcode=256") == muller
    assert registry.found("address=plot 5") == muller
    assert registry.found("address=kampala") == muller
    assert registry.found("address:exact=Kampala") == muller
    assert registry.found("address-city=Entebbe") == []
    assert registry.found("mothersMaidenName=nak") == muller
    assert registry.found("active=true") == muller
    assert registry.found("active=false&given=Anna") == [registry.record("tester-0")]


def test_search_by_id_finds_source_and_golden_records(registry: Registry) -> None:
    record, golden = registry.record("zawadi"), registry.golden("zawadi")
    assert registry.found(f"_id={record}") == [record]
    assert registry.found(f"_id={golden}") == [golden]
    assert registry.found(f"_id={record},{golden}") == sorted([record, golden])
    assert registry.found(f"_id={record},{golden}&_id={golden}") == [golden]
    assert registry.found(f"_id={golden}&family=Kiprotich") == []
    assert registry.found(f"_id={record}&family=Kiprotich") == [record]
    assert registry.found("_id=nothing-here") == []


def test_search_include_link_adds_golden_records(registry: Registry) -> None:
    bundle = registry.search(f"identifier={sys_uri('openmrs')}|ox1&_include=Patient:link")
    modes = [(e["search"]["mode"], e["resource"]["id"]) for e in bundle["entry"]]
    assert modes == [
        ("match", registry.record("amara-openmrs")),
        ("include", registry.golden("amara-openmrs")),
    ]
    golden = bundle["entry"][1]["resource"]
    assert golden["meta"]["tag"][0]["code"] == GOLDEN_CODE
    assert bundle["total"] == 1


def test_search_include_link_of_a_golden_record_adds_its_source_records(
    registry: Registry,
) -> None:
    golden = registry.golden("amara-openmrs")
    bundle = registry.search(f"_id={golden}&_include=Patient:link")
    modes = [(e["search"]["mode"], e["resource"]["id"]) for e in bundle["entry"]]
    assert modes[0] == ("match", golden)
    assert sorted(modes[1:]) == sorted(
        [
            ("include", registry.record("amara-openmrs")),
            ("include", registry.record("amara-dhis2")),
        ]
    )


def test_search_summary_count(registry: Registry) -> None:
    bundle = registry.search("family=Tester&_summary=count")
    assert bundle["total"] == 5
    assert "entry" not in bundle
    assert registry.search("_summary=count")["total"] == len(registry.ids)
    assert registry.search("family=Tester&_count=0")["total"] == 5


def _next(bundle: dict[str, Any]) -> str | None:
    for link in bundle["link"]:
        if link["relation"] == "next":
            url = urlsplit(link["url"])
            assert url.path == "/fhir/Patient"
            return url.query
    return None


def test_search_paging_follows_next_links(registry: Registry) -> None:
    seen: list[str] = []
    query: str | None = "_count=3"
    pages = 0
    while query is not None:
        bundle = registry.search(query)
        ids = [e["resource"]["id"] for e in bundle.get("entry", [])]
        assert len(ids) <= 3
        seen += ids
        pages += 1
        if pages == 1:
            assert "total" not in bundle  # not known without reading everything
        query = _next(bundle)
        if query is not None:
            assert ("_count", "3") in parse_qsl(query)
    assert seen == sorted(seen)
    assert len(seen) == len(set(seen)) == len(registry.ids)
    assert pages == -(-len(registry.ids) // 3)


def test_search_paging_with_a_filter(registry: Registry) -> None:
    first = registry.search("family=Tester&_count=2")
    assert len(first["entry"]) == 2
    second = registry.search(_next(first) or "")
    third = registry.search(_next(second) or "")
    assert _next(third) is None
    ids = [e["resource"]["id"] for b in (first, second, third) for e in b["entry"]]
    assert ids == sorted(registry.record(f"tester-{i}") for i in range(5))
    assert first["link"][0] == {"relation": "self", "url": f"{BASE}/Patient?family=Tester&_count=2"}


def test_search_first_page_that_is_complete_has_a_total(registry: Registry) -> None:
    bundle = registry.search("family=Tester")
    assert bundle["total"] == 5
    assert [link["relation"] for link in bundle["link"]] == ["self"]


def test_search_returns_source_records_as_read(registry: Registry) -> None:
    bundle = registry.search("family=Kiprotich")
    [entry] = bundle["entry"]
    assert entry["fullUrl"] == f"{BASE}/Patient/{registry.record('zawadi')}"
    resource = entry["resource"]
    assert resource["meta"]["tag"][0]["code"] == "lims"
    assert resource["link"][0]["other"]["reference"] == f"Patient/{registry.golden('zawadi')}"
