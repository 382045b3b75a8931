"""Search and condition parameters: ``identifier=system|value``, ``_id``, ``_count``,
``_summary``, ``_include``, ``_format``. Small and strict: anything unexpected is a
:class:`FhirError`, never silently ignored (ignoring a filter would return the wrong patients).

Token values follow FHIR R4 search escaping: ``\\|``, ``\\,``, ``\\$`` and ``\\\\`` stand for the
character itself; an unescaped ``,`` separates alternatives (OR); repeating a parameter ANDs.
``system|value`` matches that identifier, ``system|`` any value in the system, ``|value`` a value
with no system, ``value`` a value in any system.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl

from clientregistry.fhir.errors import FhirError, bad_request, not_acceptable

Summary = Literal["true", "false", "text", "data", "count"]
SUMMARY_VALUES: tuple[Summary, ...] = ("true", "false", "text", "data", "count")
JSON_FORMATS = frozenset(
    {"json", "application/json", "application/fhir+json", "application/json+fhir"}
)
"""``_format`` values meaning FHIR JSON."""
XML_FORMATS = frozenset(
    {"xml", "application/xml", "application/fhir+xml", "application/xml+fhir", "text/xml"}
)
"""``_format`` values meaning FHIR XML."""
FORMATS = JSON_FORMATS | XML_FORMATS

_ESCAPABLE = frozenset("\\|,$")


def not_supported(diagnostics: str) -> FhirError:
    """400 ``not-supported``: a parameter or modifier this server does not implement."""
    return FhirError(400, "not-supported", diagnostics)


@dataclass(frozen=True, slots=True)
class Token:
    """One token: ``system`` None = any system, "" = no system; ``code`` None = any code."""

    system: str | None
    code: str | None


def split_escaped(value: str, separator: str) -> list[str]:
    """Split ``value`` at unescaped ``separator``; escapes are kept (see :func:`unescape`)."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(value)
    for char in chars:
        if char == "\\":
            nxt = next(chars, None)
            if nxt is None or nxt not in _ESCAPABLE:
                raise bad_request(
                    f"Invalid escape in search value {value!r}: only \\\\, \\|, \\, and \\$ "
                    "are allowed"
                )
            current += (char, nxt)
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def unescape(value: str) -> str:
    """Remove FHIR search escapes: ``a\\|b`` → ``a|b``."""
    out: list[str] = []
    chars = iter(value)
    for char in chars:
        out.append(next(chars, "") if char == "\\" else char)
    return "".join(out)


def parse_token(value: str, *, name: str = "identifier") -> Token:
    """One token (no OR list): ``system|code``, ``system|``, ``|code`` or ``code``."""
    parts = split_escaped(value, "|")
    if len(parts) > 2:
        raise bad_request(f"{name}={value!r}: more than one unescaped '|' (escape it as \\|)")
    if len(parts) == 1:
        code = unescape(parts[0])
        if not code:
            raise bad_request(f"{name}: the value is empty")
        return Token(None, code)
    system, code = unescape(parts[0]), unescape(parts[1])
    if not system and not code:
        raise bad_request(f"{name}={value!r}: neither a system nor a value")
    return Token(system, code or None)


def parse_tokens(value: str, *, name: str = "identifier") -> tuple[Token, ...]:
    """A parameter value: tokens separated by unescaped commas (OR)."""
    return tuple(parse_token(part, name=name) for part in split_escaped(value, ","))


def query_pairs(query: str) -> list[tuple[str, str]]:
    """``a=1&b=2`` → ``[("a", "1"), ("b", "2")]`` (percent-decoded), strictly."""
    try:
        return parse_qsl(query, keep_blank_values=True, strict_parsing=True, errors="strict")
    except UnicodeDecodeError:
        raise bad_request(f"The query {query!r} is not UTF-8 once percent-decoded") from None
    except ValueError as exc:
        raise bad_request(f"The query {query!r} is malformed: {exc}") from None


def parse_identifier_condition(query: str | Iterable[tuple[str, str]]) -> tuple[str, str]:
    """The condition of a conditional update (ITI-104 ``PUT Patient?identifier=sys|value``).

    Exactly one parameter, ``identifier``, with one token that has both a system and a value;
    anything else is 400. Returns ``(system, value)``.
    """
    pairs = query_pairs(query) if isinstance(query, str) else list(query)
    if not pairs:
        raise bad_request("A conditional update needs ?identifier=system|value")
    names = sorted({n for n, _ in pairs})
    if names != ["identifier"]:
        unexpected = ", ".join(n for n in names if n != "identifier")
        raise not_supported(
            f"A conditional update takes only identifier=system|value; not: {unexpected}"
        )
    if len(pairs) > 1:
        raise bad_request("A conditional update takes exactly one identifier")
    tokens = parse_tokens(pairs[0][1])
    if len(tokens) != 1:
        raise bad_request("A conditional update takes one identifier, not a list")
    token = tokens[0]
    if not token.system or not token.code:
        raise bad_request(
            f"The condition identifier={pairs[0][1]!r} needs both a system and a value "
            "(system|value)"
        )
    return token.system, token.code


def parse_count(value: str, *, maximum: int) -> int:
    """``_count``: a non-negative integer; values above ``maximum`` are lowered to it
    (FHIR lets a server return fewer results than asked)."""
    if not value.isascii() or not value.isdigit():
        raise bad_request(f"_count={value!r}: expected a non-negative integer")
    return min(int(value), maximum)


def parse_summary(value: str, *, supported: Collection[str] = SUMMARY_VALUES) -> Summary:
    """``_summary``: one of true, false, text, data, count (400 otherwise; ``not-supported``
    for a valid value outside ``supported``)."""
    if value not in SUMMARY_VALUES:
        raise bad_request(f"_summary={value!r}: expected one of {', '.join(SUMMARY_VALUES)}")
    if value not in supported:
        raise not_supported(f"_summary={value} is not supported here")
    return value


def parse_format(value: str) -> Literal["json", "xml"]:
    """``_format``: FHIR JSON or FHIR XML (``json``, ``xml`` or a media type); anything else
    is 406 ``not-supported``."""
    mime = value.split(";", 1)[0].strip().lower()
    if mime in JSON_FORMATS:
        return "json"
    if mime in XML_FORMATS:
        return "xml"
    raise not_acceptable(value, sorted(FORMATS))


def parse_include(value: str, *, supported: Collection[str]) -> str:
    """``_include``: one of ``supported`` (e.g. ``Patient:link``)."""
    if value not in supported:
        options = ", ".join(sorted(supported)) or "none"
        raise not_supported(f"_include={value} is not supported (supported: {options})")
    return value


@dataclass(frozen=True, slots=True)
class PatientSearch:
    """A parsed ``GET /Patient?…``: each tuple in ``identifier``/``ids`` is one parameter
    (AND), holding its alternatives (OR)."""

    identifier: tuple[tuple[Token, ...], ...] = ()
    ids: tuple[tuple[str, ...], ...] = ()
    count: int = 0
    summary: Summary | None = None
    include: frozenset[str] = field(default_factory=frozenset)


_SINGLE = frozenset({"_count", "_summary", "_format"})


def parse_patient_search(
    params: str | Iterable[tuple[str, str]],
    *,
    default_count: int = 20,
    max_count: int = 100,
    includes: Collection[str] = ("Patient:link",),
    summaries: Collection[str] = SUMMARY_VALUES,
) -> PatientSearch:
    """Parse Patient search parameters (a query string or decoded pairs), strictly.

    Known: ``identifier``, ``_id``, ``_count``, ``_summary``, ``_include``, ``_format``.
    Unknown parameters and modifiers (``identifier:of-type``) are 400 ``not-supported``;
    repeating ``_count``/``_summary``/``_format`` is 400 ``invalid``.
    """
    pairs = query_pairs(params) if isinstance(params, str) else list(params)
    identifier: list[tuple[Token, ...]] = []
    ids: list[tuple[str, ...]] = []
    count, summary, include = default_count, None, set()
    seen: set[str] = set()
    for name, value in pairs:
        if name in _SINGLE and name in seen:
            raise bad_request(f"{name} may be given only once")
        seen.add(name)
        if name == "identifier":
            identifier.append(parse_tokens(value))
        elif name == "_id":
            parts = tuple(unescape(p) for p in split_escaped(value, ","))
            if not all(parts):
                raise bad_request(f"_id={value!r}: empty id")
            ids.append(parts)
        elif name == "_count":
            count = parse_count(value, maximum=max_count)
        elif name == "_summary":
            summary = parse_summary(value, supported=summaries)
        elif name == "_include":
            include.add(parse_include(value, supported=includes))
        elif name == "_format":
            parse_format(value)
        elif ":" in name:
            raise not_supported(f"The search modifier in {name!r} is not supported")
        else:
            raise not_supported(
                f"Unknown search parameter {name!r} "
                "(supported: identifier, _id, _count, _summary, _include, _format)"
            )
    return PatientSearch(tuple(identifier), tuple(ids), count, summary, frozenset(include))
