"""Errors of the storage layer.

    ClientRegistryError
     └── StoreError          the database refused or failed (driver error, bad URL ...)
          ├── Conflict       a constraint was violated (unique internal id, foreign key ...)
          ├── Busy           a lock could not be had in time; retrying the transaction may work
          └── WouldWait      a lock is held elsewhere and the caller chose not to wait for it

Driver exceptions (SQLAlchemy's ``IntegrityError``, ``OperationalError`` ...) never leave the
store: :func:`clientregistry.store.db.translate_errors` turns them into these, keeping the
original as ``__cause__``.
"""

from __future__ import annotations

from clientregistry.errors import ClientRegistryError


class StoreError(ClientRegistryError):
    """The database refused or failed an operation."""


class Conflict(StoreError):
    """A constraint was violated; ``constraint`` names it when the driver says which."""

    def __init__(self, message: str, *, constraint: str | None = None) -> None:
        self.constraint = constraint
        super().__init__(message)


class Busy(StoreError):
    """A lock was not granted in time (SQLite busy, PostgreSQL lock timeout, deadlock,
    serialisation failure). The transaction was rolled back; it may be retried."""


class WouldWait(StoreError):
    """A lock the transaction needs is held by another transaction, and the caller asked not
    to wait (:func:`clientregistry.store.locks.take_key_locks`): roll back and run the
    transaction again where waiting harms nothing."""
