"""The tamper-evident audit trail and its delivery to an audit repository (ATNA).

Revision ID: 0005
Revises: 0006
Create Date: 2026-12-07

Written by hand from the models.

* ``audit_event.chain_seq`` / ``chain_hash`` — each event's place in the hash chain and its
  link hash (``clientregistry.store.audit_chain``);
* ``audit_chain_head`` — the chain's last link (one row, updated by every append);
* ``audit_delivery`` — how far the trail has been sent to each audit repository.

The events already recorded start the chain, in the order of their ids: this migration links
them with the hashing of this revision (a frozen copy below, as migrations never import the
live code), so ``clientregistry audit verify`` checks them too. That proves nothing about what
happened to them before the migration, only since.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_GENESIS = "0" * 64
_CHAINED = (
    "recorded",
    "action",
    "outcome",
    "event_type",
    "agent",
    "agent_kind",
    "source_address",
    "entity",
    "detail",
    "resource",
    "request_id",
)
_BATCH = 5000


def _instant(value: Any) -> Any:
    if isinstance(value, str):  # SQLite hands text back to a table without types
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def _link_hash(previous: str, seq: int, row: dict[str, Any]) -> str:
    document = {name: row[name] for name in _CHAINED}
    document["recorded"] = _instant(document["recorded"])
    for name in ("detail", "resource"):  # JSON kept as text
        if document[name] is not None:
            document[name] = orjson.loads(document[name])
    if document["outcome"] is not None:
        document["outcome"] = int(document["outcome"])
    digest = hashlib.sha256()
    digest.update(previous.encode("ascii"))
    digest.update(b"\n%d\n" % seq)
    digest.update(orjson.dumps(document, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS))
    return digest.hexdigest()


def upgrade() -> None:
    with op.batch_alter_table("audit_event") as batch:
        batch.add_column(sa.Column("chain_seq", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("chain_hash", sa.String(64), nullable=True))
    op.create_index("ix_audit_event_chain_seq", "audit_event", ["chain_seq"], unique=True)
    op.create_table(
        "audit_chain_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_chain_head")),
    )
    op.create_table(
        "audit_delivery",
        sa.Column("repository", sa.String(255), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("repository", name=op.f("pk_audit_delivery")),
    )
    connection = op.get_bind()
    events = sa.table(
        "audit_event",
        sa.column("id", sa.BigInteger()),
        sa.column("chain_seq", sa.BigInteger()),
        sa.column("chain_hash", sa.String()),
        sa.column("recorded", sa.DateTime(timezone=True)),
        *(sa.column(name) for name in _CHAINED if name != "recorded"),
    )
    previous, seq, after = _GENESIS, 0, None
    while True:
        query = sa.select(events).order_by(events.c.id).limit(_BATCH)
        if after is not None:
            query = query.where(events.c.id > after)
        rows = [dict(row._mapping) for row in connection.execute(query)]
        if not rows:
            break
        links = []
        for row in rows:
            seq += 1
            previous = _link_hash(previous, seq, row)
            links.append({"row_id": row["id"], "seq": seq, "hash": previous})
        connection.execute(
            events.update()
            .where(events.c.id == sa.bindparam("row_id"))
            .values(chain_seq=sa.bindparam("seq"), chain_hash=sa.bindparam("hash")),
            links,
        )
        after = rows[-1]["id"]
    head = sa.table("audit_chain_head", sa.column("id"), sa.column("seq"), sa.column("hash"))
    connection.execute(head.insert().values(id=1, seq=seq, hash=previous))


def downgrade() -> None:
    op.drop_table("audit_delivery")
    op.drop_table("audit_chain_head")
    op.drop_index("ix_audit_event_chain_seq", table_name="audit_event")
    with op.batch_alter_table("audit_event") as batch:
        batch.drop_column("chain_hash")
        batch.drop_column("chain_seq")
