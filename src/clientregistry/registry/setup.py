"""Creating a registry installation: ``clientregistry init``.

Makes the data directory with its configuration, database, certificate authority, server
certificate, client certificates for the demo systems and an admin user whose generated
password is shown once. Refuses to touch an existing data directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from clientregistry.errors import ClientRegistryError
from clientregistry.security.authority import CertificateAuthority, ClientCertificate
from clientregistry.security.passwords import generate_password, hash_password
from clientregistry.settings import (
    CONFIG_FILE,
    ClientSystemConfig,
    load_settings,
    render_config,
)
from clientregistry.store.db import create_engine_for, migrate, session_factory
from clientregistry.store.enums import Role
from clientregistry.store.models import User

DEMO_SYSTEMS = (
    ClientSystemConfig("openmrs", "OpenMRS", "http://clientregistry.org/openmrs"),
    ClientSystemConfig("dhis2", "DHIS2", "http://clientregistry.org/dhis2"),
    ClientSystemConfig(
        "lims", "Lab Information Management System", "http://clientregistry.org/lims"
    ),
)


class DataDirExists(ClientRegistryError):
    """``init`` was pointed at a directory that already holds something."""


@dataclass(frozen=True, slots=True)
class Installation:
    data_dir: Path
    admin_password: str
    p12_password: str
    clients: list[ClientCertificate]


def init_data_dir(
    data_dir: Path, *, hostnames: list[str], database_url: str = "", port: int = 3000
) -> Installation:
    """Create everything a registry needs in ``data_dir`` (which must be absent or empty)."""
    if data_dir.exists() and any(data_dir.iterdir()):
        raise DataDirExists(f"{data_dir} already exists and is not empty; nothing was changed")
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / CONFIG_FILE).write_text(
        render_config(
            hostnames=hostnames, systems=list(DEMO_SYSTEMS), port=port, database_url=database_url
        ),
        encoding="utf-8",
    )
    settings = load_settings(data_dir, environ={})
    ips = [h for h in hostnames if h.replace(".", "").isdigit()]
    names = [h for h in hostnames if h not in ips]
    authority = CertificateAuthority.create(settings.certs_dir, names, ips)
    p12_password = generate_password()
    clients = [
        authority.issue_client(system.name, p12_password=p12_password.encode())
        for system in DEMO_SYSTEMS
    ]
    engine = create_engine_for(settings.database)
    migrate(engine)
    admin_password = generate_password()
    with session_factory(engine)() as session, session.begin():
        session.add(
            User(
                username="admin",
                password_hash=hash_password(admin_password),
                role=Role.ADMIN,
                created_at=datetime.now(UTC),
            )
        )
    engine.dispose()
    return Installation(data_dir, admin_password, p12_password, clients)


def add_system_to_config(data_dir: Path, system: ClientSystemConfig) -> None:
    """Append a client system to ``config.toml`` (``certs issue`` for a new system)."""
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
