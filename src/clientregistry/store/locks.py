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

Large transactions
    A transaction that submits many records (a transaction Bundle) would hold a lock per
    blocking key of each, and PostgreSQL's lock table is small (``max_locks_per_transaction``,
    64 per connection by default, shared by all): two Bundles of 250 records at once exhaust
    it. Such a transaction takes :func:`lock_registry` instead: one exclusive lock on the
    whole registry. To make that exclusive, every :func:`lock_blocking_keys` first takes the
    same lock *shared*, once per transaction and in the same statement, so ordinary
    submissions still run side by side and wait only for the big transaction.

Not waiting
    A worker's event loop must not wait for a lock: every other request of that worker would
    wait with it. :func:`take_key_locks` (``wait=False``) takes the same locks with
    ``pg_try_advisory_xact_lock``; when one is held elsewhere the caller rolls back (letting
    go of those it took) and runs the transaction again where it may wait (the thread pool).

SQLite
    SQLite has one write lock for the whole database; :func:`begin_write` starts the
    transaction with ``BEGIN IMMEDIATE`` (:func:`clientregistry.store.db.begin_immediate`),
    taking that lock before the candidates are read, so writers run one after the other and
    each sees what the previous one committed. :func:`lock_blocking_keys` is then a no-op.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import BigInteger, Boolean, Integer, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from clientregistry.store.blocking_index import key_hashes
from clientregistry.store.db import begin_immediate
from clientregistry.store.dialect import dialect_name
from clientregistry.store.driver import DriverQuery, PendingRows
from clientregistry.store.errors import WouldWait

REGISTRY_KEY = "registry|all"
"""The key of the registry-wide lock (:func:`lock_registry`)."""


def _key_locks(*, shared_first: bool, wait: bool) -> DriverQuery:
    """The statement that locks the keys of an array, in one round trip (run on the driver,
    so that it can share it with the reads that follow: ``pipelined``). ``unnest`` yields the
    (sorted) array in order, so locks are taken in order. ``shared_first``: the array's first
    element is the registry lock, taken shared. Waiting, it returns a count; not waiting
    (``pg_try_…``), whether every lock was granted (those that were stay held until the
    transaction ends)."""
    function = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
    aggregate = "count" if wait else "bool_and"
    if shared_first:
        sql = (
            f"SELECT {aggregate}(CASE WHEN i = 1 THEN {function}_shared(h) ELSE {function}(h) "
            "END) FROM unnest(:hashes) WITH ORDINALITY AS t(h, i)"
        )
    else:
        sql = f"SELECT {aggregate}({function}(h)) FROM unnest(:hashes) AS t(h)"
    statement = text(sql).bindparams(bindparam("hashes", type_=ARRAY(BigInteger)))
    return DriverQuery(statement.columns(outcome=Integer if wait else Boolean))


_KEY_LOCKS = {
    (shared_first, wait): _key_locks(shared_first=shared_first, wait=wait)
    for shared_first in (False, True)
    for wait in (False, True)
}

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
    attempt = take_key_locks(session, hashes)
    attempt.close()
    return attempt.by_keys


def take_key_locks(session: Session, hashes: list[int], *, wait: bool = True) -> LockAttempt:
    """:func:`lock_key_hashes`, or without ``wait`` the same locks not waited for: those that
    are free are taken, and :meth:`LockAttempt.check` says whether any was not (then roll the
    transaction back, which lets go of those it took, and run it again waiting). Not waiting
    is for a caller that must not block: a worker's event loop."""
    if dialect_name(session) != "postgresql":
        return LockAttempt(False)
    held = _held(session)
    if held == "exclusive" or (held == "shared" and not hashes):
        return LockAttempt(True)
    if held is None:
        hashes = [key_hashes([REGISTRY_KEY])[0], *hashes]
        session.info[_HELD] = (session.get_transaction(), "shared")
    statement = _KEY_LOCKS[held is None, wait]
    pending = statement.send(session.connection(), {"hashes": hashes})
    return LockAttempt(True, pending, waited=wait)


class LockAttempt:
    """What :func:`take_key_locks` took, known once its statement has run (inside
    :func:`~clientregistry.store.driver.pipelined`, after the block)."""

    def __init__(
        self, by_keys: bool, pending: PendingRows | None = None, *, waited: bool = True
    ) -> None:
        self.by_keys = by_keys
        """Whether this database serialises by key locks (False on SQLite)."""
        self._pending = pending
        self._waited = waited

    def check(self) -> None:
        """Raise :class:`~clientregistry.store.errors.WouldWait` unless every lock was had
        (taken waiting, they all were)."""
        if self._pending is None:
            return
        if self._waited:
            self._pending.close()
            return
        rows = self._pending.all()
        if not (rows and rows[0][0]):
            raise WouldWait("another transaction holds a lock on this record or person")

    def close(self) -> None:
        if self._pending is not None:
            self._pending.close()
