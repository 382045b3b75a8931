"""Batch/transaction Bundles: parsing, error locations, response Bundles and headers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle

from clientregistry.fhir.bundle import (
    BadEntry,
    BundleEntry,
    EntryResponse,
    location_headers,
    parse_bundle,
    response_bundle,
    status_line,
)
from clientregistry.fhir.codes import CRUID_EXTENSION
from clientregistry.fhir.errors import FhirError, not_found
from clientregistry.fhir.validation import validate_resource

PATIENT = {
    "resourceType": "Patient",
    "identifier": [{"system": "http://clientregistry.org/openmrs", "value": "1"}],
    "gender": "male",
}


def entry(method: str = "POST", url: str = "Patient", **extra: Any) -> dict[str, Any]:
    resource = extra.pop("resource", PATIENT)
    full_url = extra.pop("fullUrl", None)
    out: dict[str, Any] = {"request": {"method": method, "url": url, **extra}}
    if full_url is not None:
        out["fullUrl"] = full_url
    if resource is not None:
        out["resource"] = resource
    return out


def bundle(*entries: dict[str, Any], type: str = "batch", **extra: Any) -> bytes:
    return json.dumps(
        {"resourceType": "Bundle", "type": type, "entry": list(entries), **extra}
    ).encode()


def bad(parsed: Any, index: int) -> FhirError:
    item = parsed.entries[index]
    assert isinstance(item, BadEntry), item
    assert item.index == index
    return item.error


def test_the_three_kinds_of_entry() -> None:
    put = dict(PATIENT, id="abc")
    parsed = parse_bundle(
        bundle(
            entry(fullUrl="urn:uuid:1"),
            entry("PUT", "Patient/abc", resource=put, ifMatch='W/"2"'),
            entry("PUT", "Patient?identifier=http://clientregistry.org/openmrs|1"),
        )
    )
    assert parsed.type == "batch"
    first, second, third = parsed.entries
    assert isinstance(first, BundleEntry)
    assert (first.kind, first.method, first.full_url) == ("create", "POST", "urn:uuid:1")
    assert first.resource == PATIENT and first.expression == "Bundle.entry[0]"
    assert isinstance(second, BundleEntry)
    assert (second.kind, second.id, second.if_match) == ("update", "abc", 'W/"2"')
    assert isinstance(third, BundleEntry)
    assert third.kind == "conditional-update"
    assert third.condition == ("http://clientregistry.org/openmrs", "1")


def test_empty_bundle() -> None:
    assert parse_bundle(bundle()).entries == ()
    no_entry = json.dumps({"resourceType": "Bundle", "type": "transaction"}).encode()
    assert parse_bundle(no_entry).type == "transaction"


@pytest.mark.parametrize(
    ("raw", "status", "code", "expression"),
    [
        (b"{", 400, "structure", []),
        (json.dumps({"resourceType": "Patient"}).encode(), 400, "invalid", []),
        (json.dumps({"resourceType": "Bundle"}).encode(), 400, "invalid", ["Bundle.type"]),
        (bundle(type="collection"), 400, "invalid", ["Bundle.type"]),
        (bundle(type="searchset"), 400, "invalid", ["Bundle.type"]),
        (
            json.dumps({"resourceType": "Bundle", "type": "batch", "entry": {}}).encode(),
            400,
            "structure",
            ["Bundle.entry"],
        ),
        (bundle(timestamp="yesterday"), 400, "invalid", ["Bundle.timestamp"]),
        (bundle(foo=1), 400, "invalid", ["Bundle.foo"]),
    ],
)
def test_bundle_level_errors_raise(
    raw: bytes, status: int, code: str, expression: list[str]
) -> None:
    with pytest.raises(FhirError) as info:
        parse_bundle(raw)
    assert (info.value.status, info.value.code, info.value.expression) == (
        status,
        code,
        expression,
    )


def test_size_and_entry_limits_are_413() -> None:
    raw = bundle(entry(), entry(), entry())
    with pytest.raises(FhirError) as info:
        parse_bundle(raw, max_bytes=10)
    assert (info.value.status, info.value.code) == (413, "too-costly")
    with pytest.raises(FhirError) as info:
        parse_bundle(raw, max_entries=2)
    assert (info.value.status, info.value.code, info.value.expression) == (
        413,
        "too-costly",
        ["Bundle.entry"],
    )


@pytest.mark.parametrize(
    ("item", "code", "expression"),
    [
        ("x", "structure", "Bundle.entry[1]"),
        ({}, "structure", "Bundle.entry[1]"),
        ({"resource": PATIENT}, "required", "Bundle.entry[1].request"),
        (entry("GET", "Patient/1"), "not-supported", "Bundle.entry[1].request.method"),
        (entry("DELETE", "Patient/1"), "not-supported", "Bundle.entry[1].request.method"),
        (entry("FETCH", "Patient"), "value", "Bundle.entry[1].request.method"),
        (entry("POST", "Observation"), "not-supported", "Bundle.entry[1].request.url"),
        (entry("POST", "Patient/1"), "not-supported", "Bundle.entry[1].request.url"),
        (entry("POST", "http://x/fhir/Patient"), "not-supported", "Bundle.entry[1].request.url"),
        (entry("PUT", "Patient"), "not-supported", "Bundle.entry[1].request.url"),
        (entry("PUT", "Patient/a b"), "not-supported", "Bundle.entry[1].request.url"),
        (entry("PUT", "Patient?identifier=1"), "invalid", "Bundle.entry[1].request.url"),
        (entry("PUT", "Patient?identifier=a|"), "invalid", "Bundle.entry[1].request.url"),
        (entry("PUT", "Patient?name=x"), "not-supported", "Bundle.entry[1].request.url"),
        (entry("PUT", "Patient?identifier=a|1,b|2"), "invalid", "Bundle.entry[1].request.url"),
        (
            entry("PUT", "Patient/abc", resource=dict(PATIENT, id="abc"), ifNoneExist="_id=a"),
            "not-supported",
            "Bundle.entry[1].request.ifNoneExist",
        ),
        (entry(ifNoneMatch='W/"1"'), "not-supported", "Bundle.entry[1].request.ifNoneMatch"),
        (
            {"request": {"method": "POST"}, "resource": PATIENT},
            "required",
            "Bundle.entry[1].request.url",
        ),
        (entry(resource=None), "required", "Bundle.entry[1].resource"),
        (entry(resource="Patient"), "structure", "Bundle.entry[1].resource"),
        (entry(resource={"resourceType": "Observation"}), "invalid", "Bundle.entry[1].resource"),
        (
            entry(resource=dict(PATIENT, birthDate="1990-02-30")),
            "value",
            "Bundle.entry[1].resource.birthDate",
        ),
        (entry(resource=dict(PATIENT, gender="mail")), "value", "Bundle.entry[1].resource.gender"),
        (entry("PUT", "Patient/abc"), "invalid", "Bundle.entry[1].resource.id"),
        (entry(fullUrl=""), "value", "Bundle.entry[1].fullUrl"),
        (dict(entry(), bogus=1), "structure", "Bundle.entry[1].bogus"),
    ],
)
def test_batch_entry_errors_are_located_and_do_not_stop_the_batch(
    item: Any, code: str, expression: str
) -> None:
    parsed = parse_bundle(bundle(entry(), item, entry()))
    assert isinstance(parsed.entries[0], BundleEntry)
    assert isinstance(parsed.entries[2], BundleEntry)
    error = bad(parsed, 1)
    assert error.status == 400
    assert error.issues[0].code == code
    assert expression in error.issues[0].expression, error.issues
    assert error.issues[0].diagnostics.startswith(expression)


def test_transaction_fails_whole_on_any_bad_entry() -> None:
    raw = bundle(
        entry(),
        entry("PUT", "Patient/1"),
        entry(resource=dict(PATIENT, gender="mail")),
        type="transaction",
    )
    with pytest.raises(FhirError) as info:
        parse_bundle(raw)
    error = info.value
    assert (error.status, error.code) == (400, "invalid")
    assert [i.expression for i in error.issues] == [
        ("Bundle.entry[1].resource.id",),
        ("Bundle.entry[2].resource.gender",),
    ]


def test_transaction_with_one_bad_entry_raises_that_error() -> None:
    raw = bundle(entry(), entry("POST", "Observation"), type="transaction")
    with pytest.raises(FhirError) as info:
        parse_bundle(raw)
    assert (info.value.code, info.value.expression) == (
        "not-supported",
        ["Bundle.entry[1].request.url"],
    )


def test_transaction_may_not_target_one_resource_twice() -> None:
    cond = "Patient?identifier=http://clientregistry.org/openmrs|1"
    raw = bundle(entry("PUT", cond), entry(), entry("PUT", cond), type="transaction")
    with pytest.raises(FhirError) as info:
        parse_bundle(raw)
    assert info.value.expression == ["Bundle.entry[2].request.url"]
    assert "entry 0" in info.value.diagnostics
    # the same in a batch is left to the API (entries run one after the other)
    assert all(
        isinstance(e, BundleEntry)
        for e in parse_bundle(bundle(entry("PUT", cond), entry("PUT", cond))).entries
    )


WHEN = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def responses() -> list[EntryResponse]:
    return [
        EntryResponse(201, id="s1", version=1, cruid="g1", last_modified=WHEN),
        EntryResponse(
            200, id="s2", version="4", cruid="Patient/g1", resource=dict(PATIENT, id="s2")
        ),
        EntryResponse.from_error(not_found("Patient", "zz")),
    ]


@pytest.mark.parametrize("kind", ["batch", "transaction"])
def test_response_bundle_validates_and_carries_the_cruid(kind: Any) -> None:
    out = response_bundle(kind, responses(), id="r1", timestamp=WHEN)
    Bundle.model_validate(out)
    assert validate_resource(out, Bundle, "Bundle") == []
    assert out["type"] == f"{kind}-response"
    assert out["timestamp"] == "2024-05-01T12:00:00.000Z"
    first, second, third = (e["response"] for e in out["entry"])
    assert first == {
        "extension": [{"url": CRUID_EXTENSION, "valueReference": {"reference": "Patient/g1"}}],
        "status": "201 Created",
        "location": "Patient/s1/_history/1",
        "etag": 'W/"1"',
        "lastModified": "2024-05-01T12:00:00.000Z",
    }
    assert second["status"] == "200 OK"
    assert out["entry"][1]["fullUrl"] == "Patient/s2"
    assert out["entry"][1]["resource"]["id"] == "s2"
    assert third["status"] == "404 Not Found"
    assert third["outcome"]["issue"][0]["code"] == "not-found"
    assert "location" not in third and "extension" not in third


def test_empty_response_bundle_validates() -> None:
    out = response_bundle("batch", [])
    assert out == {"resourceType": "Bundle", "type": "batch-response"}
    Bundle.model_validate(out)


def test_opencr_style_headers() -> None:
    assert location_headers(responses()) == {
        "Location": '["Patient/s1","Patient/s2"]',
        "LocationCRUID": '["Patient/g1","Patient/g1"]',
    }


def test_status_line() -> None:
    assert status_line(201) == "201 Created"
    assert status_line(422) == "422 Unprocessable Entity"
    assert status_line(299) == "299"
