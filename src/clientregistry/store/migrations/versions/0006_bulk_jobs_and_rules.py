"""Bulk jobs (imports, re-matches, exports) and decision rules stored in the database.

Revision ID: 0006
Revises: 0009
Create Date: 2026-12-07

Written by hand from the models, like 0001.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(64)
SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
JSON_TEXT = sa.Text()


def _fk(column: str, target: str, *, cascade: bool = False, table: str) -> sa.ForeignKeyConstraint:
    referred = target.split(".")[0]
    return sa.ForeignKeyConstraint(
        [column],
        [target],
        name=op.f(f"fk_{table}_{column}_{referred}"),
        ondelete="CASCADE" if cascade else None,
    )


def upgrade() -> None:
    op.create_table(
        "bulk_job",
        sa.Column("id", SERIAL, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("origin", sa.String(8), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("finished_at", TIMESTAMP, nullable=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("params", JSON_TEXT, nullable=False),
        sa.Column("progress", JSON_TEXT, nullable=False),
        sa.Column("cursor", JSON_TEXT, nullable=False),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_until", TIMESTAMP, nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bulk_job")),
    )
    op.create_index(op.f("ix_bulk_job_fingerprint"), "bulk_job", ["fingerprint"])
    op.create_index(op.f("ix_bulk_job_kind_state"), "bulk_job", ["kind", "state"])

    op.create_table(
        "import_row",
        sa.Column("job_id", SERIAL, nullable=False),
        sa.Column("row", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("line", sa.Integer(), nullable=True),
        sa.Column("entry", sa.Integer(), nullable=True),
        sa.Column("input_id", sa.String(255), nullable=True),
        sa.Column("record_id", ID, nullable=True),
        sa.Column("golden_id", ID, nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("created", sa.Boolean(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("rule_set", sa.String(128), nullable=True),
        sa.Column("potential", sa.Integer(), nullable=False),
        sa.Column("conflicts", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        _fk("job_id", "bulk_job.id", cascade=True, table="import_row"),
        sa.PrimaryKeyConstraint("job_id", "row", name=op.f("pk_import_row")),
        sqlite_with_rowid=False,
    )

    op.create_table(
        "rematch_change",
        sa.Column("job_id", SERIAL, nullable=False),
        sa.Column("record_id", ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("golden_before", ID, nullable=True),
        sa.Column("golden_after", ID, nullable=False),
        sa.Column("new_golden", sa.Boolean(), nullable=False),
        sa.Column("status_before", sa.String(16), nullable=False),
        sa.Column("status_after", sa.String(16), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("rule_set", sa.String(128), nullable=True),
        sa.Column("issues", JSON_TEXT, nullable=False),
        sa.Column("issues_before", JSON_TEXT, nullable=False),
        sa.Column("applied", sa.Boolean(), nullable=False),
        _fk("job_id", "bulk_job.id", cascade=True, table="rematch_change"),
        sa.PrimaryKeyConstraint("job_id", "record_id", name=op.f("pk_rematch_change")),
        sqlite_with_rowid=False,
    )

    op.create_table(
        "rules_version",
        sa.Column("id", SERIAL, autoincrement=True, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rules_version")),
    )
    op.create_index(op.f("ix_rules_version_sha256"), "rules_version", ["sha256"])

    op.create_table(
        "rules_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("active_version", SERIAL, nullable=True),
        sa.Column("pending_version", SERIAL, nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("layout", JSON_TEXT, nullable=True),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        _fk("active_version", "rules_version.id", table="rules_state"),
        _fk("pending_version", "rules_version.id", table="rules_state"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rules_state")),
    )

    op.create_table(
        "rules_activation",
        sa.Column("id", SERIAL, autoincrement=True, nullable=False),
        sa.Column("version_id", SERIAL, nullable=True),
        sa.Column("previous_version", SERIAL, nullable=True),
        sa.Column("activated_at", TIMESTAMP, nullable=False),
        sa.Column("activated_by", sa.String(128), nullable=False),
        sa.Column("job_id", SERIAL, nullable=True),
        _fk("version_id", "rules_version.id", table="rules_activation"),
        _fk("previous_version", "rules_version.id", table="rules_activation"),
        _fk("job_id", "bulk_job.id", table="rules_activation"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rules_activation")),
    )


def downgrade() -> None:
    op.drop_table("rules_activation")
    op.drop_table("rules_state")
    op.drop_table("rules_version")
    op.drop_table("rematch_change")
    op.drop_table("import_row")
    op.drop_table("bulk_job")
