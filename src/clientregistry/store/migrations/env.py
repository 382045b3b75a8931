"""Alembic environment: runs migrations on the connection handed over in the configuration.

:func:`clientregistry.store.db.migrate` puts an open connection in
``config.attributes["connection"]``. For the ``alembic`` command line (writing a new revision)
the URL comes from ``CR_DATABASE_URL`` instead, e.g.::

    CR_DATABASE_URL=sqlite:///dev.db alembic -c /dev/null -x ... revision --autogenerate

Offline (``--sql``) mode is not supported.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from clientregistry.store.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from clientregistry.store.db import create_engine_for

    url = os.environ.get("CR_DATABASE_URL")
    if not url:
        raise RuntimeError("set CR_DATABASE_URL to run Alembic from the command line")
    engine = create_engine_for(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline (--sql) migrations are not supported")
run_migrations_online()
