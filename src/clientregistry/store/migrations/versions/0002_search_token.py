"""Search tokens: the index table of the Patient search and PIXm, filled for stored records.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

Written by hand from the models, like 0001. Records stored before this revision get their
tokens here, computed from each record's stored resource (a batch at a time) by
:func:`_search_tokens`: a frozen copy of ``registry.search_tokens.search_tokens`` (with the
``fold`` and ``parse_date`` of ``matching.normalize``) as it was when this revision was
written. A migration never imports the live code, which moves on while the migration must
keep doing what it did.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(64)
TOKEN_VALUE = sa.String(255).with_variant(sa.String(255, collation="C"), "postgresql")
BATCH = 1000

# ----------------------------------------------------------------------------- frozen tokens

_MAX_VALUE = 200
_STRING_KINDS = ("family", "given", "name", "address-city", "address-postalcode")
_ADDRESS_KEYS = {"address-city": "city", "address-postalcode": "postalCode"}
_DATE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)?)?)?")


def _fold(value: str) -> str:
    if value.isascii():
        return value.lower()
    decomposed = unicodedata.normalize("NFKD", value).casefold()
    decomposed = unicodedata.normalize("NFKD", decomposed)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _parse_date(value: str) -> str | None:
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


def _strings(resource: Mapping[str, Any], param: str) -> list[str]:
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
    elif param in _ADDRESS_KEYS:
        out = [a.get(_ADDRESS_KEYS[param]) for a in addresses]
    return [v for v in out if isinstance(v, str)]


def _dicts(resource: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    items = resource.get(key)
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _search_tokens(resource: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The distinct ``(kind, value)`` search tokens of a Patient, as revision 0002 stores them."""
    tokens: set[tuple[str, str]] = set()
    for ident in _dicts(resource, "identifier"):
        value, system = ident.get("value"), ident.get("system")
        if isinstance(value, str):
            tokens.add(("identifier", value[:_MAX_VALUE]))
            if isinstance(system, str):
                tokens.add(("identifier-system", system[:_MAX_VALUE]))
    for point in _dicts(resource, "telecom"):
        value = point.get("value")
        if isinstance(value, str):
            tokens.add(("telecom", value[:_MAX_VALUE]))
    birth = resource.get("birthDate")
    iso = _parse_date(birth) if isinstance(birth, str) else None
    if iso:
        tokens.add(("birthdate", iso))
    for kind in _STRING_KINDS:
        tokens.update(
            (kind, " ".join(_fold(v).split())[:_MAX_VALUE]) for v in _strings(resource, kind)
        )
    return sorted(tokens)


# ----------------------------------------------------------------------------- upgrade


def _backfill() -> None:
    bind = op.get_bind()
    records = sa.table("source_record", sa.column("id", ID), sa.column("resource", sa.Text()))
    tokens = sa.table(
        "search_token",
        sa.column("kind", sa.String(32)),
        sa.column("value", TOKEN_VALUE),
        sa.column("record_id", ID),
    )
    last: str | None = None
    while True:
        statement = sa.select(records.c.id, records.c.resource).order_by(records.c.id)
        if last is not None:
            statement = statement.where(records.c.id > last)
        rows = bind.execute(statement.limit(BATCH)).all()
        if not rows:
            return
        batch: list[dict[str, Any]] = []
        for record_id, text in rows:
            resource = orjson.loads(text)
            batch += [
                {"kind": kind, "value": value, "record_id": record_id}
                for kind, value in _search_tokens(resource if isinstance(resource, dict) else {})
            ]
        if batch:
            bind.execute(tokens.insert(), batch)
        last = rows[-1][0]


def upgrade() -> None:
    op.create_table(
        "search_token",
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("value", TOKEN_VALUE, nullable=False),
        sa.Column("record_id", ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["record_id"],
            ["source_record.id"],
            name=op.f("fk_search_token_record_id_source_record"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("kind", "value", "record_id", name=op.f("pk_search_token")),
        sqlite_with_rowid=False,
    )
    op.create_index(op.f("ix_search_token_record_id"), "search_token", ["record_id"])
    _backfill()


def downgrade() -> None:
    op.drop_table("search_token")
