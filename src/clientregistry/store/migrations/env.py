"""Alembic environment: runs migrations on the connection handed over in the configuration.

:func:`clientregistry.store.db.migrate` builds the configuration in code and puts an open
connection in ``config.attributes["connection"]``; there is no ``alembic.ini``. To write a new
revision, autogenerate it against a database migrated to head, then tidy it by hand::

    from alembic import command
    from clientregistry.store.db import alembic_config, create_engine_for, migrate

    engine = create_engine_for("sqlite:///dev.db")
    migrate(engine)
    with engine.begin() as connection:
        command.revision(alembic_config(connection), "what changed", autogenerate=True,
                         rev_id="0002")

Offline (``--sql``) mode is not supported.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from clientregistry.store.models import Base


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (--sql) migrations are not supported")
_connection = context.config.attributes.get("connection")
if _connection is None:
    raise RuntimeError("run migrations with clientregistry.store.db.migrate(engine)")
run_migrations(_connection)
