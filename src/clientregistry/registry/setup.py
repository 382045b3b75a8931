"""Creating a registry installation (``clientregistry init``) and checking one before it
serves (``clientregistry serve``).

``init`` makes the data directory with its configuration, certificate authority, server
certificate and client certificates for the demo systems, and the database with its schema,
the demo systems and an admin user whose generated password is shown once. The database is
the one ``--database-url`` names, else ``CR_DATABASE_URL``, else SQLite in the data
directory: the same rule as every other command, so ``init`` and ``serve`` with the same
environment use the same database. It refuses, changing nothing, a data directory that is not
empty, a database it cannot reach and a database that already holds a registry; when
something fails halfway it removes what it made.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, inspect, select
from sqlalchemy.engine import make_url

from clientregistry.errors import ClientRegistryError
from clientregistry.registry import systems
from clientregistry.registry.rules_in_force import read_in_force
from clientregistry.registry.stored_features import bring_up_to_date
from clientregistry.security.authority import CertificateAuthority, ClientCertificate
from clientregistry.security.passwords import generate_password, hash_password
from clientregistry.settings import (
    CONFIG_FILE,
    ClientSystemConfig,
    Settings,
    load_settings,
    render_config,
)
from clientregistry.store.db import (
    create_engine_for,
    current_revision,
    migrate,
    session_factory,
    sqlite_file,
    transaction,
    translate_errors,
)
from clientregistry.store.enums import Role
from clientregistry.store.errors import StoreError
from clientregistry.store.models import ClientSystem, SourceRecord, User

DEMO_SYSTEMS = (
    ClientSystemConfig("openmrs", "OpenMRS", "http://clientregistry.org/openmrs"),
    ClientSystemConfig("dhis2", "DHIS2", "http://clientregistry.org/dhis2"),
    ClientSystemConfig(
        "lims", "Lab Information Management System", "http://clientregistry.org/lims"
    ),
)


class DataDirExists(ClientRegistryError):
    """``init`` was pointed at a directory that already holds something."""


class DatabaseNotReady(ClientRegistryError):
    """The database cannot be used as asked: unreachable, already holding a registry (for
    ``init``) or holding none (for ``serve``)."""


@dataclass(frozen=True, slots=True)
class Installation:
    data_dir: Path
    admin_password: str
    p12_password: str
    clients: list[ClientCertificate]
    database: str
    """The database URL, its password hidden."""


def shown(url: str) -> str:
    """A database URL fit to print (password hidden)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is refused elsewhere, by name
        return "(not a database URL)"


def _registry_contents(url: str) -> tuple[str | None, int]:
    """The schema revision of the database at ``url`` and how many users, systems and records
    it holds (``(None, 0)`` for an empty database); :class:`DatabaseNotReady` when it cannot
    be reached."""
    try:
        engine = create_engine_for(url)
    except StoreError as error:
        raise DatabaseNotReady(f"{shown(url)}: {error}") from None
    try:
        revision = current_revision(engine)
        if revision is None:
            return None, 0
        with translate_errors(), engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
            count = 0
            for model in (User, ClientSystem, SourceRecord):
                if model.__tablename__ in tables:
                    count += connection.scalar(select(func.count()).select_from(model)) or 0
        return revision, count
    except StoreError as error:
        raise DatabaseNotReady(f"cannot use the database {shown(url)}: {error}") from None
    finally:
        engine.dispose()


def _check_new_database(url: str) -> None:
    path = sqlite_file(url)
    if path is not None and not path.exists():
        return  # a new SQLite file
    revision, held = _registry_contents(url)
    if held:
        raise DatabaseNotReady(
            f"the database {shown(url)} already holds a registry (schema {revision}); init "
            "makes new installations only: give it an empty database. Nothing was created"
        )


def init_data_dir(
    data_dir: Path,
    *,
    hostnames: list[str],
    database_url: str = "",
    port: int = 3000,
    environ: Mapping[str, str] | None = None,
) -> Installation:
    """Create everything a registry needs in ``data_dir`` (which must be absent or empty) and
    in its database (``database_url``, else ``environ``'s ``CR_DATABASE_URL``, else SQLite in
    ``data_dir``; which must be empty). ``environ`` (none by default) overrides settings as
    ``CR_…`` variables do for every command."""
    env = dict(environ or {})
    if data_dir.exists() and any(data_dir.iterdir()):
        raise DataDirExists(f"{data_dir} already exists and is not empty; nothing was changed")
    if database_url:
        env["CR_DATABASE_URL"] = database_url
    url = env.get("CR_DATABASE_URL") or f"sqlite:///{data_dir / 'registry.db'}"
    _check_new_database(url)
    created = not data_dir.exists()
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _create(data_dir, hostnames, database_url, port, env)
    except BaseException:
        if created:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            for child in data_dir.iterdir():
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise


def _create(
    data_dir: Path, hostnames: list[str], database_url: str, port: int, env: Mapping[str, str]
) -> Installation:
    (data_dir / CONFIG_FILE).write_text(
        render_config(hostnames=hostnames, systems=[], port=port, database_url=database_url),
        encoding="utf-8",
    )
    settings = load_settings(data_dir, environ=env)
    ips = [h for h in hostnames if h.replace(".", "").isdigit()]
    names = [h for h in hostnames if h not in ips]
    authority = CertificateAuthority.create(settings.certs_dir, names, ips)
    p12_password = generate_password()
    clients = [
        authority.issue_client(system.name, p12_password=p12_password.encode())
        for system in DEMO_SYSTEMS
    ]
    engine = create_engine_for(settings.database)
    try:
        migrate(engine)
        admin_password = generate_password()
        with transaction(session_factory(engine)) as session:
            session.add(
                User(
                    username="admin",
                    password_hash=hash_password(admin_password),
                    role=Role.ADMIN,
                    created_at=datetime.now(UTC),
                )
            )
            for system, client in zip(DEMO_SYSTEMS, clients, strict=True):
                systems.add_system(session, system, cert_serial=f"{client.serial:x}")
    finally:
        engine.dispose()
    return Installation(data_dir, admin_password, p12_password, clients, shown(settings.database))


def prepare_to_serve(settings: Settings) -> list[str]:
    """Check that the database holds a registry, bring its schema (and stored features:
    :mod:`~clientregistry.registry.stored_features`) up to date and import the configured
    systems it lacks; returns warnings to show (systems that differ from
    ``config.toml``, no accounts). :class:`DatabaseNotReady` for a database without a
    registry (``init`` was never run on it, or with another ``CR_DATABASE_URL``)."""
    url = settings.database
    path = sqlite_file(url)
    revision = None if path is not None and not path.exists() else _registry_contents(url)[0]
    if revision is None:
        raise DatabaseNotReady(
            f"the database {shown(url)} holds no registry: run `clientregistry init` first, "
            "with the same --data-dir and CR_DATABASE_URL as `serve`"
        )
    engine = create_engine_for(url)
    try:
        migrate(engine)
        sessions = session_factory(engine)
        directory, warnings = systems.open_directory(sessions, settings.systems.values(), seed=True)
        with transaction(sessions, write=False) as session:
            users = session.scalar(select(func.count()).select_from(User)) or 0
            # (the systems of the database, whose own record ids are never compared)
            in_force = read_in_force(session, dataclasses.replace(settings, systems=directory))
        # (before the workers start: they open the registry without migrating)
        derived = bring_up_to_date(sessions, in_force.build())
        if derived is not None:
            warnings.append(
                f"derived the features and blocking keys of {derived} records again (they "
                "followed the rules of an earlier release or configuration)"
            )
    finally:
        engine.dispose()
    if not users:
        warnings.append(
            "the database has no accounts: add one with `clientregistry users add NAME "
            "--role admin`"
        )
    return warnings


def add_system_to_config(data_dir: Path, system: ClientSystemConfig) -> None:
    """Append a client system to ``config.toml`` (imported into the database, when it lacks
    the system, as the registry opens)."""
    path = data_dir / CONFIG_FILE
    text = path.read_text(encoding="utf-8")
    if f"[systems.{system.name}]" in text:
        return
    perms = ", ".join(f'"{p}"' for p in system.permissions)
    text += (
        f"\n[systems.{system.name}]\n"
        f'display_name = "{system.display_name}"\n'
        f'internal_id_system = "{system.internal_id_system}"\n'
        f"permissions = [{perms}]\n"
    )
    path.write_text(text, encoding="utf-8")
