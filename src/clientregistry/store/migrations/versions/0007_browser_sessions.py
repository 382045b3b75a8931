"""Browser sessions and language: a token's last use (idle timeout), a person's language.

Revision ID: 0007
Revises: 0002
Create Date: 2026-12-06

Written by hand from the models. ``token.last_seen_at`` is set for the tokens of browser
sessions (the web UI), which end after a while without use; API bearer tokens leave it empty.
``user_account.language`` is the language a person chose for the web UI (empty: the
browser's).
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


def downgrade() -> None:
    with op.batch_alter_table("user_account") as batch:
        batch.drop_column("language")
    with op.batch_alter_table("token") as batch:
        batch.drop_column("last_seen_at")
