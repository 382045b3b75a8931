"""Alembic migrations of the registry's schema (run by :func:`clientregistry.store.db.migrate`)."""
