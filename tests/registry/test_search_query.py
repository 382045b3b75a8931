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
        ("_sort=address", 400, "not-supported"),
        ("_sort=family,gender", 400, "not-supported"),
        ("_total=maybe", 400, "invalid"),
        ("_elements=name,_bad", 400, "invalid"),
        ("_lastUpdated=gt2024-13", 400, "invalid"),
        ("_lastUpdated=2024-01-01T25:00", 400, "invalid"),
        ("_lastUpdated=ap2024", 400, "not-supported"),
        ("deceased=maybe", 400, "invalid"),
        ("death-date=1990-02-30", 400, "invalid"),
        ("_offset=x", 400, "invalid"),
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
        ("_format=turtle", 406, "not-supported"),
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


def test_lenient_parsing_leaves_out_what_it_does_not_know() -> None:
    query = parse_patient_query(
        query_pairs(
            "family=a&nickname=b&family:phonetic=c&_summary=true&_include=Patient:organization"
            "&_totalMethod=count&_cursor=x"
        ),
        strict=False,
    )
    assert [f.param for f in query.filters] == ["family"]
    assert [name for name, _, _ in query.ignored] == [
        "nickname",
        "family:phonetic",
        "_summary",
        "_include",
        "_totalMethod",
    ]
    assert query.pairs == (("family", "a"),)  # the self link: what was used
    with pytest.raises(FhirError) as caught:  # a malformed value is still an error
        parse_patient_query(query_pairs("birthdate=1970-13&nickname=b"), strict=False)
    assert caught.value.code == "invalid"


def test_last_updated_ranges_and_their_precision() -> None:
    from datetime import UTC, datetime

    from clientregistry.registry.search_query import parse_instant_range

    day = parse_instant_range("gt2024-03-05")
    assert (day.prefix, day.start, day.end) == (
        "gt",
        datetime(2024, 3, 5, tzinfo=UTC),
        datetime(2024, 3, 6, tzinfo=UTC),
    )
    month = parse_instant_range("2024-02")
    assert month.end == datetime(2024, 3, 1, tzinfo=UTC)
    zoned = parse_instant_range("le2024-03-05T10:30+02:00")
    assert zoned.start == datetime(2024, 3, 5, 8, 30, tzinfo=UTC)
    assert zoned.end == datetime(2024, 3, 5, 8, 31, tzinfo=UTC)
    second = parse_instant_range("2024-03-05T10:30:15Z")
    assert (second.end - second.start).total_seconds() == 1


def test_sort_elements_total_and_ids() -> None:
    query = parse_patient_query(
        query_pairs(
            "_sort=-birthdate,family&_elements=name,birthDate&_total=accurate&_id=Patient/a"
        )
    )
    assert [(k.name, k.descending) for k in query.sort] == [("birthdate", True), ("family", False)]
    assert query.elements == ("name", "birthDate") and not query.leave_out
    assert query.total == "accurate"
    assert query.id_set == frozenset({"a"})  # OpenMRS sends _id=Patient/<id>
    assert parse_patient_query(query_pairs("_elements=-telecom,-address")).leave_out


def test_at_most_a_hundred_values_of_one_parameter() -> None:
    """Repeated (AND) and comma-separated (OR) values count together; more is 400
    ``too-costly`` naming the parameter (SQLite's expression tree overflows near 1,000)."""
    parse_patient_query([("family", ",".join(f"n{i}" for i in range(100))), ("given", "x")])
    for pairs in (
        [("family", ",".join(f"n{i}" for i in range(101)))],
        [("family", f"n{i}") for i in range(101)],
        [("family", ",".join(f"n{i}" for i in range(60))), ("family:exact", "a," * 40 + "b")],
    ):
        with pytest.raises(FhirError) as info:
            parse_patient_query(pairs)
        assert (info.value.status, info.value.code) == (400, "too-costly")
        assert info.value.issues[0].expression == ("family",)
