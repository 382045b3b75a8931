"""Content negotiation (:mod:`clientregistry.api.formats`), without a server."""

from __future__ import annotations

import pytest

from clientregistry.api.formats import accepted_format, body_format, negotiate
from clientregistry.fhir.errors import FhirError


@pytest.mark.parametrize(
    ("accept", "fallback", "wanted"),
    [
        (None, "json", "json"),
        ("", "xml", "xml"),
        ("*/*", "xml", "xml"),
        ("application/fhir+xml", "json", "xml"),
        ("application/fhir+json;q=0.5, application/fhir+xml;q=0.9", "json", "xml"),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "json", "xml"),
        ("application/fhir+json; fhirVersion=4.0", "xml", "json"),
        ("application/fhir+xml; fhirVersion=5.0, application/json", "json", "json"),
        ("application/json+fhir", "xml", "json"),
    ],
)
def test_accept(accept: str | None, fallback: str, wanted: str) -> None:
    assert accepted_format(accept, fallback) == wanted  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "accept", ["text/html", "application/fhir+json; fhirVersion=3.0", "application/json;q=0"]
)
def test_nothing_acceptable_is_406(accept: str) -> None:
    with pytest.raises(FhirError) as caught:
        accepted_format(accept, "json")
    assert (caught.value.status, caught.value.code) == (406, "not-supported")


def test_format_parameter_wins_and_the_body_is_the_fallback() -> None:
    def scope(query: bytes, **headers: str) -> dict:
        raw = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
        return {"type": "http", "query_string": query, "headers": raw}

    assert negotiate(scope(b"_format=xml", accept="application/fhir+json")) == ("xml", None)
    assert negotiate(scope(b"", content_type="application/fhir+xml")) == ("xml", "xml")
    assert negotiate(scope(b"a=1", content_type="application/fhir+json")) == ("json", "json")
    assert body_format("application/x-www-form-urlencoded") is None
    with pytest.raises(FhirError):
        negotiate(scope(b"_format=html"))
