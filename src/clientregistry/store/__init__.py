"""Persistence: the registry's tables in SQLite or PostgreSQL (no FHIR parsing, no HTTP).

Modules: :mod:`.db` (engines, sessions, transactions, migrations, error boundary),
:mod:`.models` (tables), :mod:`.blocking_index` (blocking keys), :mod:`.term_counts`,
:mod:`.locks` (serialising submissions), :mod:`.features_codec`, :mod:`.errors`.
"""

from clientregistry.store.blocking_index import DatabaseBlockingIndex, key_hash
from clientregistry.store.db import (
    create_engine_for,
    migrate,
    session_factory,
    transaction,
    translate_errors,
)
from clientregistry.store.errors import Busy, Conflict, StoreError

__all__ = [
    "Busy",
    "Conflict",
    "DatabaseBlockingIndex",
    "StoreError",
    "create_engine_for",
    "key_hash",
    "migrate",
    "session_factory",
    "transaction",
    "translate_errors",
]
