"""``clientregistry init | serve | migrate``: make an installation, run it, upgrade it.

``init`` and ``serve`` read the database URL the same way (``--database-url``, else
``CR_DATABASE_URL``, else the data directory's ``config.toml``, else SQLite in the data
directory), so a PostgreSQL installation can be made and served with environment variables
alone. ``serve`` refuses a database ``init`` never filled, rather than serving an empty one.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from clientregistry.cli_common import DataDirOption, data_dir_of, err, fail, load, out

serve_app = typer.Typer()


@serve_app.command()
def init(
    data_dir: DataDirOption = None,
    hostname: Annotated[
        list[str] | None,
        typer.Option("--hostname", help="Host name or IP for the server certificate (repeatable)."),
    ] = None,
    database_url: Annotated[
        str,
        typer.Option(
            "--database-url",
            help="postgresql://… (default: CR_DATABASE_URL, else SQLite in the data directory).",
        ),
    ] = "",
    port: Annotated[int, typer.Option("--port")] = 3000,
) -> None:
    """Create a data directory: configuration, database, CA, certificates, admin user."""
    from clientregistry.errors import ClientRegistryError
    from clientregistry.registry.setup import DataDirExists, init_data_dir

    target = data_dir_of(data_dir)
    try:
        done = init_data_dir(
            target,
            hostnames=list(hostname or []),
            database_url=database_url,
            port=port,
            environ=os.environ,
        )
    except DataDirExists as error:
        raise fail(str(error)) from None
    except ClientRegistryError as error:
        raise fail(f"init failed, nothing was created: {error}") from None
    out.print(f"[bold]created[/] {target}", highlight=False)
    out.print(f"  configuration   {target / 'config.toml'}", highlight=False)
    out.print(f"  database        {done.database}", highlight=False)
    out.print(f"  CA certificate  {target / 'certs' / 'ca.pem'}", highlight=False)
    for client in done.clients:
        out.print(
            f"  client {client.system:<8} {client.cert_path}  {client.key_path}", highlight=False
        )
    out.print(
        f"\n[bold]admin password[/] (shown once, store it now): [bold]{done.admin_password}[/]",
        highlight=False,
    )
    out.print(
        f"[bold].p12 password[/] for the client certificates: {done.p12_password}",
        highlight=False,
    )


@serve_app.command()
def serve(
    data_dir: DataDirOption = None,
    host: Annotated[
        str | None,
        typer.Option("--host", help="Interface to listen on (default 127.0.0.1: this machine)."),
    ] = None,
    port: Annotated[int | None, typer.Option("--port")] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1)] = None,
) -> None:
    """Serve the FHIR API over HTTPS with mutual TLS (port 3000 by default)."""
    import dataclasses

    from clientregistry.errors import ClientRegistryError
    from clientregistry.registry.setup import prepare_to_serve, shown
    from clientregistry.server import serve as run_server

    settings = load(data_dir)
    settings = dataclasses.replace(
        settings,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers or settings.workers,
    )
    try:
        warnings = prepare_to_serve(settings)
    except ClientRegistryError as error:
        raise fail(str(error)) from None
    for warning in warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    err.print(
        f"serving https://{settings.host}:{settings.port}/fhir with {settings.workers} "
        f"worker(s), data in {settings.data_dir}, database {shown(settings.database)}",
        highlight=False,
    )
    run_server(settings)


@serve_app.command()
def migrate(data_dir: DataDirOption = None) -> None:
    """Bring the database's schema up to this release (Alembic); a no-op when it is."""
    from clientregistry.errors import ClientRegistryError
    from clientregistry.registry.context import RegistryContext
    from clientregistry.registry.setup import shown
    from clientregistry.store.db import create_engine_for, current_revision, head_revision
    from clientregistry.store.db import migrate as upgrade

    settings = load(data_dir)
    try:
        engine = create_engine_for(settings.database)
        try:
            before = current_revision(engine)
            if before is None:
                raise fail(
                    f"the database {shown(settings.database)} holds no registry; "
                    "`clientregistry init` makes one"
                )
            upgrade(engine)
            after = current_revision(engine)
        finally:
            engine.dispose()
    except ClientRegistryError as error:
        raise fail(f"migrate failed: {error}") from None
    if before == after:
        out.print(f"the schema is up to date (revision {after})", highlight=False)
    else:
        out.print(f"upgraded the schema from revision {before} to {after}", highlight=False)
    if after != head_revision():
        raise fail(f"the schema is at {after}, not this release's {head_revision()}")
    try:  # the stored features and blocking keys, for the rules in force (as `serve` would)
        context = RegistryContext.open(settings)
    except ClientRegistryError as error:
        raise fail(f"migrate failed: {error}") from None
    context.close()
    if context.rederived is not None:
        out.print(
            f"derived the features and blocking keys of {context.rederived} records again "
            "(they followed the rules of an earlier release or configuration)",
            highlight=False,
        )
