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
    SQLite has one write lock for the whole database; :func:`begin_write` starts the
    transaction with ``BEGIN IMMEDIATE`` (:func:`clientregistry.store.db.begin_immediate`),
    taking that lock before the candidates are read, so writers run one after the other and
    each sees what the previous one committed. :func:`lock_blocking_keys` is then a no-op.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import BigInteger, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from clientregistry.store.blocking_index import key_hashes
from clientregistry.store.db import begin_immediate
from clientregistry.store.dialect import dialect_name

_ADVISORY_LOCKS = text(
    "SELECT count(pg_advisory_xact_lock(h)) FROM unnest(:hashes) AS t(h)"
).bindparams(bindparam("hashes", type_=ARRAY(BigInteger)))
"""One round trip; ``unnest`` yields the (sorted) array in order, so locks are taken in order."""


def begin_write(session: Session) -> None:
    """Start a write transaction: ``BEGIN IMMEDIATE`` on SQLite, nothing on PostgreSQL.
    Call it before the transaction's first statement."""
    begin_immediate(session)


def lock_blocking_keys(session: Session, keys: Iterable[str]) -> bool:
    """Hold, until the transaction ends, a lock on each of ``keys`` (PostgreSQL); waits for
    transactions holding any of them. A no-op on SQLite (see the module notes). Returns
    whether this database serialises by key locks (False on SQLite)."""
    if dialect_name(session) != "postgresql":
        return False
    hashes = key_hashes(keys)
    if hashes:
        session.connection().execute(_ADVISORY_LOCKS, {"hashes": hashes})
    return True
