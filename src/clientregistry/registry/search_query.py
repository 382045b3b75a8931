"""Patient search parameters (PDQm ITI-78): :func:`parse_patient_query`, and whether a Patient
matches the parsed query, checked exactly in Python (:func:`patient_matches`).

Parameters: ``_id``, ``identifier``, ``family``, ``given``, ``name``, ``birthdate`` (prefixes
eq ne gt lt ge le sa eb), ``gender``, ``telecom``, ``address``, ``address-city``,
``address-postalcode``, ``address-state``, ``address-country``, ``mothersMaidenName``,
``active``; ``:exact`` and ``:contains`` on strings (plain: case- and accent-insensitive
starts-with); ``_count``, ``_summary=count``, ``_include=Patient:link``, ``_format``, and
``_cursor`` (the paging cursor ``next`` links carry). Anything else is 400 ``not-supported``:
an ignored filter would return the wrong patients. Repeated parameters AND, comma-separated
values OR.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Final, Literal, cast

from clientregistry.fhir.errors import bad_request
from clientregistry.fhir.search_params import (
    Token,
    not_supported,
    parse_count,
    parse_format,
    parse_summary,
    parse_tokens,
    split_escaped,
    unescape,
)
from clientregistry.matching.normalize import parse_date
from clientregistry.registry.search_tokens import folded, string_values

StringModifier = Literal["", "exact", "contains"]
DatePrefix = Literal["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"]

STRING_PARAMS: Final = frozenset(
    {
        "family",
        "given",
        "name",
        "address",
        "address-city",
        "address-postalcode",
        "address-state",
        "address-country",
        "mothersMaidenName",
    }
)
TOKEN_PARAMS: Final = frozenset({"identifier", "telecom", "gender", "active"})
DATE_PARAMS: Final = frozenset({"birthdate"})
INCLUDES: Final = frozenset({"Patient:link", "Patient:link:Patient"})
DEFAULT_COUNT: Final = 20
MAX_COUNT: Final = 100
SUPPORTED: Final = (
    "_id, identifier, family, given, name, birthdate, gender, telecom, address, address-city, "
    "address-postalcode, address-state, address-country, mothersMaidenName, active, _count, "
    "_summary=count, _include=Patient:link, _format"
)
GENDER_SYSTEM: Final = "http://hl7.org/fhir/administrative-gender"

_DATE_VALUE = re.compile(r"(eq|ne|gt|lt|ge|le|sa|eb|ap)?(\d{4}(?:-\d{2}(?:-\d{2})?)?)")
_SINGLE = frozenset({"_count", "_summary", "_format", "_cursor"})


@dataclass(frozen=True, slots=True)
class StringFilter:
    param: str
    modifier: StringModifier
    values: tuple[str, ...]
    """Alternatives (OR)."""


@dataclass(frozen=True, slots=True)
class TokenFilter:
    param: str
    tokens: tuple[Token, ...]


@dataclass(frozen=True, slots=True)
class DateValue:
    prefix: DatePrefix
    text: str
    """The date as written (``1980``, ``1980-05``, ``1980-05-17``)."""
    start: date
    end: date


@dataclass(frozen=True, slots=True)
class DateFilter:
    param: str
    values: tuple[DateValue, ...]


Filter = StringFilter | TokenFilter | DateFilter


@dataclass(frozen=True, slots=True)
class PatientQuery:
    """A parsed Patient search."""

    filters: tuple[Filter, ...] = ()
    ids: tuple[tuple[str, ...], ...] = ()
    count: int = DEFAULT_COUNT
    summary_count: bool = False
    include_links: bool = False
    cursor: str | None = None
    domains: frozenset[str] = frozenset()
    """``identifier=system|``: only identifiers of these systems are returned."""
    pairs: tuple[tuple[str, str], ...] = ()
    """The parameters as given, without ``_cursor`` (for paging links)."""

    @property
    def id_set(self) -> frozenset[str] | None:
        """The ids ``_id`` allows (AND of ORs), None without ``_id``."""
        if not self.ids:
            return None
        allowed = set(self.ids[0])
        for alternatives in self.ids[1:]:
            allowed &= set(alternatives)
        return frozenset(allowed)


IDENTIFIER_FILTERS: Final = frozenset({"identifier", "active"})
"""Filters a caller that may not read demographics may search by (with ``_id``): a search by
names, dates or addresses would tell it who holds them."""


def demographic_params(query: PatientQuery) -> list[str]:
    """The parameters of ``query`` that search by demographics (see
    :data:`IDENTIFIER_FILTERS`)."""
    return sorted({f.param for f in query.filters if f.param not in IDENTIFIER_FILTERS})


def _date_range(text: str) -> tuple[date, date]:
    """The days a (partial) date covers; ValueError when it is no date."""
    parts = [int(p) for p in text.split("-")]
    if len(parts) == 1:
        return date(parts[0], 1, 1), date(parts[0], 12, 31)
    if len(parts) == 2:
        year, month = parts
        last = calendar.monthrange(year, month)[1] if 1 <= month <= 12 else 0
        return date(year, month, 1), date(year, month, last)
    day = date(parts[0], parts[1], parts[2])
    return day, day


def parse_date_value(value: str, *, name: str = "birthdate") -> DateValue:
    """``[prefix]YYYY[-MM[-DD]]``."""
    match = _DATE_VALUE.fullmatch(value)
    if match is None:
        raise bad_request(
            f"{name}={value!r}: expected [eq|ne|gt|lt|ge|le|sa|eb]YYYY, YYYY-MM or YYYY-MM-DD"
        )
    prefix, text = match.group(1) or "eq", match.group(2)
    if prefix == "ap":
        raise not_supported(f"{name}: the prefix 'ap' is not supported")
    try:
        start, end = _date_range(text)
    except ValueError:
        raise bad_request(f"{name}={value!r}: {text} is not a date") from None
    return DateValue(cast(DatePrefix, prefix), text, start, end)


def _values(value: str, name: str) -> tuple[str, ...]:
    parts = tuple(unescape(p) for p in split_escaped(value, ","))
    if not all(p.strip() for p in parts):
        raise bad_request(f"{name}={value!r}: empty value")
    return parts


def parse_patient_query(
    pairs: Iterable[tuple[str, str]],
    *,
    default_count: int = DEFAULT_COUNT,
    max_count: int = MAX_COUNT,
) -> PatientQuery:
    """Parse Patient search parameters (decoded pairs), strictly: unknown parameters,
    modifiers and values are 400 (``not-supported`` for what this server does not do)."""
    given = list(pairs)
    filters: list[Filter] = []
    ids: list[tuple[str, ...]] = []
    count = default_count
    summary_count = False
    include = False
    cursor: str | None = None
    domains: set[str] = set()
    seen: set[str] = set()
    for name, value in given:
        base, _, modifier = name.partition(":")
        if base in _SINGLE and base in seen:
            raise bad_request(f"{base} may be given only once")
        seen.add(base)
        if modifier and base not in STRING_PARAMS:
            raise not_supported(f"The modifier in {name!r} is not supported")
        if base == "_id":
            ids.append(_values(value, name))
        elif base in STRING_PARAMS:
            if modifier not in ("", "exact", "contains"):
                raise not_supported(
                    f"The modifier in {name!r} is not supported (supported: :exact, :contains)"
                )
            filters.append(StringFilter(base, cast(StringModifier, modifier), _values(value, name)))
        elif base in TOKEN_PARAMS:
            tokens = parse_tokens(value, name=base)
            if base == "active" and any(t.code not in ("true", "false") for t in tokens):
                raise bad_request(f"active={value!r}: expected true or false")
            if base == "identifier":
                domains.update(t.system for t in tokens if t.system and t.code is None)
            filters.append(TokenFilter(base, tokens))
        elif base in DATE_PARAMS:
            parts = split_escaped(value, ",")
            filters.append(DateFilter(base, tuple(parse_date_value(p, name=base) for p in parts)))
        elif base == "_count":
            count = parse_count(value, maximum=max_count)
        elif base == "_summary":
            summary_count = parse_summary(value, supported=("count", "false")) == "count"
        elif base == "_include":
            if value not in INCLUDES:
                raise not_supported(f"_include={value} is not supported (supported: Patient:link)")
            include = True
        elif base == "_format":
            parse_format(value)
        elif base == "_cursor":
            if not value:
                raise bad_request("_cursor: the value is empty")
            cursor = value
        else:
            raise not_supported(f"Unknown search parameter {name!r} (supported: {SUPPORTED})")
    return PatientQuery(
        filters=tuple(filters),
        ids=tuple(ids),
        count=count,
        summary_count=summary_count or count == 0,
        include_links=include,
        cursor=cursor,
        domains=frozenset(domains),
        pairs=tuple((n, v) for n, v in given if n != "_cursor"),
    )


# ----------------------------------------------------------------------------- exact matching


def string_matches(modifier: StringModifier, wanted: str, value: str) -> bool:
    """FHIR string matching: plain = case- and accent-insensitive starts-with (spacing
    collapsed), ``exact`` = equal, ``contains`` = case- and accent-insensitive substring."""
    if modifier == "exact":
        return value == wanted
    if modifier == "contains":
        return folded(wanted) in folded(value)
    return folded(value).startswith(folded(wanted))


def _token_pairs(resource: Mapping[str, Any], param: str) -> list[tuple[str, str]]:
    """(system, code) pairs a token parameter searches; "" for no system."""
    if param == "identifier":
        out = []
        for ident in resource.get("identifier") or ():
            if isinstance(ident, dict) and isinstance(ident.get("value"), str):
                system = ident.get("system")
                out.append((system if isinstance(system, str) else "", ident["value"]))
        return out
    if param == "telecom":
        out = []
        for point in resource.get("telecom") or ():
            if isinstance(point, dict) and isinstance(point.get("value"), str):
                system = point.get("system")
                out.append((system if isinstance(system, str) else "", point["value"]))
        return out
    if param == "gender":
        gender = resource.get("gender")
        return [(GENDER_SYSTEM, gender)] if isinstance(gender, str) else []
    active = resource.get("active")
    return [("", "true" if active else "false")] if isinstance(active, bool) else []


def token_matches(token: Token, system: str, code: str) -> bool:
    """FHIR token matching of one (system, code) pair; ``system`` "" means none."""
    if token.code is not None and token.code != code:
        return False
    if token.system is None:
        return True
    return token.system == system


def date_matches(prefix: DatePrefix, wanted: tuple[date, date], value: tuple[date, date]) -> bool:
    """FHIR date matching of two ranges (search value ``wanted``, the record's ``value``)."""
    (s_start, s_end), (t_start, t_end) = wanted, value
    contained = s_start <= t_start and t_end <= s_end
    return {
        "eq": contained,
        "ne": not contained,
        "gt": t_end > s_end,
        "lt": t_start < s_start,
        "ge": t_end > s_end or contained,
        "le": t_start < s_start or contained,
        "sa": t_start > s_end,
        "eb": t_end < s_start,
    }[prefix]


def _birth_range(resource: Mapping[str, Any]) -> tuple[date, date] | None:
    raw = resource.get("birthDate")
    text = parse_date(raw) if isinstance(raw, str) else None
    if not text:
        return None
    try:
        return _date_range(text)
    except ValueError:
        return None


def filter_matches(resource: Mapping[str, Any], item: Filter) -> bool:
    """Whether a Patient satisfies one parameter (any of its alternatives)."""
    if isinstance(item, StringFilter):
        values = string_values(resource, item.param)
        return any(string_matches(item.modifier, w, v) for w in item.values for v in values)
    if isinstance(item, TokenFilter):
        pairs = _token_pairs(resource, item.param)
        return any(token_matches(t, s, c) for t in item.tokens for s, c in pairs)
    birth = _birth_range(resource)
    if birth is None:
        return False
    return any(date_matches(v.prefix, (v.start, v.end), birth) for v in item.values)


def patient_matches(resource: Mapping[str, Any], filters: Iterable[Filter]) -> bool:
    return all(filter_matches(resource, f) for f in filters)


__all__ = [
    "DATE_PARAMS",
    "DEFAULT_COUNT",
    "IDENTIFIER_FILTERS",
    "INCLUDES",
    "MAX_COUNT",
    "STRING_PARAMS",
    "SUPPORTED",
    "TOKEN_PARAMS",
    "DateFilter",
    "DatePrefix",
    "DateValue",
    "Filter",
    "PatientQuery",
    "StringFilter",
    "StringModifier",
    "TokenFilter",
    "date_matches",
    "demographic_params",
    "filter_matches",
    "parse_date_value",
    "parse_patient_query",
    "patient_matches",
    "string_matches",
    "token_matches",
]
