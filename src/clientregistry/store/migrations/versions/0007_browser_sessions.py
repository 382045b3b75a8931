"""Browser sessions and language: a token's last use (idle timeout), a person's language; the
queue of automatic links to confirm as a partial index.

Revision ID: 0007
Revises: 0002
Create Date: 2026-12-06

Written by hand from the models. ``token.last_seen_at`` is set for the tokens of browser
sessions (the web UI), which end after a while without use; API bearer tokens leave it empty.
``user_account.language`` is the language a person chose for the web UI (empty: the
browser's). ``ix_source_record_auto_links`` holds the records linked automatically that no
person confirmed, by ``last_updated``: the web UI's queue and its count read it instead of
every record.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("token", sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("user_account", sa.Column("language", sa.String(16), nullable=True))
    dialect = op.get_bind().dialect.name
    false = "0" if dialect == "sqlite" else "false"
    op.create_index(
        "ix_source_record_auto_links",
        "source_record",
        ["last_updated", "match_status", "human_adjudicated"],
        sqlite_where=sa.text(f"match_status = 'auto' AND human_adjudicated IS {false}"),
        postgresql_where=sa.text(f"match_status = 'auto' AND human_adjudicated IS {false}"),
    )


def downgrade() -> None:
    op.drop_index("ix_source_record_auto_links", table_name="source_record")
    with op.batch_alter_table("user_account") as batch:
        batch.drop_column("language")
    with op.batch_alter_table("token") as batch:
        batch.drop_column("last_seen_at")
