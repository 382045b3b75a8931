"""The blocking-key plan stored records' keys were made by.

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-07

Written by hand from the models. ``rules_state.key_plan`` is a digest of how blocking keys
are derived (:meth:`clientregistry.matching.blocking.Blocker.signature`); a registry whose
rules now derive other keys for the same features (a release with new key groups) makes
every record's keys again when it opens. Empty in a database of an earlier release: its
keys are made again once.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("rules_state", sa.Column("key_plan", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rules_state") as batch:
        batch.drop_column("key_plan")
