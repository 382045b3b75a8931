"""The web UI's audit filters at scale: an index for the event type, a partial one for the
failures.

Revision ID: 0008
Revises: 0005
Create Date: 2026-12-07

Written by hand from the models. The audit trail gains an event with every submission and
every page read, and its filters by event type and by outcome read every event without an
index (a full scan of a table whose rows carry a FHIR AuditEvent each: seconds at 100,000
persons). ``ix_audit_event_event_type`` orders each type's events by id, as the trail is
paged (newest first). ``ix_audit_event_failures`` holds the refused and failed events only
(a few among hundreds of thousands: submissions that succeed do not write to it).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_audit_event_event_type", "audit_event", ["event_type", "id"])
    op.create_index(
        "ix_audit_event_failures",
        "audit_event",
        ["outcome", "id"],
        sqlite_where=sa.text("outcome != 0"),
        postgresql_where=sa.text("outcome != 0"),
    )


def downgrade() -> None:
    op.drop_index("ix_audit_event_failures", table_name="audit_event")
    op.drop_index("ix_audit_event_event_type", table_name="audit_event")
