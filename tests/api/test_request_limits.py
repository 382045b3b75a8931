"""Unit tests of the request limits (api/request_limits.py) and the admin body checks
(api/body_guard.py); tests/api/test_hostile_requests.py sends the same over HTTPS."""

from __future__ import annotations

from typing import Any

import pytest

from clientregistry.api.body_guard import FORM, _body_nul_field, nul_field
from clientregistry.api.request_limits import (
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    MAX_HEADERS_BYTES,
    header_problem,
    nul_parameter,
)


def test_headers_within_the_limits_pass() -> None:
    headers = [(f"x-{i}".encode(), b"a" * 100) for i in range(MAX_HEADERS)]
    assert header_problem(headers) is None


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ([(b"x", b"a")] * (MAX_HEADERS + 1), "101 header fields"),
        ([(b"x-big", b"a" * MAX_HEADER_BYTES)], "'x-big'"),
        ([(b"x", b"a" * (MAX_HEADER_BYTES - 10))] * 5, f"at most {MAX_HEADERS_BYTES}"),
    ],
    ids=["count", "one", "total"],
)
def test_headers_over_the_limits_are_named(headers: list[Any], words: str) -> None:
    problem = header_problem(headers)
    assert problem is not None and words in problem


@pytest.mark.parametrize(
    ("path", "query", "found"),
    [
        ("/fhir/Patient", b"family=Smith&given=Jo", None),
        ("/fhir/Patient", b"family=Sm%00ith", "family"),
        ("/fhir/Patient", b"given=a&fam%00ily=x", "family"),
        ("/fhir/Patient/a\x00b", b"", "path"),
        ("/admin/people", b"name=%2500", None),  # an escaped percent sign, not a NUL
    ],
)
def test_a_nul_is_found_in_the_path_or_named_in_the_query(
    path: str, query: bytes, found: str | None
) -> None:
    assert nul_parameter({"path": path, "query_string": query}) == found


def test_nul_field_gives_the_path_of_the_first_nul() -> None:
    assert nul_field({"a": [{"b": "ok"}, {"c": "x\x00"}]}) == "body.a[1].c"
    assert nul_field({"a\x00": 1}) == "body"
    assert nul_field({"a": ["fine", 1, None, True]}) is None


@pytest.mark.parametrize(
    ("media", "body", "found"),
    [
        ("application/json", b'{"reason": "a\\u0000b"}', "body.reason"),
        ("application/json", b'{"reason": "a\\\\u0000b"}', None),  # a backslash, then text
        ("application/json", b'{"reason": "plain"}', None),
        (FORM, b"username=a%00b&password=x", "body.username"),
        (FORM, b"username=ab&password=x", None),
    ],
)
def test_body_nul_fields(media: str, body: bytes, found: str | None) -> None:
    assert _body_nul_field(media, body) == found
