"""``clientregistry users …``: accounts of the people who use the admin API.

A password is never an argument (it would end up in shell history and ``ps``): it is asked
for twice on a terminal, or read from the first line of standard input otherwise
(``printf '%s\\n' "$PW" | clientregistry users add alice --role reviewer``). Every change
is audited with the operating-system user as agent (``cli:<user>``).
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from clientregistry.cli_common import err, out

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from clientregistry.settings import Settings
    from clientregistry.store.enums import AuditAction

# The database layer (SQLAlchemy, Alembic) is imported inside the commands: `clientregistry`
# starts in a fraction of a second for every other command.


class RoleName(StrEnum):
    """The roles (:class:`clientregistry.store.enums.Role`), for the command line."""

    admin = "admin"
    reviewer = "reviewer"
    auditor = "auditor"


users_app = typer.Typer(
    help="Accounts for the admin API: admin, reviewer, auditor.", no_args_is_help=True
)

_out = out
_err = err

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="The registry's data directory (default: CR_DATA_DIR or ./data)."
    ),
]
UsernameArgument = Annotated[str, typer.Argument(help="The account's username.")]
RoleOption = Annotated[RoleName, typer.Option("--role", help="admin, reviewer or auditor.")]


def _fail(message: str, code: int = 2) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    return typer.Exit(code)


def _settings(data_dir: Path | None) -> Settings:
    from clientregistry.errors import ConfigError
    from clientregistry.settings import default_data_dir, load_settings

    try:
        return load_settings(data_dir if data_dir is not None else default_data_dir())
    except ConfigError as error:
        _err.print(f"[bold red]error:[/] {error.source}")
        for problem in error.problems:
            _err.print(f"  - {problem}", highlight=False, markup=False)
        raise typer.Exit(2) from None


@contextmanager
def _session(data_dir: Path | None) -> Iterator[Session]:
    """A write transaction on the registry's database; user errors end the command."""
    from clientregistry.security import users
    from clientregistry.store.db import create_engine_for, session_factory, transaction
    from clientregistry.store.errors import StoreError

    settings = _settings(data_dir)
    engine = create_engine_for(settings.database)
    try:
        with transaction(session_factory(engine)) as session:
            yield session
    except users.UserError as error:
        raise _fail(error.message) from None
    except StoreError as error:
        raise _fail(f"database: {error}") from None
    finally:
        engine.dispose()


def _agent() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _audit(
    session: Session, event_type: str, action: AuditAction, detail: Mapping[str, object]
) -> None:
    from clientregistry.registry.links import record_action

    record_action(
        session,
        agent=_agent(),
        source_address=None,
        event_type=event_type,
        action=action,
        entity=None,
        detail=dict(detail),
    )


def read_password() -> str:
    """The new password: prompted twice on a terminal, else the first line of stdin."""
    from clientregistry.security import users

    if sys.stdin is not None and sys.stdin.isatty():
        password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        line = sys.stdin.readline() if sys.stdin is not None else ""
        password = line.rstrip("\r\n")
    try:
        return users.check_password(password)
    except users.UserError as error:
        raise _fail(error.message) from None


@users_app.command("add")
def add(username: UsernameArgument, role: RoleOption, data_dir: DataDirOption = None) -> None:
    """Add an account; its password is asked for (or read from standard input)."""
    from clientregistry.security import users
    from clientregistry.store.enums import AuditAction

    _check_username(username)
    password = read_password()
    with _session(data_dir) as session:
        users.add_user(session, username, password, role.value)
        detail = {"username": username, "role": role.value}
        _audit(session, "user-add", AuditAction.CREATE, detail)
    _out.print(f"added {username!r} ({role.value})")


def _check_username(username: str) -> None:
    """Refuse a bad username before asking for a password."""
    from clientregistry.security import users

    try:
        users.check_username(username)
    except users.UserError as error:
        raise _fail(error.message) from None


@users_app.command("list")
def list_accounts(data_dir: DataDirOption = None) -> None:
    """List the accounts."""
    from clientregistry.security import users

    with _session(data_dir) as session:
        accounts = users.list_users(session)
    table = Table("username", "role", "status", "created")
    for account in accounts:
        table.add_row(
            account.username,
            account.role.value,
            "disabled" if account.disabled else "enabled",
            account.created_at.strftime("%Y-%m-%d %H:%M UTC"),
        )
    _out.print(table)


@users_app.command("disable")
def disable(
    username: UsernameArgument,
    data_dir: DataDirOption = None,
    enable: Annotated[bool, typer.Option("--enable", help="Enable the account again.")] = False,
) -> None:
    """Disable an account (and end its sessions), or enable it with --enable."""
    from clientregistry.security import users
    from clientregistry.store.enums import AuditAction

    with _session(data_dir) as session:
        users.set_disabled(session, username, not enable)
        detail = {"username": username, "disabled": not enable}
        _audit(session, "user-change", AuditAction.UPDATE, detail)
    _out.print(f"{'enabled' if enable else 'disabled'} {username!r}")


@users_app.command("set-password")
def set_password(username: UsernameArgument, data_dir: DataDirOption = None) -> None:
    """Set an account's password (asked for, or read from standard input); ends its
    sessions."""
    from clientregistry.security import users
    from clientregistry.store.enums import AuditAction

    password = read_password()
    with _session(data_dir) as session:
        users.set_password(session, username, password)
        detail = {"username": username, "password_changed": True}
        _audit(session, "user-change", AuditAction.UPDATE, detail)
    _out.print(f"set the password of {username!r}")


@users_app.command("set-role")
def set_role(
    username: UsernameArgument,
    role: Annotated[RoleName, typer.Argument(help="admin, reviewer or auditor.")],
    data_dir: DataDirOption = None,
) -> None:
    """Change an account's role."""
    from clientregistry.security import users
    from clientregistry.store.enums import AuditAction

    with _session(data_dir) as session:
        before = users.require_user(session, username).role
        users.set_role(session, username, role.value)
        detail = {"username": username, "before": before.value, "after": role.value}
        _audit(session, "user-change", AuditAction.UPDATE, detail)
    _out.print(f"{username!r} is now {role.value}")
