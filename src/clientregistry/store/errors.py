"""Errors of the storage layer.

    ClientRegistryError
     └── StoreError          the database refused or failed (driver error, bad URL ...)
          ├── Conflict       a constraint was violated (unique internal id, foreign key ...)
          └── Busy           a lock could not be had in time; retrying the transaction may work

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
