"""What the command modules share: consoles that do not wrap, the ``--data-dir`` option, the
settings, a transaction on the registry's database with its schema checked, and the
operator as the agent of audited changes.

Output that is not a terminal (a pipe, a file, a log) is never wrapped: a path or a password
split over two lines cannot be copied. On a terminal, rich wraps as usual.

The database layer is imported inside the functions: ``clientregistry`` starts in a fraction
of a second for the commands that do not need it.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from clientregistry.settings import Settings
    from clientregistry.store.enums import AuditAction

NOT_A_TERMINAL_WIDTH = 100_000
"""The width of output that is not a terminal: as long as any line."""


def _console(*, stderr: bool) -> Console:
    console = Console(stderr=stderr, soft_wrap=True)
    if not console.is_terminal:
        console.width = NOT_A_TERMINAL_WIDTH
    return console


out = _console(stderr=False)
err = _console(stderr=True)

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="The registry's data directory (default: CR_DATA_DIR or ./data)."
    ),
]

BlockLimitOption = Annotated[
    int | None,
    typer.Option(
        "--block-limit",
        min=1,
        help="With --engine spark: pair a record, in each block, only with the N records "
        "just before it (bounds the blocking join; default: the newest 100, as dedupe "
        "and the registry choose).",
    ),
]
"""``dedupe`` and ``rematch``: the Spark engine's bound on its blocking join."""


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on standard error; raise what this returns."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def data_dir_of(value: Path | None) -> Path:
    from clientregistry.settings import default_data_dir

    return value if value is not None else default_data_dir()


def load(data_dir: Path | None) -> Settings:
    """The settings of the data directory (``CR_…`` variables applied); every problem of a
    bad configuration is listed and the command ends."""
    from clientregistry.errors import ConfigError
    from clientregistry.settings import load_settings

    try:
        return load_settings(data_dir_of(data_dir))
    except ConfigError as error:
        err.print(f"[bold red]error:[/] {error.source}")
        for problem in error.problems:
            err.print(f"  - {problem}", highlight=False, markup=False)
        raise typer.Exit(2) from None


@contextmanager
def registry_transaction(settings: Settings) -> Iterator[Session]:
    """A write transaction on the registry's database, whose schema must be this release's;
    a refused change (:class:`~clientregistry.errors.ClientRegistryError`) ends the command
    with its message, and nothing is changed."""
    from clientregistry.errors import ClientRegistryError
    from clientregistry.registry.setup import shown
    from clientregistry.store.db import (
        create_engine_for,
        current_revision,
        head_revision,
        session_factory,
        transaction,
    )

    try:
        engine = create_engine_for(settings.database)
    except ClientRegistryError as error:
        raise fail(f"database: {error}") from None
    try:
        revision = current_revision(engine)
        if revision is None:
            raise fail(
                f"the database {shown(settings.database)} holds no registry; run "
                "`clientregistry init` (with the same --data-dir and CR_DATABASE_URL)"
            )
        if revision != head_revision():
            raise fail(
                f"the database's schema is at revision {revision}, this release needs "
                f"{head_revision()}: run `clientregistry migrate` first"
            )
        with transaction(session_factory(engine)) as session:
            yield session
    except ClientRegistryError as error:
        raise fail(getattr(error, "message", None) or str(error)) from None
    finally:
        engine.dispose()


def operator() -> str:
    """The agent of a change made on the command line: ``cli:<operating-system user>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def audit(
    session: Session,
    event_type: str,
    action: AuditAction,
    detail: Mapping[str, object],
) -> None:
    """Record a change made on the command line, in the change's transaction."""
    from clientregistry.registry.actor import record_action

    record_action(
        session,
        agent=operator(),
        source_address=None,
        event_type=event_type,
        action=action,
        entity=None,
        detail=dict(detail),
    )
