"""``clientregistry backup | restore``: one file holding a registry (data directory and
database), taken while it runs; see :mod:`clientregistry.registry.backup`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from clientregistry.cli_common import DataDirOption, data_dir_of, fail, load, out

backup_app = typer.Typer()


@backup_app.command()
def backup(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The backup file to write (a .tar.gz).")
    ],
    data_dir: DataDirOption = None,
) -> None:
    """Back the registry up (data directory, CA key included, and database) while it runs."""
    from clientregistry.errors import ClientRegistryError
    from clientregistry.registry.backup import backup as take_backup

    settings = load(data_dir)
    try:
        done = take_backup(settings, output)
    except ClientRegistryError as error:
        raise fail(f"backup failed, nothing was written: {error}") from None
    out.print(
        f"backed up {done.files} files and the {done.database} database (schema "
        f"{done.schema_revision}) to {done.path}; it holds the CA's private key: keep it safe",
        highlight=False,
    )


@backup_app.command()
def restore(
    input_path: Annotated[
        Path, typer.Option("--input", "-i", help="A backup file written by `backup`.")
    ],
    data_dir: DataDirOption = None,
    database_url: Annotated[
        str,
        typer.Option(
            "--database-url",
            help="An empty PostgreSQL database to restore into (default: CR_DATABASE_URL, else "
            "the backed-up configuration's).",
        ),
    ] = "",
) -> None:
    """Restore a backup into a new data directory and an empty database."""
    from clientregistry.errors import ClientRegistryError
    from clientregistry.registry.backup import restore as restore_backup

    target = data_dir_of(data_dir)
    try:
        done = restore_backup(input_path, target, database_url=database_url, environ=os.environ)
    except ClientRegistryError as error:
        raise fail(f"restore failed, nothing was kept: {error}") from None
    out.print(
        f"restored {done.data_dir} and the database {done.database} (schema "
        f"{done.schema_revision}); `clientregistry serve --data-dir {done.data_dir}` serves it",
        highlight=False,
    )
