"""Normalisation of field values, the same everywhere a value is compared or indexed.

Text is case-folded, stripped of accents and punctuation, and its spacing collapsed; dates
become ISO ``YYYY-MM-DD`` (or shorter, for partial dates); phone numbers become their digits;
identifiers lose spacing and punctuation.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from functools import lru_cache
from typing import Literal

ValueType = Literal["text", "date", "phone", "identifier", "code"]
VALUE_TYPES: tuple[ValueType, ...] = ("text", "date", "phone", "identifier", "code")

_NOT_WORD = re.compile(r"[^\w]+", re.UNICODE)
_APOSTROPHES = re.compile(r"[’'`´]")
_NOT_DIGIT = re.compile(r"\D+")
_NOT_ALNUM = re.compile(r"[\W_]+", re.UNICODE)
_DATE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)?)?)?")


def fold(value: str) -> str:
    """Lower-case ``value`` and strip accents (``"Ñúñez"`` -> ``"nunez"``)."""
    if value.isascii():
        return value.lower()
    decomposed = unicodedata.normalize("NFKD", value).casefold()
    decomposed = unicodedata.normalize("NFKD", decomposed)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def normalize_text(value: str) -> str:
    """Fold, drop apostrophes (``O'Brien`` -> ``obrien``), punctuation to spaces, collapse."""
    folded = fold(_APOSTROPHES.sub("", value))
    return " ".join(_NOT_WORD.sub(" ", folded).replace("_", " ").split())


PHONE_DIGITS = 9
"""Phone numbers compare on their last nine digits, so that ``+256 772 410 233`` and
``0772 410233`` agree: national significant numbers are nine or ten digits in most countries,
and what comes before them (``+``, ``00``, a country code, a trunk ``0``) varies by writer."""


def normalize_phone(value: str) -> str:
    """The last nine digits of a phone number (``"+256 774-232423"`` -> ``"774232423"``)."""
    digits = _NOT_DIGIT.sub("", value)
    return digits[-PHONE_DIGITS:]


def normalize_identifier(value: str) -> str:
    """Case-fold an identifier, drop spacing and punctuation (``"cf-219 27"`` -> ``"cf21927"``)."""
    return _NOT_ALNUM.sub("", fold(value))


def normalize_code(value: str) -> str:
    """A code (gender, status): trimmed and case-folded, nothing else."""
    return value.strip().casefold()


def parse_date(value: str) -> str | None:
    """The ISO form of a FHIR date or dateTime, or ``None`` when it is not a valid date.

    Partial dates (``"1974"``, ``"1974-12"``) stay partial; a dateTime keeps its date part.
    """
    match = _DATE.fullmatch(value.strip())
    if match is None:
        return None
    year, month, day = match.groups()
    try:
        if day is not None:
            return date(int(year), int(month), int(day)).isoformat()
        if month is not None:
            if not 1 <= int(month) <= 12:
                return None
            return f"{year}-{month}"
    except ValueError:
        return None
    return year


@lru_cache(maxsize=1 << 16)
def normalize(value: str, value_type: ValueType) -> str:
    """Normalise one primitive value of the given type; invalid dates become ``""``.

    Cached: names, cities and dates repeat across records, and this is on the hot path.
    """
    if value_type == "text":
        return normalize_text(value)
    if value_type == "date":
        return parse_date(value) or ""
    if value_type == "phone":
        return normalize_phone(value)
    if value_type == "identifier":
        return normalize_identifier(value)
    return normalize_code(value)
