"""Initial schema: records, golden records, links, review queue, blocking, audit, security.

Revision ID: 0001
Revises:
Create Date: 2026-01-01

Written by hand from the models (plain column types, so the migration never changes when the
Python types do); ``tests/store`` checks that it matches ``clientregistry.store.models``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(64)
SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
JSON_TEXT = sa.Text()


def _enum(length: int = 16) -> sa.String:
    return sa.String(length)


def _index(table: str, *columns: str, unique: bool = False) -> None:
    op.create_index(op.f(f"ix_{table}_{'_'.join(columns)}"), table, list(columns), unique=unique)


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
        "golden_record",
        sa.Column("id", ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("last_updated", TIMESTAMP, nullable=False),
        sa.Column("replaced_by", ID, nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        _fk("replaced_by", "golden_record.id", table="golden_record"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_golden_record")),
    )
    _index("golden_record", "replaced_by")

    op.create_table(
        "source_record",
        sa.Column("id", ID, nullable=False),
        sa.Column("client_system", sa.String(128), nullable=False),
        sa.Column("internal_system", sa.String(255), nullable=False),
        sa.Column("internal_value", sa.String(255), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("last_updated", TIMESTAMP, nullable=False),
        sa.Column("resource", JSON_TEXT, nullable=False),
        sa.Column("features", JSON_TEXT, nullable=False),
        sa.Column("golden_id", ID, nullable=True),
        sa.Column("match_status", _enum(), nullable=False),
        sa.Column("human_adjudicated", sa.Boolean(), nullable=False),
        _fk("golden_id", "golden_record.id", table="source_record"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_source_record")),
        sa.UniqueConstraint(
            "internal_system",
            "internal_value",
            name=op.f("uq_source_record_internal_system_internal_value"),
        ),
    )
    _index("source_record", "client_system")
    _index("source_record", "golden_id")
    _index("source_record", "last_updated")

    op.create_table(
        "source_record_version",
        sa.Column("record_id", ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("resource", JSON_TEXT, nullable=False),
        sa.Column("last_updated", TIMESTAMP, nullable=False),
        _fk("record_id", "source_record.id", cascade=True, table="source_record_version"),
        sa.PrimaryKeyConstraint("record_id", "version", name=op.f("pk_source_record_version")),
    )

    op.create_table(
        "link",
        sa.Column("id", SERIAL, autoincrement=True, nullable=False),
        sa.Column("source_record_id", ID, nullable=False),
        sa.Column("golden_id", ID, nullable=False),
        sa.Column("kind", _enum(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("rule_set", sa.String(128), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        _fk("golden_id", "golden_record.id", table="link"),
        _fk("source_record_id", "source_record.id", cascade=True, table="link"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_link")),
    )
    _index("link", "golden_id")
    _index("link", "source_record_id")

    op.create_table(
        "match_issue",
        sa.Column("id", SERIAL, autoincrement=True, nullable=False),
        sa.Column("record_id", ID, nullable=False),
        sa.Column("other_record_id", ID, nullable=False),
        sa.Column("kind", _enum(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("status", _enum(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("resolved_at", TIMESTAMP, nullable=True),
        sa.Column("resolved_by", sa.String(128), nullable=True),
        _fk("other_record_id", "source_record.id", cascade=True, table="match_issue"),
        _fk("record_id", "source_record.id", cascade=True, table="match_issue"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_match_issue")),
    )
    _index("match_issue", "other_record_id")
    _index("match_issue", "record_id")
    _index("match_issue", "status", "kind", "created_at")

    op.create_table(
        "broken_match",
        sa.Column("record_a", ID, nullable=False),
        sa.Column("record_b", ID, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.CheckConstraint("record_a < record_b", name=op.f("ck_broken_match_ordered")),
        _fk("record_a", "source_record.id", cascade=True, table="broken_match"),
        _fk("record_b", "source_record.id", cascade=True, table="broken_match"),
        sa.PrimaryKeyConstraint("record_a", "record_b", name=op.f("pk_broken_match")),
    )
    _index("broken_match", "record_b")

    op.create_table(
        "blocking_key",
        sa.Column("key_hash", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("record_id", ID, nullable=False),
        _fk("record_id", "source_record.id", cascade=True, table="blocking_key"),
        sa.PrimaryKeyConstraint("key_hash", "record_id", name=op.f("pk_blocking_key")),
        sqlite_with_rowid=False,
    )
    _index("blocking_key", "record_id")

    op.create_table(
        "term_count",
        sa.Column("slot", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("value", sa.String(255), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("slot", "value", name=op.f("pk_term_count")),
        sqlite_with_rowid=False,
    )

    op.create_table(
        "audit_event",
        sa.Column("id", SERIAL, autoincrement=True, nullable=False),
        sa.Column("recorded", TIMESTAMP, nullable=False),
        sa.Column("action", _enum(1), nullable=False),
        sa.Column("outcome", sa.Integer(), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("agent", sa.String(128), nullable=False),
        sa.Column("agent_kind", _enum(), nullable=False),
        sa.Column("source_address", sa.String(128), nullable=True),
        sa.Column("entity", sa.String(255), nullable=True),
        sa.Column("detail", JSON_TEXT, nullable=True),
        sa.Column("resource", JSON_TEXT, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_event")),
    )
    _index("audit_event", "agent")
    _index("audit_event", "entity")
    _index("audit_event", "recorded")

    op.create_table(
        "user_account",
        sa.Column("id", SERIAL, autoincrement=True, nullable=False),
        sa.Column("username", sa.String(128), nullable=False),
        sa.Column("password_hash", sa.String(512), nullable=False),
        sa.Column("role", _enum(), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_account")),
        sa.UniqueConstraint("username", name=op.f("uq_user_account_username")),
    )

    op.create_table(
        "token",
        sa.Column("token_hash", sa.String(128), nullable=False),
        sa.Column("user_id", SERIAL, nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        _fk("user_id", "user_account.id", cascade=True, table="token"),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_token")),
    )
    _index("token", "user_id")

    op.create_table(
        "client_system",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("display_name", sa.String(255), nullable=False),
        sa.Column("internal_id_system", sa.String(255), nullable=True),
        sa.Column("permissions", JSON_TEXT, nullable=False),
        sa.Column("cert_serial", sa.String(128), nullable=True),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_client_system")),
        sa.UniqueConstraint("internal_id_system", name=op.f("uq_client_system_internal_id_system")),
    )


def downgrade() -> None:
    for table in (
        "client_system",
        "token",
        "user_account",
        "audit_event",
        "term_count",
        "blocking_key",
        "broken_match",
        "match_issue",
        "link",
        "source_record_version",
        "source_record",
        "golden_record",
    ):
        op.drop_table(table)
