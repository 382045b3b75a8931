"""Conditions on the ``search_token`` index: a source record has a token of a kind, equal to
one of some values or starting with a prefix.

The tokens are those of :mod:`clientregistry.registry.search_tokens`, values cut as stored.
Identifier look-ups (:mod:`clientregistry.registry.pix`) and the search prefilter
(:mod:`clientregistry.registry.search_prefilter`) narrow their candidates with them before
the exact check in Python.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from sqlalchemy import ColumnElement, select

from clientregistry.registry.search_tokens import cut
from clientregistry.store.models import SearchToken, SourceRecord

_TOP: Final = "\U0010ffff"
"""Sorts after every character (token values compare by code point)."""


def has_token(kind: str, *conditions: ColumnElement[bool]) -> ColumnElement[bool]:
    """The record has a search token of ``kind`` satisfying ``conditions``."""
    tokens = select(SearchToken.record_id).where(SearchToken.kind == kind, *conditions)
    return SourceRecord.id.in_(tokens)


def token_equals(kind: str, values: Iterable[str]) -> ColumnElement[bool]:
    """The record has a ``kind`` token equal to one of ``values`` (cut as stored)."""
    wanted = sorted({cut(v) for v in values})
    if len(wanted) == 1:
        return has_token(kind, SearchToken.value == wanted[0])
    return has_token(kind, SearchToken.value.in_(wanted))


def token_prefix(kind: str, prefix: str) -> ColumnElement[bool]:
    """The record has a ``kind`` token starting with ``prefix`` (an index range)."""
    start = cut(prefix)
    if not start:
        return has_token(kind)
    return has_token(kind, SearchToken.value >= start, SearchToken.value < start + _TOP)


__all__ = [
    "has_token",
    "token_equals",
    "token_prefix",
]
