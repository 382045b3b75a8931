"""Patient search parameters and exact matching (:mod:`clientregistry.registry.search_query`),
without a database.
"""

from __future__ import annotations

import pytest

from clientregistry.fhir.errors import FhirError
from clientregistry.fhir.search_params import query_pairs
from clientregistry.registry.search_query import (
    date_matches,
    parse_date_value,
    parse_patient_query,
    string_matches,
)


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("foo=bar", 400, "not-supported"),
        ("_sort=family", 400, "not-supported"),
        ("family:phonetic=x", 400, "not-supported"),
        ("identifier:of-type=x", 400, "not-supported"),
        ("birthdate=ap1970", 400, "not-supported"),
        ("birthdate=1970-13", 400, "invalid"),
        ("birthdate=19700101", 400, "invalid"),
        ("birthdate=1970-02-30", 400, "invalid"),
        ("active=yes", 400, "invalid"),
        ("family=", 400, "invalid"),
        ("_count=-1", 400, "invalid"),
        ("_count=1&_count=2", 400, "invalid"),
        ("_summary=true", 400, "not-supported"),
        ("_include=Patient:general-practitioner", 400, "not-supported"),
        ("_format=xml", 406, "not-supported"),
    ],
)
def test_search_refuses(query: str, status: int, code: str) -> None:
    with pytest.raises(FhirError) as caught:
        parse_patient_query(query_pairs(query))
    assert (caught.value.status, caught.value.code) == (status, code)


def test_parse_patient_query_keeps_pairs_for_links() -> None:
    query = parse_patient_query(
        [("family", "a"), ("_cursor", "x"), ("_count", "500"), ("birthdate", "ge1970,le1960")]
    )
    assert query.count == 100
    assert query.cursor == "x"
    assert query.pairs == (("family", "a"), ("_count", "500"), ("birthdate", "ge1970,le1960"))


def test_string_and_date_matching_rules() -> None:
    assert string_matches("", "nuñ", "Núñez")
    assert string_matches("", "van  der", "Van der Berg")
    assert not string_matches("", "der", "Van der Berg")
    assert string_matches("contains", "der", "Van der Berg")
    assert not string_matches("exact", "van der berg", "Van der Berg")
    year = parse_date_value("1970")
    day = parse_date_value("1970-06-15")
    assert date_matches("eq", (year.start, year.end), (day.start, day.end))
    assert not date_matches("eq", (day.start, day.end), (year.start, year.end))
    assert date_matches("ge", (day.start, day.end), (year.start, year.end))
