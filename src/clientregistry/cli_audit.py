"""``clientregistry audit verify | export``: check the tamper-evident audit trail, and hand a
time range of it to an auditor (:mod:`clientregistry.registry.audit_integrity`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from clientregistry.cli_common import DataDirOption, err, fail, load, out

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from clientregistry.settings import Settings

audit_app = typer.Typer(
    help="The audit trail: verify its hash chain, export a date range.", no_args_is_help=True
)


@contextmanager
def _sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    from clientregistry.errors import ClientRegistryError
    from clientregistry.registry.setup import shown
    from clientregistry.store.db import (
        create_engine_for,
        current_revision,
        head_revision,
        session_factory,
    )

    try:
        engine = create_engine_for(settings.database)
    except ClientRegistryError as error:
        raise fail(f"database: {error}") from None
    try:
        revision = current_revision(engine)
        if revision is None:
            raise fail(f"the database {shown(settings.database)} holds no registry")
        if revision != head_revision():
            raise fail(
                f"the database's schema is at revision {revision}, this release needs "
                f"{head_revision()}: run `clientregistry migrate` first"
            )
        yield session_factory(engine)
    except ClientRegistryError as error:
        raise fail(getattr(error, "message", None) or str(error)) from None
    finally:
        engine.dispose()


@audit_app.command("verify")
def verify(data_dir: DataDirOption = None) -> None:
    """Check every link of the audit trail's hash chain; exit 1 at the first broken one."""
    from clientregistry.registry.audit_integrity import verify_chain

    with _sessions(load(data_dir)) as sessions:
        result = verify_chain(sessions)
    if result.broken is None:
        out.print(f"OK: {result.checked} audit events, every link holds", highlight=False)
        return
    broken = result.broken
    when = broken.recorded.isoformat() if broken.recorded else "unknown time"
    err.print(
        f"BROKEN at link {broken.seq}: audit event {broken.id} recorded {when}: "
        f"{broken.reason} ({result.checked} links before it hold)",
        highlight=False,
        markup=False,
    )
    raise typer.Exit(1)


@audit_app.command("export")
def export(
    start: Annotated[
        str, typer.Option("--from", help="First day (2026-12-01) or time (ISO 8601, UTC).")
    ],
    end: Annotated[
        str, typer.Option("--to", help="Last day, included (2026-12-31), or time (excluded).")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="The file to write.")],
    export_format: Annotated[
        str, typer.Option("--format", help="ndjson (FHIR AuditEvents, one a line) or csv.")
    ] = "ndjson",
    data_dir: DataDirOption = None,
) -> None:
    """Write the audit events recorded in a date range, in chain order, for an auditor."""
    from clientregistry.registry.audit_integrity import ExportFormat, export_events, parse_moment

    try:
        chosen = ExportFormat(export_format.lower())
    except ValueError:
        raise fail(f"--format must be ndjson or csv, not {export_format!r}") from None
    try:
        first, last = parse_moment(start, end=False), parse_moment(end, end=True)
    except ValueError as error:
        raise fail(str(error)) from None
    if last <= first:
        raise fail("--to must come after --from")
    settings = load(data_dir)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    with _sessions(settings) as sessions, partial.open("w", encoding="utf-8", newline="") as file:
        count = export_events(sessions, first, last, chosen, file)
    partial.replace(output)
    out.print(f"exported {count} audit events to {output}", highlight=False)
