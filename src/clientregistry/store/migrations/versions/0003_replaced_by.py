"""Merged source records: ``source_record.replaced_by``, the surviving record of a duplicate.

Revision ID: 0003
Revises: 0004
Create Date: 2026-11-27

Set by a Resolve Duplicate (ITI-104) or ``Patient/$merge``: the record was subsumed by the
one it names, is served with ``active: false`` and a ``replaced-by`` link, and the survivor
with a ``replaces`` link back (found through the index). A plain column with no foreign key,
so that SQLite adds it in place (records are never deleted but by cascade).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("source_record", sa.Column("replaced_by", sa.String(64), nullable=True))
    op.create_index(op.f("ix_source_record_replaced_by"), "source_record", ["replaced_by"])


def downgrade() -> None:
    op.drop_index(op.f("ix_source_record_replaced_by"), table_name="source_record")
    op.drop_column("source_record", "replaced_by")
