"""Tests of value normalisation: text, dates, phones, identifiers and codes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clientregistry.matching.normalize import (
    PHONE_DIGITS,
    VALUE_TYPES,
    fold,
    normalize,
    normalize_code,
    normalize_identifier,
    normalize_phone,
    normalize_text,
    parse_date,
)

# ----------------------------------------------------------------------------- text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Ñúñez", "nunez"),
        ("ZOË", "zoe"),
        ("Émile", "emile"),
        ("façade", "facade"),
        ("Straße", "strasse"),  # casefold, not lower
        ("plain", "plain"),
        ("MiXeD", "mixed"),
    ],
)
def test_fold_lowercases_and_strips_accents(raw: str, expected: str) -> None:
    assert fold(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("O'Brien", "obrien"),
        ("O’Brien", "obrien"),  # typographic apostrophe
        ("O`Brien", "obrien"),
        ("d’Arc", "darc"),
        ("Jean-Luc", "jean luc"),
        ("Smith, Jr.", "smith jr"),
        ("  Mary   Ann  ", "mary ann"),
        ("Mary\tAnn\nLee", "mary ann lee"),
        ("a_b", "a b"),
        ("Ñúñez-O'Brien,  Jr. ", "nunez obrien jr"),
        ("...", ""),
        ("", ""),
        ("Namaalwa Emmanuel", "namaalwa emmanuel"),
    ],
)
def test_normalize_text(raw: str, expected: str) -> None:
    assert normalize_text(raw) == expected
    assert normalize(raw, "text") == expected


def test_normalize_text_drops_acute_accent_apostrophe() -> None:
    # NFKD would turn '´' (U+00B4) into ' ' + U+0301: apostrophes go before folding
    assert normalize_text("O´Brien") == "obrien"
    assert normalize_text("O´Brien") == normalize_text("O'Brien") == normalize_text("O’Brien")


def test_normalize_text_keeps_digits() -> None:
    assert normalize_text("Plot 12B, Kampala Rd.") == "plot 12b kampala rd"


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=30))
def test_normalize_text_is_idempotent_and_clean(raw: str) -> None:
    once = normalize_text(raw)
    assert normalize_text(once) == once
    assert once == once.strip()
    assert "  " not in once
    assert "'" not in once
    assert "_" not in once


# ----------------------------------------------------------------------------- dates


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1974-12-25", "1974-12-25"),
        ("2000-02-29", "2000-02-29"),  # leap day
        (" 1974-12-25 ", "1974-12-25"),
        ("1974-12-25T10:00:00Z", "1974-12-25"),  # dateTime keeps its date part
        ("1974-12-25T10:00:00+03:00", "1974-12-25"),
        ("1974-12", "1974-12"),  # partial dates stay partial
        ("1974", "1974"),
    ],
)
def test_parse_date_valid_and_partial(raw: str, expected: str) -> None:
    assert parse_date(raw) == expected
    assert normalize(raw, "date") == expected


@pytest.mark.parametrize(
    "raw",
    [
        "1974-02-30",  # no such day
        "1900-02-29",  # not a leap year
        "1974-13-01",
        "1974-00-10",
        "1974-12-32",
        "1974-13",
        "1974-00",
        "12/25/1974",
        "25.12.1974",
        "abcd",
        "",
        "   ",
        "74-12-25",
    ],
)
def test_parse_date_invalid(raw: str) -> None:
    assert parse_date(raw) is None
    assert normalize(raw, "date") == ""


@pytest.mark.parametrize("raw", ["19741225", "1974-1-5", "1974-12-25junk"])
def test_parse_date_rejects_malformed_dates(raw: str) -> None:
    # '19741225' -> '1974' makes it agree exactly with every other 1974 birth date.
    assert parse_date(raw) is None


# ----------------------------------------------------------------------------- phones


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ("+256 772 410 233", "0772410233"),
        ("+256 772 410 233", "0772 410233"),
        ("00256772410233", "772-410-233"),
        ("(077) 241-0233", "+256772410233"),
    ],
)
def test_phone_numbers_written_differently_agree(left: str, right: str) -> None:
    assert normalize_phone(left) == normalize_phone(right) == "772410233"
    assert normalize(left, "phone") == normalize(right, "phone")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+256 774-232423", "774232423"),
        ("774 232423", "774232423"),
        ("12-34", "1234"),  # shorter than nine digits: all of them
        ("no digits", ""),
        ("", ""),
    ],
)
def test_normalize_phone(raw: str, expected: str) -> None:
    assert normalize_phone(raw) == expected


def test_phone_keeps_last_nine_digits() -> None:
    assert PHONE_DIGITS == 9
    assert normalize_phone("+1 (212) 555-0199") == "125550199"
    assert normalize_phone("0772410233") != normalize_phone("0772410234")


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="0123456789 +-()", max_size=20))
def test_normalize_phone_is_digits_only_and_short(raw: str) -> None:
    out = normalize_phone(raw)
    assert out == "" or out.isdigit()
    assert len(out) <= PHONE_DIGITS
    assert normalize_phone(out) == out


# ----------------------------------------------------------------------------- identifiers, codes


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("cf-219 27", "cf21927"),
        ("CF-219 27", "cf21927"),
        (" AB.12/34 ", "ab1234"),
        ("É_1", "e1"),
        ("12349", "12349"),
        ("--", ""),
    ],
)
def test_normalize_identifier(raw: str, expected: str) -> None:
    assert normalize_identifier(raw) == expected
    assert normalize(raw, "identifier") == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Male ", "male"),
        ("FEMALE", "female"),
        ("un-known", "un-known"),  # codes keep their punctuation
        ("a b", "a b"),
    ],
)
def test_normalize_code(raw: str, expected: str) -> None:
    assert normalize_code(raw) == expected
    assert normalize(raw, "code") == expected


def test_every_value_type_is_dispatched() -> None:
    assert set(VALUE_TYPES) == {"text", "date", "phone", "identifier", "code"}
    raw = " O'Neil-1974-12-25 "
    outputs = {value_type: normalize(raw, value_type) for value_type in VALUE_TYPES}
    assert outputs == {
        "text": "oneil 1974 12 25",
        "date": "",
        "phone": "19741225",
        "identifier": "oneil19741225",
        "code": "o'neil-1974-12-25",
    }
