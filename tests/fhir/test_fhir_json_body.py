"""Reading request bodies as FHIR JSON: numbers the registry can store and serialise again."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clientregistry.fhir.errors import FhirError
from clientregistry.fhir.json_body import INT64_MAX, INT64_MIN, load_json

LIMIT = 1_000_000


def test_numbers_within_range_are_read_as_they_are() -> None:
    body = b'{"a": [1, -9223372036854775808, 9223372036854775807, 1.5e300, -0.0, 2.5]}'
    assert load_json(body, max_bytes=LIMIT) == {"a": [1, INT64_MIN, INT64_MAX, 1.5e300, -0.0, 2.5]}


@pytest.mark.parametrize(
    ("literal", "said"),
    [
        ("9223372036854775808", "the integer 9223372036854775808 does not fit in 64 bits"),
        ("-9223372036854775809", "does not fit in 64 bits"),
        ("9" * 5000, "(5000 digits) does not fit in 64 bits"),
        ("1e400", "the number 1e400 is too large for a decimal"),
        ("-1E999", "too large for a decimal"),
    ],
)
def test_numbers_out_of_range_are_400_structure(literal: str, said: str) -> None:
    with pytest.raises(FhirError) as raised:
        load_json(f'{{"n": [{literal}]}}'.encode(), max_bytes=LIMIT)
    assert raised.value.status == 400
    assert said in str(raised.value)
    assert "set_int_max_str_digits" not in str(raised.value)


@given(st.recursive(st.integers() | st.floats(allow_nan=False), st.lists, max_leaves=20))
def test_whatever_is_accepted_serialises_again(value: object) -> None:
    """The registry re-serialises resources with orjson (NUL check, storage): whatever the
    reader accepts must survive that unchanged, and what it refuses is a 400."""
    try:
        read = load_json(json.dumps(value).encode(), max_bytes=LIMIT)
    except FhirError as error:
        assert error.status == 400
        return
    assert orjson.loads(orjson.dumps(read)) == read == value
