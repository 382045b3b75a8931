"""``clientregistry systems list | grant | revoke-permission``: the client systems and what
each may do.

The permissions: ``submit`` (send Patients), ``read-identifiers`` (learn CRUIDs and
identifiers: PIXm, ``$match``), ``read-demographics`` (read and search demographics). A
change is checked (a known system, a known permission), audited with the operating-system
user as agent, and reaches a running server (every worker) within a second.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from clientregistry.cli_common import DataDirOption, audit, load, out, registry_transaction

systems_app = typer.Typer(
    help="Client systems: list them, grant and revoke permissions.", no_args_is_help=True
)

NameArgument = Annotated[str, typer.Argument(help="The client system's name.")]
PermissionArgument = Annotated[
    str,
    typer.Argument(help="submit, read-identifiers or read-demographics."),
]


@systems_app.command("list")
def list_systems(data_dir: DataDirOption = None) -> None:
    """List the client systems: identifier system, permissions, certificate."""
    from clientregistry.registry.systems import stored_systems
    from clientregistry.security.authority import CertificateAuthority
    from clientregistry.security.certificates import utcnow

    settings = load(data_dir)
    with registry_transaction(settings) as session:
        found = stored_systems(session)
    authority = CertificateAuthority.load(settings.certs_dir)
    table = Table("system", "name", "internal identifier system", "permissions", "certificate")
    for system in found:
        certificate = authority.client(system.config.name)
        if system.revoked:
            status = "revoked"
        elif certificate is None:
            status = "none"
        elif certificate.not_after <= utcnow():
            status = "expired"
        else:
            status = f"valid until {certificate.not_after:%Y-%m-%d}"
        table.add_row(
            system.config.name,
            system.config.display_name,
            system.config.internal_id_system,
            ", ".join(system.config.permissions) or "(none)",
            status,
        )
    out.print(table)


@systems_app.command("grant")
def grant(
    name: NameArgument, permission: PermissionArgument, data_dir: DataDirOption = None
) -> None:
    """Give a system a permission."""
    from clientregistry.registry import systems
    from clientregistry.store.enums import AuditAction

    settings = load(data_dir)
    with registry_transaction(settings) as session:
        before = systems.grant(session, name, permission)
        after = systems.stored_permissions(session, name)
        detail = {"system": name, "before": list(before), "after": list(after)}
        audit(session, "system-grant", AuditAction.UPDATE, detail)
    if permission in before:
        out.print(f"{name!r} already held {permission!r}", highlight=False)
    else:
        out.print(f"{name!r} may now: {', '.join(after)}", highlight=False)


@systems_app.command("revoke-permission")
def revoke_permission(
    name: NameArgument, permission: PermissionArgument, data_dir: DataDirOption = None
) -> None:
    """Take a permission from a system."""
    from clientregistry.registry import systems
    from clientregistry.store.enums import AuditAction

    settings = load(data_dir)
    with registry_transaction(settings) as session:
        before = systems.revoke_permission(session, name, permission)
        after = systems.stored_permissions(session, name)
        detail = {"system": name, "before": list(before), "after": list(after)}
        audit(session, "system-revoke-permission", AuditAction.UPDATE, detail)
    out.print(f"{name!r} may now: {', '.join(after) or 'nothing'}", highlight=False)
