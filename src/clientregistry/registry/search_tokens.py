"""Search tokens: what the ``search_token`` index table holds for one stored Patient.

A pure function of the resource (no database): :func:`search_tokens` gives the distinct
``(kind, value)`` pairs that :mod:`clientregistry.registry.search_prefilter` (a search) and
:mod:`clientregistry.registry.pix` (an identifier lookup) use, through
:mod:`clientregistry.registry.token_index`, to narrow the candidates before the exact check in
Python. The tokens are a superset device only: a record is found by the index whenever the
exact check could accept it.

Kinds
    ``identifier`` — each identifier value as is; ``identifier-system`` — each identifier
    system; ``telecom`` — each telecom value as is; ``birthdate`` — the ISO form of the birth
    date (``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD``); ``family``, ``given``, ``name``,
    ``address-city``, ``address-postalcode`` — each value of that search parameter, folded
    (case and accents) with its spacing collapsed, as the search's starts-with test compares.

Values are cut to :data:`MAX_VALUE` characters (a cut value still narrows: the lookups cut
what they look for the same way).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from clientregistry.matching.normalize import fold, parse_date

MAX_VALUE: Final = 200
"""Longest value stored (the column holds 255 characters)."""
MOTHERS_MAIDEN_NAME: Final = "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName"

IDENTIFIER: Final = "identifier"
IDENTIFIER_SYSTEM: Final = "identifier-system"
TELECOM: Final = "telecom"
BIRTHDATE: Final = "birthdate"
STRING_KINDS: Final = ("family", "given", "name", "address-city", "address-postalcode")
"""The string search parameters that have tokens (the others are narrowed otherwise)."""

_ADDRESS_KEYS: Final = {
    "address-city": "city",
    "address-postalcode": "postalCode",
    "address-state": "state",
    "address-country": "country",
}


def cut(value: str) -> str:
    """``value`` as stored (and as looked up): at most :data:`MAX_VALUE` characters."""
    return value[:MAX_VALUE]


def folded(value: str) -> str:
    """Case- and accent-folded, spacing collapsed: how string search parameters compare."""
    return " ".join(fold(value).split())


def string_values(resource: Mapping[str, Any], param: str) -> list[str]:
    """The string values the string search parameter ``param`` searches in a Patient."""
    out: list[Any] = []
    names = [n for n in resource.get("name") or () if isinstance(n, dict)]
    addresses = [a for a in resource.get("address") or () if isinstance(a, dict)]
    if param == "family":
        out = [n.get("family") for n in names]
    elif param == "given":
        out = [g for n in names for g in n.get("given") or ()]
    elif param == "name":
        for n in names:
            out += [n.get("text"), n.get("family")]
            for key in ("given", "prefix", "suffix"):
                out += list(n.get(key) or ())
    elif param == "address":
        for a in addresses:
            out += [a.get(k) for k in ("text", "city", "district", "state", "postalCode")]
            out += [a.get("country"), *(a.get("line") or ())]
    elif param in _ADDRESS_KEYS:
        out = [a.get(_ADDRESS_KEYS[param]) for a in addresses]
    elif param == "mothersMaidenName":
        out = [
            e.get("valueString")
            for e in resource.get("extension") or ()
            if isinstance(e, dict) and e.get("url") == MOTHERS_MAIDEN_NAME
        ]
    return [v for v in out if isinstance(v, str)]


def _list(resource: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    items = resource.get(key)
    if not isinstance(items, list):
        return []
    return [i for i in items if isinstance(i, dict)]


def search_tokens(resource: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The distinct ``(kind, value)`` search tokens of a Patient, sorted."""
    tokens: set[tuple[str, str]] = set()
    for ident in _list(resource, "identifier"):
        value, system = ident.get("value"), ident.get("system")
        if isinstance(value, str):
            tokens.add((IDENTIFIER, cut(value)))
            if isinstance(system, str):
                tokens.add((IDENTIFIER_SYSTEM, cut(system)))
    for point in _list(resource, "telecom"):
        value = point.get("value")
        if isinstance(value, str):
            tokens.add((TELECOM, cut(value)))
    birth = resource.get("birthDate")
    iso = parse_date(birth) if isinstance(birth, str) else None
    if iso:
        tokens.add((BIRTHDATE, iso))
    for kind in STRING_KINDS:
        tokens.update((kind, cut(folded(v))) for v in string_values(resource, kind))
    return sorted(tokens)


__all__ = [
    "BIRTHDATE",
    "IDENTIFIER",
    "IDENTIFIER_SYSTEM",
    "MAX_VALUE",
    "MOTHERS_MAIDEN_NAME",
    "STRING_KINDS",
    "TELECOM",
    "cut",
    "folded",
    "search_tokens",
    "string_values",
]
