"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
"""``/work/main/../shared/reference``: OpenCR's sources, demo data and benchmark files."""


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The shared reference material (OpenCR checkout etc.); skips the test when absent."""
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"reference material not found at {REFERENCE_DIR}")
    return REFERENCE_DIR


POSTGRES_ENV = "CR_TEST_POSTGRES_URL"

FreshDatabase = Callable[[str], AbstractContextManager[str]]
"""``fresh_database(kind)``: a database URL for ``init_data_dir`` (see the fixture)."""


@contextlib.contextmanager
def _fresh_database(kind: str) -> Iterator[str]:
    if kind == "sqlite":
        yield ""
        return
    if kind != "postgresql":
        raise ValueError(kind)
    base_url = os.environ.get(POSTGRES_ENV)
    if not base_url:
        pytest.skip(f"PostgreSQL tests need {POSTGRES_ENV}=postgresql://user@host:port/db")
    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(base_url)
    name = f"cr_test_{uuid.uuid4().hex[:12]}"
    admin_url = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def fresh_database() -> FreshDatabase:
    """A context manager per backend: ``""`` for SQLite (the data directory's own file), or a
    fresh PostgreSQL database next to ``CR_TEST_POSTGRES_URL``'s, dropped afterwards (the
    test skips without that variable)."""
    return _fresh_database
