"""The tamper-evident audit trail: every ``audit_event`` row is a link of one hash chain.

Link ``n`` has ``chain_seq = n`` and ``chain_hash = sha256(hash(n-1) "\\n" n "\\n" row)`` in
hex, where ``row`` is :func:`canonical` (the event's columns, ``id`` and the chain columns
excepted, as sorted-key JSON) and the hash before the first link is :data:`GENESIS`. Changing
any column of a row, deleting a row, or reordering rows breaks the link there and every
hash after it; :func:`first_broken_link` finds the first.

Appending (:func:`link_rows`, :func:`link_event`) reads and updates the single
:class:`~clientregistry.store.models.AuditChainHead` row in the appending transaction: on
PostgreSQL that row's lock (``SELECT … FOR UPDATE``) is held until the transaction ends, so
appends from every worker are serialised and links are numbered in commit order without gaps
(a rolled-back transaction also rolls the head back). On SQLite writers already hold the
database's write lock (``BEGIN IMMEDIATE``). Record a transaction's audit events at its end
(the use cases do): the head's lock is then held only from there to the ``COMMIT`` (on
PostgreSQL one more round trip in a pipelined submission, to read the head), and is always
the last lock a transaction takes, so it cannot deadlock with the blocking-key locks.

The chain proves the rows were not changed *after* they were written, by someone without the
means to rewrite every later hash; it is no protection against whoever can rewrite the whole
table and its head (export it, or send it to an audit repository, to keep a copy out of
reach).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Final

import orjson
from sqlalchemy import (
    Connection,
    Insert,
    LargeBinary,
    Text,
    bindparam,
    cast,
    func,
    insert,
    literal,
    literal_column,
    select,
    true,
    update,
)

from clientregistry.store.driver import DriverInsert, DriverQuery, DriverStatement, _compile, _run
from clientregistry.store.models import AuditChainHead, AuditEvent

GENESIS: Final = "0" * 64
"""The "previous hash" of the first link."""
HEAD_ID: Final = 1
CHAINED_COLUMNS: Final = (
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
"""The columns a link's hash covers (all but ``id``, ``chain_seq`` and ``chain_hash``)."""

_READ_HEAD = DriverQuery(
    select(AuditChainHead.seq, AuditChainHead.hash)
    .where(AuditChainHead.id == HEAD_ID)
    .with_for_update()
)


def _value(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _instant(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(row: Mapping[str, Any]) -> bytes:
    """The bytes a link's hash covers: :data:`CHAINED_COLUMNS` as JSON with sorted keys
    (enums by value, ``recorded`` as UTC with microseconds, JSON columns as orjson writes
    them, which is also how they read back)."""
    document = {name: _value(row.get(name)) for name in CHAINED_COLUMNS}
    recorded = document["recorded"]
    document["recorded"] = _instant(recorded) if isinstance(recorded, datetime) else recorded
    if document["outcome"] is not None:
        document["outcome"] = int(document["outcome"])
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def link_hash(previous: str, seq: int, row: Mapping[str, Any]) -> str:
    """The hash of link ``seq`` holding ``row``, after the link whose hash is ``previous``."""
    digest = hashlib.sha256()
    digest.update(previous.encode("ascii"))
    digest.update(b"\n%d\n" % seq)
    digest.update(canonical(row))
    return digest.hexdigest()


_MOVE = DriverStatement(update(AuditChainHead).where(AuditChainHead.id == HEAD_ID))


def link_rows(connection: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Give each of ``rows`` (``audit_event`` rows about to be inserted, in this order, on
    ``connection``'s transaction) its ``chain_seq`` and ``chain_hash``, and move the chain's
    head past them (holding its lock until the transaction ends)."""
    if not rows:
        return
    found = _READ_HEAD.send(connection, {}).all()
    for row in rows:
        if row.get("recorded") is None:
            row["recorded"] = datetime.now(UTC)
        if row.get("outcome") is None:
            row["outcome"] = 0
    if not found:  # (the head was deleted: the events are kept, outside the chain)
        for row in rows:
            row["chain_seq"] = row["chain_hash"] = None
        return
    seq, previous = found[0]
    for row in rows:
        seq += 1
        previous = link_hash(previous, seq, row)
        row["chain_seq"] = seq
        row["chain_hash"] = previous
    _MOVE.execute(connection, {"seq": seq, "hash": previous})


_INSERT = DriverInsert(insert(AuditEvent))


def _linked_insert() -> Insert:
    """PostgreSQL: one statement that moves the head by one link and inserts the event with
    that link, the hash computed by the server from the head's (``sha256`` over the same
    bytes as :func:`link_hash`: the previous hash, ``\\n``, the place, ``\\n``, then
    :func:`canonical`, bound as ``chain_canonical``). ``UPDATE`` takes the head's row lock
    (waiting for the transaction holding it) and, under READ COMMITTED, sees the head that
    transaction committed. Nothing to read back: it goes in the pipeline with the rest."""
    newline = func.chr(10)
    prefix = (
        AuditChainHead.hash.concat(newline)
        .concat(cast(AuditChainHead.seq + 1, Text))
        .concat(newline)
    )
    digest = func.sha256(
        func.convert_to(prefix, literal_column("'UTF8'")).op("||", return_type=LargeBinary)(
            bindparam("chain_canonical", type_=LargeBinary)
        )
    )
    moved = (
        update(AuditChainHead)
        .where(AuditChainHead.id == HEAD_ID)
        .values(seq=AuditChainHead.seq + 1, hash=func.encode(digest, literal_column("'hex'")))
        .returning(AuditChainHead.seq, AuditChainHead.hash)
        .cte("moved")
    )
    columns = AuditEvent.__table__.c
    values = [bindparam(name, type_=columns[name].type) for name in CHAINED_COLUMNS]
    # (an outer join: without a head row the event is still recorded, outside the chain,
    # where verifying finds it)
    one = select(literal(1).label("one")).subquery("one")
    return insert(AuditEvent).from_select(
        [*CHAINED_COLUMNS, "chain_seq", "chain_hash"],
        select(*values, moved.c.seq, moved.c.hash).select_from(one.outerjoin(moved, true())),
    )


_LINKED_INSERT = _linked_insert()
_LINKED_PLANS: dict[str, Any] = {}
_LINK_HERE_FROM = 8
"""From this many rows on, PostgreSQL's are linked here too (:func:`link_rows`: one round trip
to read and lock the head, then one statement for all the rows), not one statement each that
moves the head by one (an import's batch: hundreds of updates of the head's row, each its own
statement on the server)."""


def insert_linked(connection: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``audit_event`` rows (every column of :data:`CHAINED_COLUMNS`), in this order,
    each linked into the chain, on ``connection``'s transaction (through the driver, so inside
    :func:`~clientregistry.store.driver.pipelined` too). On PostgreSQL the server links a few
    (:func:`_linked_insert`, no round trip of its own); elsewhere, and for many,
    :func:`link_rows` does."""
    if not rows:
        return
    dialect = connection.dialect
    if dialect.name != "postgresql" or len(rows) >= _LINK_HERE_FROM:
        link_rows(connection, rows)
        _INSERT.execute(connection, rows)
        return
    plan = _LINKED_PLANS.get(dialect.name)
    if plan is None:
        names = (*CHAINED_COLUMNS, "chain_canonical")
        plan = _LINKED_PLANS[dialect.name] = _compile(_LINKED_INSERT, dialect, names)
    params = []
    for row in rows:
        if row.get("recorded") is None:
            row["recorded"] = datetime.now(UTC)
        if row.get("outcome") is None:
            row["outcome"] = 0
        values = {name: row.get(name) for name in CHAINED_COLUMNS}
        values["chain_canonical"] = canonical(row)
        params.append(plan.row(values))
    _run(connection, plan.sql, params)


def link_event(connection: Connection, event: AuditEvent) -> None:
    """:func:`link_rows` for an event inserted through the ORM (a ``before_insert`` hook)."""
    row = {name: getattr(event, name) for name in CHAINED_COLUMNS}
    link_rows(connection, [row])
    event.recorded = row["recorded"]
    event.outcome = row["outcome"]
    event.chain_seq = row["chain_seq"]
    event.chain_hash = row["chain_hash"]


@dataclass(frozen=True, slots=True)
class BrokenLink:
    """The first link that does not hold: the event (``id``, ``recorded``) where the chain
    breaks, its place, and why."""

    id: int | None
    recorded: datetime | None
    seq: int
    reason: str


def first_broken_link(
    links: Iterable[Mapping[str, Any]], head: tuple[int, str] | None
) -> tuple[int, BrokenLink | None]:
    """Walk ``links`` (rows with ``id``, ``chain_seq``, ``chain_hash`` and the chained
    columns, in ``chain_seq`` order) and ``head`` (the head row's seq and hash): how many
    links were checked, and the first broken one (None: the chain holds)."""
    previous, expected, checked = GENESIS, 1, 0
    last: Mapping[str, Any] | None = None
    for row in links:
        seq = row["chain_seq"]
        if seq is None:
            return checked, BrokenLink(row["id"], row["recorded"], expected, "not in the chain")
        if seq != expected:
            reason = (
                f"links {expected}–{seq - 1} are missing (deleted?)"
                if seq > expected
                else f"link {seq} appears twice"
            )
            return checked, BrokenLink(row["id"], row["recorded"], expected, reason)
        if link_hash(previous, seq, row) != row["chain_hash"]:
            return checked, BrokenLink(
                row["id"], row["recorded"], seq, "its content does not match its hash (changed?)"
            )
        previous, expected, checked, last = row["chain_hash"], seq + 1, checked + 1, row
    if head is None:
        where = last or {"id": None, "recorded": None}
        return checked, BrokenLink(where["id"], where["recorded"], expected - 1, "no chain head")
    if (head[0], head[1]) != (expected - 1, previous):
        where = last or {"id": None, "recorded": None}
        if head[0] >= expected:
            reason = f"links {expected}–{head[0]} after it are missing (deleted?)"
        else:
            reason = "the chain's head does not match the last link"
        return checked, BrokenLink(where["id"], where["recorded"], expected - 1, reason)
    return checked, None


def chain_rows(connection: Connection, batch: int = 5000) -> Iterator[dict[str, Any]]:
    """Every ``audit_event`` row as :func:`first_broken_link` wants it, in chain order
    (unchained rows first), read in batches."""
    columns = [AuditEvent.__table__.c[name] for name in ("id", "chain_seq", "chain_hash")]
    columns += [AuditEvent.__table__.c[name] for name in CHAINED_COLUMNS]
    unchained = select(*columns).where(AuditEvent.chain_seq.is_(None)).order_by(AuditEvent.id)
    for row in connection.execute(unchained):
        yield dict(row._mapping)
    after = 0
    while True:
        statement = (
            select(*columns)
            .where(AuditEvent.chain_seq > after)
            .order_by(AuditEvent.chain_seq)
            .limit(batch)
        )
        rows = [dict(row._mapping) for row in connection.execute(statement)]
        if not rows:
            return
        yield from rows
        after = rows[-1]["chain_seq"]


def chain_head(connection: Connection) -> tuple[int, str] | None:
    found = connection.execute(
        select(AuditChainHead.seq, AuditChainHead.hash).where(AuditChainHead.id == HEAD_ID)
    ).first()
    return None if found is None else (found[0], found[1])
