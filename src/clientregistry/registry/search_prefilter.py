"""The SQL prefilter of a Patient search: conditions every match satisfies, a superset that
narrows the candidates before each is checked exactly in Python, :func:`prefilter`.

It uses the ``search_token`` index (:mod:`clientregistry.registry.search_tokens`, kept by each
submission) where it can: ``identifier`` and ``telecom`` values (and ``identifier=system|``
systems) by equality; ``family``, ``given``, ``name``, ``address-city`` and
``address-postalcode`` (plain and ``:exact``) as a range of the folded values starting with
the folded search value; ``birthdate`` as ranges of the ISO strings (any prefix but ``ne``).
The other parameters, and ``:contains``, fall back to containment in the stored JSON text:
of the JSON spelling of identifier values, codes and exact dates, and, for strings,
case-insensitive containment of each folded word *or* any non-ASCII character in the record
(so accents cannot hide a match). (Containment is ``LIKE`` on SQLite, ``strpos`` / ``~*`` on
PostgreSQL.)

``_lastUpdated`` is exact in SQL (the indexed ``last_updated`` column; :func:`instant_conditions`,
also for golden records). ``deceased`` and ``death-date`` do not narrow.

Cost: an indexed parameter costs an index range read; a search with only text-scanned
parameters reads every stored resource's text once per query (at 100,000 records about
0.1–0.8 s on a development machine).
"""

from __future__ import annotations

import re
from datetime import datetime

import orjson
from sqlalchemy import ColumnElement, LargeBinary, Text, and_, func, or_, type_coerce
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import InstrumentedAttribute, Session

from clientregistry.registry.search_query import (
    DateFilter,
    InstantRange,
    PatientQuery,
    StringFilter,
    TokenFilter,
)
from clientregistry.registry.search_tokens import (
    BIRTHDATE,
    IDENTIFIER,
    IDENTIFIER_SYSTEM,
    STRING_KINDS,
    TELECOM,
    folded,
)
from clientregistry.registry.token_index import has_token, token_equals, token_prefix
from clientregistry.store.dialect import dialect_name
from clientregistry.store.models import SearchToken, SourceRecord


def _text() -> ColumnElement[str]:
    """The stored resource as JSON text (compact orjson: ``"key":"value"``, no spaces)."""
    return type_coerce(SourceRecord.resource, Text)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _json(value: str) -> str:
    """How a string is spelled in the stored JSON text (with its quotes)."""
    return orjson.dumps(value).decode()


def _contains(
    session: Session, fragment: str, *, case_insensitive: bool = False
) -> ColumnElement[bool]:
    """The JSON text holds ``fragment``: ``LIKE`` on SQLite (whose ``LIKE`` ignores ASCII case,
    so the case-sensitive test is a superset there); on PostgreSQL ``strpos``, or ``~*`` when
    case does not matter (both several times faster than ``LIKE``/``ILIKE`` on long text)."""
    if dialect_name(session) == "sqlite":
        return _text().like(f"%{_like_escape(fragment)}%", escape="\\")
    if case_insensitive:
        return _text().regexp_match(re.escape(fragment), flags="i")
    return func.strpos(_text(), fragment) > 0


def _member(session: Session, key: str, value: str) -> ColumnElement[bool]:
    """The JSON text holds ``"key":"value"`` somewhere (a superset of the exact test)."""
    return _contains(session, f"{_json(key)}:{_json(value)}")


def _non_ascii(session: Session) -> ColumnElement[bool]:
    """The record holds a non-ASCII character: its length in characters and in bytes differ."""
    if dialect_name(session) == "sqlite":
        return func.length(_text()) != func.length(sql_cast(_text(), LargeBinary))
    return func.char_length(_text()) != func.octet_length(_text())


_JSON_SAFE = re.compile(r"[ -~]+")  # printable ASCII: spelled as is in JSON unless " or \


def _word_condition(session: Session, word: str) -> ColumnElement[bool] | None:
    """A case-insensitive containment test for one folded ASCII word of a string value.

    Not anchored at the JSON string's opening quote: ``LIKE '%"word%'`` is several times
    slower in SQLite (quotes abound in JSON), and starts-with is checked in Python anyway.
    """
    if not _JSON_SAFE.fullmatch(word) or '"' in word or "\\" in word:
        return None
    return _contains(session, word, case_insensitive=True)


def _string_text_condition(session: Session, item: StringFilter) -> ColumnElement[bool] | None:
    """A superset of the records matching a string parameter; None when it cannot narrow.

    Folding only lowercases ASCII, so an ASCII record matches only if its text holds every
    folded word; records holding any non-ASCII character always pass (accents, ``ß``...).
    """
    alternatives = []
    for wanted in item.values:
        if item.modifier == "exact":
            alternatives.append(_contains(session, _json(wanted)))
            continue
        conditions = [_word_condition(session, w) for w in folded(wanted).split()]
        usable = [c for c in conditions if c is not None]
        if not usable:
            return None  # this alternative cannot be narrowed: nor can the parameter
        alternatives.append(or_(and_(*usable), _non_ascii(session)))
    return or_(*alternatives)


def _string_condition(session: Session, item: StringFilter) -> ColumnElement[bool] | None:
    """A superset of the records matching a string parameter; None when it cannot narrow.

    Parameters with search tokens (and not ``:contains``) are a range of the token index:
    the folded value starts with the folded search value (``:exact`` values fold too).
    The others fall back to containment in the stored JSON text.
    """
    if item.param not in STRING_KINDS or item.modifier == "contains":
        return _string_text_condition(session, item)
    return or_(*(token_prefix(item.param, folded(wanted)) for wanted in item.values))


def _token_condition(session: Session, item: TokenFilter) -> ColumnElement[bool] | None:
    """A superset of the records matching a token parameter; None when it cannot narrow.

    ``identifier`` and ``telecom`` with codes are token index look-ups; ``identifier``
    with systems only looks up the systems; the rest is containment in the JSON text.
    """
    kinds = {"identifier": IDENTIFIER, "telecom": TELECOM}
    if item.param == "deceased":
        return None
    if item.param in kinds and all(t.code is not None for t in item.tokens):
        return token_equals(kinds[item.param], [str(t.code) for t in item.tokens])
    if item.param == "identifier" and all(t.code is None and t.system for t in item.tokens):
        return token_equals(IDENTIFIER_SYSTEM, [str(t.system) for t in item.tokens])
    return _token_text_condition(session, item)


def _token_text_condition(session: Session, item: TokenFilter) -> ColumnElement[bool] | None:
    key = {"identifier": "value", "telecom": "value", "gender": "gender", "active": "active"}
    alternatives: list[ColumnElement[bool]] = []
    for token in item.tokens:
        parts: list[ColumnElement[bool]] = []
        if token.code is not None:
            if item.param == "active":
                parts.append(_contains(session, f'"active":{token.code}'))
            else:
                parts.append(_member(session, key[item.param], token.code))
        if item.param in ("identifier", "telecom") and token.system:
            parts.append(_member(session, "system", token.system))
        if not parts:
            return None
        alternatives.append(and_(*parts))
    return or_(*alternatives)


def _date_condition(session: Session, item: DateFilter) -> ColumnElement[bool] | None:
    """A superset of the records matching ``birthdate``: ranges of the ISO strings in the
    token index (``YYYY[-MM[-DD]]`` sorts as the dates do; every year has four digits).

    ``eq``: the record's date starts with the searched one. ``gt``/``ge``/``sa``: it ends
    after the search starts, so its year is at least the search's first year;
    ``lt``/``le``/``eb``: its year is at most the search's last year. ``ne`` cannot narrow.
    """
    if item.param != "birthdate":
        return None
    alternatives = []
    for v in item.values:
        if v.prefix == "eq":
            alternatives.append(token_prefix(BIRTHDATE, v.text))
        elif v.prefix in ("gt", "ge", "sa"):
            alternatives.append(has_token(BIRTHDATE, SearchToken.value >= f"{v.start.year:04d}"))
        elif v.prefix in ("lt", "le", "eb"):
            bound = [SearchToken.value < f"{v.end.year + 1:04d}"] if v.end.year < 9999 else []
            alternatives.append(has_token(BIRTHDATE, *bound))
        else:
            return None
    return or_(*alternatives)


def _instant_condition(column: ColumnElement[datetime], r: InstantRange) -> ColumnElement[bool]:
    """A point in time (``column``) against one ``_lastUpdated`` value ``[start, end)``."""
    if r.prefix == "eq":
        return and_(column >= r.start, column < r.end)
    if r.prefix == "ne":
        return or_(column < r.start, column >= r.end)
    if r.prefix in ("gt", "sa"):
        return column >= r.end
    if r.prefix in ("lt", "eb"):
        return column < r.start
    if r.prefix == "ge":
        return column >= r.start
    return column < r.end  # le


def instant_conditions(
    query: PatientQuery, column: ColumnElement[datetime] | InstrumentedAttribute[datetime]
) -> list[ColumnElement[bool]]:
    """The exact SQL of ``query``'s ``_lastUpdated`` on ``column`` (AND of ORs)."""
    return [
        or_(*(_instant_condition(column.expression, r) for r in alternatives))
        for alternatives in query.last_updated
    ]


def prefilter(session: Session, query: PatientQuery) -> list[ColumnElement[bool]]:
    """SQL conditions every match satisfies (a superset: the exact test follows)."""
    out: list[ColumnElement[bool]] = instant_conditions(query, SourceRecord.last_updated)
    for item in query.filters:
        condition: ColumnElement[bool] | None
        if isinstance(item, StringFilter):
            condition = _string_condition(session, item)
        elif isinstance(item, TokenFilter):
            condition = _token_condition(session, item)
        else:
            condition = _date_condition(session, item)
        if condition is not None:
            out.append(condition)
    return out


__all__ = [
    "instant_conditions",
    "prefilter",
]
