"""Serialising submissions of the same person.

Matching reads the candidates of a record, decides, then writes (perhaps a new golden
record). If two submissions of one person run at once, each may read before the other writes,
find no match, and both create a golden record. Whatever is decided must therefore be
decided by one transaction at a time *among those that could match each other*, and records
that could match share at least one blocking key.

PostgreSQL
    :func:`lock_blocking_keys` takes a transaction-scoped advisory lock
    (``pg_advisory_xact_lock``) on the hash of each blocking key of the record (for an update,
    its old and new keys), in ascending order so that two transactions never wait on each other
    in a cycle. Locks are released at commit or rollback. Submissions of unrelated people share
    no key and run in parallel. Take the locks *before* reading candidates, at READ COMMITTED
    (PostgreSQL's default; at REPEATABLE READ the snapshot would be older than the other
    transaction's commit), and before writing other shared rows (term counts), so that lock
    order is always advisory locks first.

SQLite
    A transaction that submits many records (a transaction Bundle) would hold a lock per
    blocking key of each, and PostgreSQL's lock table is small (``max_locks_per_transaction``,
    64 per connection by default, shared by all): two Bundles of 250 records at once exhaust
    it. Such a transaction takes :func:`lock_registry` instead: one exclusive lock on the
    whole registry. To make that exclusive, every :func:`lock_blocking_keys` first takes the
    same lock *shared*, once per transaction and in the same statement, so ordinary
    submissions still run side by side and wait only for the big transaction.

SQLite
    SQLite has one write lock for the whole database; :func:`begin_write` starts the
    transaction with ``BEGIN IMMEDIATE`` (:func:`clientregistry.store.db.begin_immediate`),
    taking that lock before the candidates are read, so writers run one after the other and
    each sees what the previous one committed. :func:`lock_blocking_keys` is then a no-op.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import BigInteger, Integer, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from clientregistry.store.blocking_index import key_hashes
from clientregistry.store.db import begin_immediate
from clientregistry.store.dialect import dialect_name
from clientregistry.store.driver import DriverQuery

REGISTRY_KEY = "registry|all"
"""The key of the registry-wide lock (:func:`lock_registry`)."""

_ADVISORY_LOCKS = DriverQuery(
    text("SELECT count(pg_advisory_xact_lock(h)) FROM unnest(:hashes) AS t(h)")
    .bindparams(bindparam("hashes", type_=ARRAY(BigInteger)))
    .columns(locked=Integer)
)
"""One statement; ``unnest`` yields the (sorted) array in order, so locks are taken in order.
Run on the driver, so that it can go in one round trip with the reads that follow
(:func:`~clientregistry.store.driver.pipelined`)."""

_SHARED_THEN_KEYS = DriverQuery(
    text(
        "SELECT count(CASE WHEN i = 1 THEN pg_advisory_xact_lock_shared(h) "
        "ELSE pg_advisory_xact_lock(h) END) "
        "FROM unnest(:hashes) WITH ORDINALITY AS t(h, i)"
    )
    .bindparams(bindparam("hashes", type_=ARRAY(BigInteger)))
    .columns(locked=Integer)
)
"""The registry lock shared (the array's first element), then the keys in order, in the
same statement as :data:`_ADVISORY_LOCKS`."""

_EXCLUSIVE = text("SELECT pg_advisory_xact_lock(:registry)").bindparams(
    bindparam("registry", type_=BigInteger)
)

_HELD = "clientregistry_registry_lock"
"""``Session.info`` key: the transaction that holds the registry lock, and how."""


def begin_write(session: Session) -> None:
    """Start a write transaction: ``BEGIN IMMEDIATE`` on SQLite, nothing on PostgreSQL.
    Call it before the transaction's first statement."""
    begin_immediate(session)


def _held(session: Session) -> str | None:
    """How this transaction holds the registry lock: ``"shared"``, ``"exclusive"`` or None."""
    held = session.info.get(_HELD)
    if held is None or held[0] is not session.get_transaction():
        return None
    return str(held[1])


def lock_registry(session: Session) -> None:
    """Hold the whole registry alone until the transaction ends (PostgreSQL; a no-op on
    SQLite, whose writers are serialised anyway). Later :func:`lock_blocking_keys` calls in
    the transaction take nothing more. Call it before any of them: a transaction that
    already holds the lock shared cannot also take it exclusively."""
    if dialect_name(session) != "postgresql":
        return
    held = _held(session)
    if held == "shared":
        raise RuntimeError("lock_registry() must come before lock_blocking_keys()")
    if held is None:
        session.connection().execute(_EXCLUSIVE, {"registry": key_hashes([REGISTRY_KEY])[0]})
        session.info[_HELD] = (session.get_transaction(), "exclusive")


def lock_blocking_keys(session: Session, keys: Iterable[str]) -> bool:
    """Hold, until the transaction ends, a lock on each of ``keys`` (PostgreSQL); waits for
    transactions holding any of them, or holding the whole registry. A no-op on SQLite (see
    the module notes). Returns whether this database serialises by key locks (False on
    SQLite)."""
    if dialect_name(session) != "postgresql":
        return False
    return lock_key_hashes(session, key_hashes(keys))


def lock_key_hashes(session: Session, hashes: list[int]) -> bool:
    """:func:`lock_blocking_keys` for keys already hashed (sorted, distinct:
    :func:`~clientregistry.store.blocking_index.key_hashes`). Inside
    :func:`~clientregistry.store.driver.pipelined` the locks are only queued (waited for
    when the block ends, before the statements queued after them run)."""
    if dialect_name(session) != "postgresql":
        return False
    held = _held(session)
    if held == "exclusive":
        return True
    if held is None:
        registry = key_hashes([REGISTRY_KEY])[0]
        _SHARED_THEN_KEYS.run(session.connection(), {"hashes": [registry, *hashes]})
        session.info[_HELD] = (session.get_transaction(), "shared")
    elif hashes:
        _ADVISORY_LOCKS.run(session.connection(), {"hashes": hashes})
    return True
