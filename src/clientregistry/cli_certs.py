"""``clientregistry certs issue | revoke``: client certificates of point-of-service systems.

Issuing a certificate for a new name registers the system in the database (with the default
permissions: submit and read identifiers); revoking one adds it to the revocation list and
marks the system. Both are audited, and a running server (every worker) acts on them within
a second, without a restart.
"""

from __future__ import annotations

from typing import Annotated

import typer

from clientregistry.cli_common import DataDirOption, audit, fail, load, out, registry_transaction

certs_app = typer.Typer(
    help="Client certificates of point-of-service systems.", no_args_is_help=True
)


@certs_app.command("issue")
def certs_issue(
    name: Annotated[str, typer.Argument(help="Client system name (the certificate's CN).")],
    data_dir: DataDirOption = None,
    days: Annotated[int, typer.Option("--days", min=1)] = 365,
    internal_id_system: Annotated[
        str | None,
        typer.Option(
            "--internal-id-system",
            help="The system's own identifier system URI (default: "
            "http://clientregistry.org/NAME); each system needs its own.",
        ),
    ] = None,
    display_name: Annotated[
        str | None, typer.Option("--display-name", help="A readable name (default: NAME).")
    ] = None,
) -> None:
    """Issue a client certificate for a (new) system and register the system."""
    from clientregistry.errors import ClientRegistryError
    from clientregistry.registry import systems
    from clientregistry.security.authority import CertificateAuthority
    from clientregistry.security.certificates import check_system_name
    from clientregistry.security.passwords import generate_password
    from clientregistry.settings import ClientSystemConfig
    from clientregistry.store.enums import AuditAction
    from clientregistry.store.models import ClientSystem

    settings = load(data_dir)
    try:
        check_system_name(name)
        authority = CertificateAuthority.load(settings.certs_dir)
    except ClientRegistryError as error:
        raise fail(str(error)) from None
    uri = internal_id_system or f"http://clientregistry.org/{name}"
    with registry_transaction(settings) as session:
        stored = session.get(ClientSystem, name)
        if stored is None:
            systems.check_new_system(session, name, uri)
        elif internal_id_system and internal_id_system != stored.internal_id_system:
            raise fail(
                f"{name!r} has the internal identifier system {stored.internal_id_system}, "
                "which its stored records use; it cannot change"
            )
        password = generate_password()
        try:
            issued = authority.issue_client(name, days, p12_password=password.encode())
        except ClientRegistryError as error:
            raise fail(str(error)) from None
        serial = f"{issued.serial:x}"
        if stored is None:
            system = ClientSystemConfig(name, display_name or name, uri)
            systems.add_system(session, system, cert_serial=serial)
            out.print(
                f"registered system {name!r} with internal id system {uri} and permissions "
                f"{', '.join(system.permissions)}",
                highlight=False,
            )
        else:
            systems.record_certificate(session, name, issued.serial, revoked=False)
        detail = {"system": name, "serial": serial, "new_system": stored is None}
        audit(session, "system-certificate-issue", AuditAction.CREATE, detail)
    out.print(f"certificate {issued.cert_path}", highlight=False)
    out.print(f"key         {issued.key_path}", highlight=False)
    out.print(f"p12         {issued.p12_path} (password: {password})", highlight=False)


@certs_app.command("revoke")
def certs_revoke(
    name: Annotated[str, typer.Argument(help="Client system name.")],
    data_dir: DataDirOption = None,
) -> None:
    """Revoke a system's client certificate; it is refused from then on."""
    from clientregistry.errors import ClientRegistryError
    from clientregistry.registry import systems
    from clientregistry.security.authority import CertificateAuthority
    from clientregistry.store.enums import AuditAction
    from clientregistry.store.models import ClientSystem

    settings = load(data_dir)
    with registry_transaction(settings) as session:
        try:
            serial = CertificateAuthority.load(settings.certs_dir).revoke(name)
        except ClientRegistryError as error:
            raise fail(str(error)) from None
        if session.get(ClientSystem, name) is not None:
            systems.record_certificate(session, name, serial, revoked=True)
        detail = {"system": name, "serial": f"{serial:x}"}
        audit(session, "system-certificate-revoke", AuditAction.UPDATE, detail)
    out.print(f"revoked the certificate of {name!r} (serial {serial:x})", highlight=False)


@certs_app.command("server")
def certs_server(
    data_dir: DataDirOption = None,
    hostname: Annotated[
        list[str] | None,
        typer.Option(
            "--hostname",
            help="Host name or IP the certificate is for (repeatable; default: the current "
            "certificate's).",
        ),
    ] = None,
    days: Annotated[int, typer.Option("--days", min=1)] = 825,
) -> None:
    """Renew the server's certificate (new key); `kill -HUP` the server to take it on."""
    from clientregistry.errors import ClientRegistryError
    from clientregistry.security.authority import CertificateAuthority

    settings = load(data_dir)
    hosts = list(hostname or [])
    ips = [h for h in hosts if h.replace(".", "").isdigit() or ":" in h]
    try:
        authority = CertificateAuthority.load(settings.certs_dir)
        cert = authority.renew_server([h for h in hosts if h not in ips], ips, days=days)
    except (ClientRegistryError, ValueError) as error:
        raise fail(str(error)) from None
    names = ", ".join(authority.server_names()[0] + authority.server_names()[1])
    out.print(
        f"renewed {settings.certs_dir / 'server.pem'} for {names}, valid until "
        f"{cert.not_valid_after_utc:%Y-%m-%d}; a running server takes it on SIGHUP",
        highlight=False,
    )
