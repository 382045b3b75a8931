"""Single sign-on: the identity-provider subject of an account made by an OpenID Connect login.

Revision ID: 0009
Revises: 0003
Create Date: 2026-12-06

Written by hand from the models. ``user_account.sso_subject`` is ``<issuer> <sub>`` for an
account created at its first single sign-on (it has no usable password), and empty for a
local account; at most one account per subject.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("user_account", sa.Column("sso_subject", sa.String(512), nullable=True))
    op.create_index("ix_user_account_sso_subject", "user_account", ["sso_subject"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_user_account_sso_subject", table_name="user_account")
    with op.batch_alter_table("user_account") as batch:
        batch.drop_column("sso_subject")
