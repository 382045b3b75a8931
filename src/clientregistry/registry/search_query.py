"""Patient search parameters (PDQm ITI-78): :func:`parse_patient_query`, and whether a Patient
matches the parsed query, checked exactly in Python (:func:`patient_matches`).

Parameters: ``_id`` (also as ``Patient/<id>``), ``identifier``, ``family``, ``given``,
``name``, ``birthdate`` and ``death-date`` (prefixes eq ne gt lt ge le sa eb), ``gender``,
``telecom``, ``address``, ``address-city``, ``address-postalcode``, ``address-state``,
``address-country``, ``mothersMaidenName``, ``active``, ``deceased``, ``_lastUpdated``
(prefixed dates and date-times); ``:exact`` and ``:contains`` on strings (plain: case- and
accent-insensitive starts-with). Results: ``_count``, ``_summary=count``, ``_total``
(``none``, ``estimate``, ``accurate``), ``_sort`` (``_id``, ``_lastUpdated``, ``family``,
``given``, ``birthdate``; ``-`` for descending), ``_elements`` (``-`` to leave out),
``_include=Patient:link``, ``_format``, and the paging cursors ``next`` links carry
(``_cursor``, ``_offset`` for sorted searches). Repeated parameters AND, comma-separated
values OR.

What this server does not do (an unknown parameter, modifier, sort key, ``_include`` or
``_summary`` value) is, under ``handling=strict``, 400 ``not-supported``; under
``handling=lenient`` (the default of the API) it is left out of the query and listed in
:attr:`PatientQuery.ignored`, for the answer to report. A malformed value of a parameter this
server does know is 400 either way.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, Literal, cast

from clientregistry.fhir.codes import SUBSETTED_TAG, coding
from clientregistry.fhir.errors import FhirError, bad_request
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
Total = Literal["none", "estimate", "accurate"]

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
TOKEN_PARAMS: Final = frozenset({"identifier", "telecom", "gender", "active", "deceased"})
DATE_PARAMS: Final = frozenset({"birthdate", "death-date"})
RESULT_PARAMS: Final = frozenset(
    {"_count", "_summary", "_total", "_sort", "_elements", "_include", "_format"}
)
"""Parameters that shape the answer rather than filter (what the CapabilityStatement lists
apart from the filters)."""
SORT_KEYS: Final = ("_id", "_lastUpdated", "family", "given", "birthdate")
INCLUDES: Final = frozenset({"Patient:link", "Patient:link:Patient"})
DEFAULT_COUNT: Final = 20
MAX_COUNT: Final = 100
MAX_ELEMENTS: Final = 30
MAX_VALUES: Final = 100
"""Most values one search parameter may have, its repetitions (AND) and alternatives (OR)
counted together: a query of thousands is too large for SQLite's expression tree and too
slow on PostgreSQL."""
SUPPORTED: Final = (
    "_id, identifier, family, given, name, birthdate, death-date, gender, telecom, address, "
    "address-city, address-postalcode, address-state, address-country, mothersMaidenName, "
    "active, deceased, _lastUpdated, _count, _summary=count, _total, _sort, _elements, "
    "_include=Patient:link, _format"
)
GENDER_SYSTEM: Final = "http://hl7.org/fhir/administrative-gender"

_DATE_VALUE = re.compile(r"(eq|ne|gt|lt|ge|le|sa|eb|ap)?(\d{4}(?:-\d{2}(?:-\d{2})?)?)")
_DATETIME_VALUE = re.compile(
    r"(eq|ne|gt|lt|ge|le|sa|eb|ap)?"
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d{1,9})?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_ELEMENT = re.compile(r"[A-Za-z][A-Za-z0-9]{0,63}")
_SINGLE = frozenset(
    {"_count", "_summary", "_format", "_cursor", "_offset", "_total", "_sort", "_elements"}
)
_CURSORS = frozenset({"_cursor", "_offset"})


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


@dataclass(frozen=True, slots=True)
class InstantRange:
    """One ``_lastUpdated`` value: a prefix and the instants its precision covers,
    ``[start, end)``."""

    prefix: DatePrefix
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class SortKey:
    name: str
    descending: bool = False


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
    """The parameters used, without the paging cursors (for paging links)."""
    last_updated: tuple[tuple[InstantRange, ...], ...] = ()
    """``_lastUpdated``: each parameter (AND) holds its alternatives (OR)."""
    sort: tuple[SortKey, ...] = ()
    offset: int = 0
    """Sorted searches page by position: the matches before this page."""
    elements: tuple[str, ...] | None = None
    """``_elements``: the elements to keep (or, with :attr:`leave_out`, to leave out)."""
    leave_out: bool = False
    total: Total | None = None
    ignored: tuple[tuple[str, str, str], ...] = ()
    """Under lenient handling, what was left out: (name, value, why)."""

    @property
    def id_set(self) -> frozenset[str] | None:
        """The ids ``_id`` allows (AND of ORs), None without ``_id``."""
        if not self.ids:
            return None
        allowed = set(self.ids[0])
        for alternatives in self.ids[1:]:
            allowed &= set(alternatives)
        return frozenset(allowed)

    @property
    def identifier_systems(self) -> list[str]:
        """Every identifier system the query names (its identifier domains), in order."""
        found: dict[str, None] = {}
        for item in self.filters:
            if isinstance(item, TokenFilter) and item.param == "identifier":
                found.update((t.system, None) for t in item.tokens if t.system)
        return list(found)


IDENTIFIER_FILTERS: Final = frozenset({"identifier", "active"})
"""Filters a caller that may not read demographics may search by (with ``_id`` and
``_lastUpdated``): a search by names, dates or addresses would tell it who holds them."""


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


def parse_instant_range(value: str, *, name: str = "_lastUpdated") -> InstantRange:
    """``[prefix]YYYY[-MM[-DD[Thh:mm[:ss[.fff]][zone]]]]`` as the instants it covers (a
    time without a zone is UTC)."""
    match = _DATETIME_VALUE.fullmatch(value)
    if match is None:
        raise bad_request(
            f"{name}={value!r}: expected [prefix]YYYY, YYYY-MM, YYYY-MM-DD or "
            "YYYY-MM-DDThh:mm[:ss][Z|+hh:mm]"
        )
    prefix, year, month, day, hour, minute, second, fraction, zone = match.groups()
    if prefix == "ap":
        raise not_supported(f"{name}: the prefix 'ap' is not supported")
    try:
        if hour is None:
            first, last = _date_range("-".join(p for p in (year, month, day) if p))
            start = datetime(first.year, first.month, first.day, tzinfo=UTC)
            end = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
        else:
            text = f"{year}-{month}-{day}T{hour}:{minute}:{second or '00'}{fraction or ''}"
            start = datetime.fromisoformat(text + (zone or "+00:00")).astimezone(UTC)
            step = (
                timedelta(minutes=1)
                if second is None
                else timedelta(microseconds=1)
                if fraction
                else timedelta(seconds=1)
            )
            end = start + step
    except (ValueError, OverflowError):
        raise bad_request(f"{name}={value!r}: not a date or time") from None
    return InstantRange(cast(DatePrefix, prefix or "eq"), start, end)


def _values(value: str, name: str) -> tuple[str, ...]:
    parts = tuple(unescape(p) for p in split_escaped(value, ","))
    if not all(p.strip() for p in parts):
        raise bad_request(f"{name}={value!r}: empty value")
    return parts


def _sort_keys(value: str) -> tuple[SortKey, ...]:
    keys = []
    for part in value.split(","):
        name = part.strip()
        descending = name.startswith("-")
        name = name.removeprefix("-")
        if name not in SORT_KEYS:
            raise not_supported(
                f"_sort by {name!r} is not supported (supported: {', '.join(SORT_KEYS)})"
            )
        keys.append(SortKey(name, descending))
    return tuple(keys)


def _elements(value: str) -> tuple[tuple[str, ...], bool]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    leave_out = bool(names) and all(n.startswith("-") for n in names)
    names = [n.removeprefix("-") for n in names]
    if not names or len(names) > MAX_ELEMENTS or not all(_ELEMENT.fullmatch(n) for n in names):
        raise bad_request(
            f"_elements={value[:80]!r}: expected up to {MAX_ELEMENTS} element names, "
            "comma-separated (all with '-' to leave them out)"
        )
    return tuple(names), leave_out


@dataclass
class _Parsed:
    """What :func:`parse_patient_query` has read so far."""

    max_count: int
    count: int
    filters: list[Filter] = field(default_factory=list)
    ids: list[tuple[str, ...]] = field(default_factory=list)
    last_updated: list[tuple[InstantRange, ...]] = field(default_factory=list)
    summary_count: bool = False
    include: bool = False
    cursor: str | None = None
    offset: int = 0
    sort: tuple[SortKey, ...] = ()
    elements: tuple[str, ...] | None = None
    leave_out: bool = False
    total: Total | None = None
    domains: set[str] = field(default_factory=set)

    def read(self, name: str, value: str) -> None:
        """Read one parameter (FhirError when it is wrong or not supported)."""
        base, _, modifier = name.partition(":")
        if modifier and base not in STRING_PARAMS:
            raise not_supported(f"The modifier in {name!r} is not supported")
        handler = _HANDLERS.get(base)
        if handler is not None:
            handler(self, base, value)
        elif base in STRING_PARAMS:
            if modifier not in ("", "exact", "contains"):
                raise not_supported(
                    f"The modifier in {name!r} is not supported (supported: :exact, :contains)"
                )
            filters = StringFilter(base, cast(StringModifier, modifier), _values(value, name))
            self.filters.append(filters)
        elif base in TOKEN_PARAMS:
            self._token(base, value)
        elif base in DATE_PARAMS:
            parts = split_escaped(value, ",")
            dates = tuple(parse_date_value(p, name=base) for p in parts)
            self.filters.append(DateFilter(base, dates))
        else:
            raise not_supported(f"Unknown search parameter {name!r} (supported: {SUPPORTED})")

    def _token(self, base: str, value: str) -> None:
        tokens = parse_tokens(value, name=base)
        if base in ("active", "deceased") and any(t.code not in ("true", "false") for t in tokens):
            raise bad_request(f"{base}={value!r}: expected true or false")
        if base == "identifier":
            self.domains.update(t.system for t in tokens if t.system and t.code is None)
        self.filters.append(TokenFilter(base, tokens))

    def query(
        self, given: list[tuple[str, str]], ignored: list[tuple[str, str, str]]
    ) -> PatientQuery:
        left_out = {(n, v) for n, v, _ in ignored}
        return PatientQuery(
            filters=tuple(self.filters),
            ids=tuple(self.ids),
            count=self.count,
            summary_count=self.summary_count or self.count == 0,
            include_links=self.include,
            cursor=self.cursor,
            domains=frozenset(self.domains),
            pairs=tuple((n, v) for n, v in given if n not in _CURSORS and (n, v) not in left_out),
            last_updated=tuple(self.last_updated),
            sort=self.sort,
            offset=self.offset,
            elements=self.elements,
            leave_out=self.leave_out,
            total=self.total,
            ignored=tuple(ignored),
        )


def _read_id(parsed: _Parsed, name: str, value: str) -> None:
    ids = tuple(i.removeprefix("Patient/") for i in _values(value, name))
    parsed.ids.append(ids)


def _read_last_updated(parsed: _Parsed, name: str, value: str) -> None:
    parts = split_escaped(value, ",")
    parsed.last_updated.append(tuple(parse_instant_range(p, name=name) for p in parts))


def _read_count(parsed: _Parsed, name: str, value: str) -> None:
    parsed.count = parse_count(value, maximum=parsed.max_count)


def _read_summary(parsed: _Parsed, name: str, value: str) -> None:
    parsed.summary_count = parse_summary(value, supported=("count", "false")) == "count"


def _read_total(parsed: _Parsed, name: str, value: str) -> None:
    if value not in ("none", "estimate", "accurate"):
        raise bad_request(f"_total={value[:40]!r}: expected none, estimate or accurate")
    parsed.total = cast(Total, value)


def _read_sort(parsed: _Parsed, name: str, value: str) -> None:
    parsed.sort = _sort_keys(value)


def _read_elements(parsed: _Parsed, name: str, value: str) -> None:
    parsed.elements, parsed.leave_out = _elements(value)


def _read_include(parsed: _Parsed, name: str, value: str) -> None:
    if value not in INCLUDES:
        raise not_supported(f"_include={value} is not supported (supported: Patient:link)")
    parsed.include = True


def _read_format(parsed: _Parsed, name: str, value: str) -> None:
    parse_format(value)


def _read_cursor(parsed: _Parsed, name: str, value: str) -> None:
    if not value:
        raise bad_request(f"{name}: the value is empty")
    if name == "_cursor":
        parsed.cursor = value
    elif value.isascii() and value.isdigit():
        parsed.offset = int(value)
    else:
        raise bad_request(f"_offset={value[:40]!r}: expected a number")


_HANDLERS: Final[dict[str, Callable[[_Parsed, str, str], None]]] = {
    "_id": _read_id,
    "_lastUpdated": _read_last_updated,
    "_count": _read_count,
    "_summary": _read_summary,
    "_total": _read_total,
    "_sort": _read_sort,
    "_elements": _read_elements,
    "_include": _read_include,
    "_format": _read_format,
    "_cursor": _read_cursor,
    "_offset": _read_cursor,
}


def parse_patient_query(
    pairs: Iterable[tuple[str, str]],
    *,
    default_count: int = DEFAULT_COUNT,
    max_count: int = MAX_COUNT,
    strict: bool = True,
) -> PatientQuery:
    """Parse Patient search parameters (decoded pairs). ``strict``: what this server does not
    do is 400 ``not-supported``; otherwise it is left out and listed in
    :attr:`PatientQuery.ignored`. Malformed values are 400 either way."""
    given = list(pairs)
    parsed = _Parsed(max_count=max_count, count=default_count)
    ignored: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    values: dict[str, int] = {}
    for name, value in given:
        base = name.partition(":")[0]
        if base in _SINGLE and base in seen:
            raise bad_request(f"{base} may be given only once")
        seen.add(base)
        values[base] = values.get(base, 0) + value.count(",") + 1
        if values[base] > MAX_VALUES:
            raise bad_request(
                f"{base[:64]}: more than {MAX_VALUES} values (repeated or comma-separated)",
                [base[:64]],
                code="too-costly",
            )
        try:
            parsed.read(name, value)
        except FhirError as error:
            if strict or (error.status, error.code) != (400, "not-supported"):
                raise
            ignored.append((name, value, error.diagnostics))
    return parsed.query(given, ignored)


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
    if param == "deceased":
        # Patient.deceased.exists() and Patient.deceased != false
        dead = resource.get("deceasedBoolean") is True or "deceasedDateTime" in resource
        return [("", "true" if dead else "false")]
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


_DATE_ELEMENTS: Final = {"birthdate": "birthDate", "death-date": "deceasedDateTime"}


def _date_of(resource: Mapping[str, Any], param: str) -> tuple[date, date] | None:
    """The days the element a date parameter searches covers (None without one)."""
    raw = resource.get(_DATE_ELEMENTS[param])
    text = parse_date(raw[:10]) if isinstance(raw, str) else None
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
    found = _date_of(resource, item.param)
    if found is None:
        return False
    return any(date_matches(v.prefix, (v.start, v.end), found) for v in item.values)


def patient_matches(resource: Mapping[str, Any], filters: Iterable[Filter]) -> bool:
    return all(filter_matches(resource, f) for f in filters)


def sort_value(resource: Mapping[str, Any], key: str) -> list[str]:
    """The values a Patient sorts by for ``family``, ``given`` or ``birthdate`` (folded
    strings; ISO dates)."""
    if key == "birthdate":
        found = _date_of(resource, "birthdate")
        return [found[0].isoformat()] if found else []
    return [folded(v) for v in string_values(resource, key) if v.strip()]


def keep_elements(
    resource: dict[str, Any], elements: Iterable[str], *, leave_out: bool = False
) -> dict[str, Any]:
    """``_elements``: the resource with only ``elements`` (or without them), always with its
    type, id and meta — and ``active`` beside ``link`` (PDQm) — marked ``SUBSETTED``."""
    names = set(elements)
    kept = {
        k: v
        for k, v in resource.items()
        if k in ("resourceType", "id", "meta") or (k in names) != leave_out
    }
    if "link" in kept and "active" in resource:
        kept["active"] = resource["active"]
    meta = dict(kept.get("meta") or {})
    tags = [t for t in meta.get("tag") or () if t.get("code") != SUBSETTED_TAG["code"]]
    meta["tag"] = [*tags, coding(SUBSETTED_TAG)]
    kept["meta"] = meta
    return kept


__all__ = [
    "DATE_PARAMS",
    "DEFAULT_COUNT",
    "IDENTIFIER_FILTERS",
    "INCLUDES",
    "MAX_COUNT",
    "RESULT_PARAMS",
    "SORT_KEYS",
    "STRING_PARAMS",
    "SUPPORTED",
    "TOKEN_PARAMS",
    "DateFilter",
    "DatePrefix",
    "DateValue",
    "Filter",
    "InstantRange",
    "PatientQuery",
    "SortKey",
    "StringFilter",
    "StringModifier",
    "TokenFilter",
    "date_matches",
    "demographic_params",
    "filter_matches",
    "keep_elements",
    "parse_date_value",
    "parse_instant_range",
    "parse_patient_query",
    "patient_matches",
    "sort_value",
    "string_matches",
    "token_matches",
]
