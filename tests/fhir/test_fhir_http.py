"""The HTTP headers of the FHIR API (:mod:`clientregistry.fhir.http`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from clientregistry.fhir.errors import FhirError
from clientregistry.fhir.http import ANY_VERSION, http_date, parse_if_match, parse_prefer


def test_http_date_is_rfc_7231_in_gmt_to_the_second() -> None:
    moment = datetime(2024, 10, 1, 14, 30, 5, 987000, tzinfo=timezone(timedelta(hours=2)))
    assert http_date(moment) == "Tue, 01 Oct 2024 12:30:05 GMT"
    with pytest.raises(ValueError):
        http_date(datetime(2024, 1, 1))  # naive: no defined instant
    assert http_date(datetime(2024, 1, 1, tzinfo=UTC)).endswith("00:00:00 GMT")


@pytest.mark.parametrize(
    ("header", "version"), [('W/"3"', 3), ('"12"', 12), (' W/"1" ', 1), ("*", ANY_VERSION)]
)
def test_if_match(header: str, version: object) -> None:
    assert parse_if_match(header) == version


@pytest.mark.parametrize("header", ["3", 'W/"x"', 'W/"0"', "", 'W/"1", W/"2"', 'W/"99999999999"'])
def test_a_bad_if_match_is_400(header: str) -> None:
    with pytest.raises(FhirError) as caught:
        parse_if_match(header)
    assert caught.value.status == 400


def test_prefer() -> None:
    assert parse_prefer([]).return_ is None
    both = parse_prefer(["return=minimal; handling=strict"])
    assert (both.return_, both.handling) == ("minimal", "strict")
    assert parse_prefer(["respond-async", "return=OperationOutcome"]).return_ == "OperationOutcome"
    assert parse_prefer(['handling="lenient", return=representation']).handling == "lenient"
    for bad in ("return=everything", "handling=loose"):
        with pytest.raises(FhirError):
            parse_prefer([bad])
