"""Search tokens: the index table of the Patient search and PIXm, filled for stored records.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

Written by hand from the models, like 0001. Records stored before this revision get their
tokens here, computed by :func:`clientregistry.registry.search_tokens.search_tokens` from
each record's stored resource (a batch at a time).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op

from clientregistry.registry.search_tokens import search_tokens

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(64)
TOKEN_VALUE = sa.String(255).with_variant(sa.String(255, collation="C"), "postgresql")
BATCH = 1000


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
                for kind, value in search_tokens(resource if isinstance(resource, dict) else {})
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
