"""Operations: a change counter on client systems, the request id on audit events.

Revision ID: 0004
Revises: 0007
Create Date: 2026-12-01

* ``client_system.revision`` — raised by every change of a system, so that a server process
  notices a change with one small query (see :mod:`clientregistry.registry.systems`); the
  systems already stored start at 0.
* ``audit_event.request_id`` — the id of the HTTP request an event records (the
  ``X-Request-Id`` response header and the JSON log line carry it too), indexed to find a
  request's events; events recorded before have none.

Written by hand, like 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("client_system") as batch:
        batch.add_column(sa.Column("revision", sa.BigInteger(), nullable=False, server_default="0"))
    with op.batch_alter_table("audit_event") as batch:
        batch.add_column(sa.Column("request_id", sa.String(64), nullable=True))
        batch.create_index(op.f("ix_audit_event_request_id"), ["request_id"])


def downgrade() -> None:
    with op.batch_alter_table("audit_event") as batch:
        batch.drop_index(op.f("ix_audit_event_request_id"))
        batch.drop_column("request_id")
    with op.batch_alter_table("client_system") as batch:
        batch.drop_column("revision")
