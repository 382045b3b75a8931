"""Search and condition parameters: tokens with escapes, _count, _summary, strictness."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from clientregistry.fhir.errors import FhirError
from clientregistry.fhir.search_params import (
    PatientSearch,
    Token,
    parse_count,
    parse_format,
    parse_identifier_condition,
    parse_patient_search,
    parse_summary,
    parse_token,
    parse_tokens,
    split_escaped,
    unescape,
)


@contextmanager
def fails(status: int, code: str) -> Iterator[None]:
    with pytest.raises(FhirError) as info:
        yield
    assert (info.value.status, info.value.code) == (status, code), info.value


@pytest.mark.parametrize(
    ("value", "token"),
    [
        ("http://x|123", Token("http://x", "123")),
        ("http://x|", Token("http://x", None)),
        ("|123", Token("", "123")),
        ("123", Token(None, "123")),
        (r"http://x|a\|b", Token("http://x", "a|b")),
        (r"a\,b", Token(None, "a,b")),
        (r"http://x|a\\", Token("http://x", "a\\")),
        (r"urn:a\$b|c", Token("urn:a$b", "c")),
    ],
)
def test_tokens(value: str, token: Token) -> None:
    assert parse_token(value) == token


@pytest.mark.parametrize("value", ["", "|", "a|b|c", r"a\x", "a\\"])
def test_bad_tokens(value: str) -> None:
    with fails(400, "invalid"):
        parse_token(value)


def test_or_lists_split_on_unescaped_commas() -> None:
    assert parse_tokens(r"s|1,s|2\,3") == (Token("s", "1"), Token("s", "2,3"))
    assert split_escaped(r"a\,b,c", ",") == [r"a\,b", "c"]
    assert unescape(r"a\|b\\c") == "a|b\\c"


def test_identifier_condition() -> None:
    assert parse_identifier_condition("identifier=http://x|1") == ("http://x", "1")
    assert parse_identifier_condition("identifier=http%3A%2F%2Fx%7C1%2B2") == ("http://x", "1+2")
    assert parse_identifier_condition([("identifier", r"s|a\|b")]) == ("s", "a|b")


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("", "invalid"),
        ("identifier=1", "invalid"),
        ("identifier=s|", "invalid"),
        ("identifier=|1", "invalid"),
        ("identifier=s|1,s|2", "invalid"),
        ("identifier=s|1&identifier=s|2", "invalid"),
        ("identifier=s|1&name=x", "not-supported"),
        ("identifier:of-type=s|1", "not-supported"),
        ("identifier", "invalid"),
        ("identifier=%ff", "invalid"),
    ],
)
def test_bad_identifier_conditions(query: str, code: str) -> None:
    with fails(400, code):
        parse_identifier_condition(query)


def test_count() -> None:
    assert parse_count("0", maximum=50) == 0
    assert parse_count("10", maximum=50) == 10
    assert parse_count("500", maximum=50) == 50
    for bad in ("-1", "1.5", "", " 1", "+1", "ten", "١"):
        with fails(400, "invalid"):
            parse_count(bad, maximum=50)


def test_summary() -> None:
    assert parse_summary("count") == "count"
    with fails(400, "invalid"):
        parse_summary("yes")
    with fails(400, "not-supported"):
        parse_summary("text", supported=("true", "false"))


def test_format() -> None:
    assert parse_format("json") == "json"
    assert parse_format("application/fhir+json; charset=utf-8") == "json"
    assert parse_format("xml") == "xml"
    assert parse_format("application/fhir+xml") == "xml"
    with fails(406, "not-supported"):
        parse_format("ttl")
    with fails(406, "not-supported"):
        parse_format("text/html")


def test_patient_search() -> None:
    search = parse_patient_search(
        "identifier=s|1,s|2&identifier=t|&_id=a,b&_count=5&_summary=true"
        "&_include=Patient:link&_format=json"
    )
    assert search == PatientSearch(
        identifier=((Token("s", "1"), Token("s", "2")), (Token("t", None),)),
        ids=(("a", "b"),),
        count=5,
        summary="true",
        include=frozenset({"Patient:link"}),
    )
    assert parse_patient_search("", default_count=7).count == 7


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("family=x", 400, "not-supported"),
        ("identifier:exact=s|1", 400, "not-supported"),
        ("_include=Patient:general-practitioner", 400, "not-supported"),
        ("_count=1&_count=2", 400, "invalid"),
        ("_count=x", 400, "invalid"),
        ("_summary=maybe", 400, "invalid"),
        ("_id=", 400, "invalid"),
        ("_format=ttl", 406, "not-supported"),
        ("a&b", 400, "invalid"),
    ],
)
def test_patient_search_is_strict(query: str, status: int, code: str) -> None:
    with fails(status, code):
        parse_patient_search(query)
