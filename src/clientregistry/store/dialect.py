"""``INSERT … ON CONFLICT`` for the session's database (SQLite and PostgreSQL spell it alike,
but SQLAlchemy builds it with each dialect's own ``insert``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from clientregistry.store.errors import StoreError

Upsert = sqlite.Insert | postgresql.Insert


def dialect_name(session: Session) -> str:
    """``"sqlite"`` or ``"postgresql"``."""
    return session.get_bind().dialect.name


def insert_for(session: Session, table: Any) -> Upsert:
    """An ``INSERT`` into ``table`` (a model or ``Table``) that has ``on_conflict_do_*``."""
    name = dialect_name(session)
    if name == "sqlite":
        return sqlite.insert(table)
    if name == "postgresql":
        return postgresql.insert(table)
    raise StoreError(f"unsupported database {name!r}")
