"""Real TLS handshakes against ``ssl_server_context``: a one-connection echo server in a thread on
127.0.0.1, and clients with a good, revoked, expired, foreign (OpenCR's) or no certificate."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clientregistry.security.authority import CertificateAuthority
from clientregistry.security.certificates import CertificateRefused, verify_client_certificate
from clientregistry.security.tls import peer_identity, ssl_client_context, ssl_server_context

TIMEOUT = 10.0


@dataclass
class Outcome:
    """What each side saw of one connection."""

    peer: dict[str, Any] | None = None
    peer_der: bytes | None = None
    server_error: BaseException | None = None
    reply: bytes | None = None
    client_error: BaseException | None = None

    @property
    def refused_because(self) -> str:
        """The server's certificate-verification message; the client got no reply."""
        assert isinstance(self.server_error, ssl.SSLCertVerificationError), self.server_error
        assert not self.reply, self.reply
        return str(self.server_error.verify_message)


def _common_name(peer: dict[str, Any] | None) -> str:
    if not peer:
        return "anonymous"
    return str(next(v for rdn in peer["subject"] for k, v in rdn if k == "commonName"))


def connect(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext, host: str = "localhost"
) -> Outcome:
    """One connection: the server echoes ``hello <CN>`` after the handshake."""
    outcome = Outcome()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                conn.settimeout(TIMEOUT)
                with server_context.wrap_socket(conn, server_side=True) as tls:
                    outcome.peer = tls.getpeercert()
                    outcome.peer_der = tls.getpeercert(binary_form=True)
                    tls.recv(64)
                    tls.sendall(b"hello " + _common_name(outcome.peer).encode())
            except (ssl.SSLError, OSError) as exc:
                outcome.server_error = exc

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with (
                socket.create_connection(listener.getsockname(), timeout=TIMEOUT) as raw,
                client_context.wrap_socket(raw, server_hostname=host) as tls,
            ):
                tls.sendall(b"ping")
                outcome.reply = tls.recv(64)
        except (ssl.SSLError, OSError) as exc:  # TLS 1.3: the refusal arrives after the handshake
            outcome.client_error = exc
        thread.join(TIMEOUT)
        assert not thread.is_alive()
    return outcome


@pytest.fixture
def authority(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path / "certs", ["cr.example.org"])


def client(authority: CertificateAuthority, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    return ssl_client_context(authority.certs_dir / "ca.pem", cert, key)


def test_server_context_settings(authority: CertificateAuthority) -> None:
    context = ssl_server_context(authority.certs_dir)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_OPTIONAL
    assert context.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_a_client_certificate_from_our_ca_is_accepted(
    authority: CertificateAuthority, host: str
) -> None:
    issued = authority.issue_client("openmrs")
    outcome = connect(
        ssl_server_context(authority.certs_dir),
        client(authority, issued.cert_path, issued.key_path),
        host,
    )
    assert outcome.server_error is None and outcome.client_error is None
    assert outcome.reply == b"hello openmrs"
    assert outcome.peer is not None and outcome.peer["subject"] == ((("commonName", "openmrs"),),)
    assert outcome.peer_der is not None
    identity = verify_client_certificate(
        outcome.peer_der, authority.cert, authority.revoked_serials()
    )
    assert (identity.system, identity.serial) == ("openmrs", issued.serial)


def test_no_client_certificate_is_allowed(authority: CertificateAuthority) -> None:
    outcome = connect(ssl_server_context(authority.certs_dir), client(authority, None, None))
    assert outcome.server_error is None and outcome.client_error is None
    assert outcome.reply == b"hello anonymous"
    assert outcome.peer is None and outcome.peer_der is None


def test_the_client_checks_the_server_name(authority: CertificateAuthority) -> None:
    context = ssl_server_context(authority.certs_dir)
    assert connect(context, client(authority, None, None), "cr.example.org").reply
    outcome = connect(context, client(authority, None, None), "elsewhere.example.org")
    assert isinstance(outcome.client_error, ssl.SSLCertVerificationError)
    assert "Hostname mismatch" in str(outcome.client_error.verify_message)


def test_a_revoked_certificate_is_refused(authority: CertificateAuthority) -> None:
    issued = authority.issue_client("lims")
    authority.revoke("lims")
    outcome = connect(
        ssl_server_context(authority.certs_dir),
        client(authority, issued.cert_path, issued.key_path),
    )
    assert outcome.refused_because == "certificate revoked"


def test_a_revocation_applies_to_a_running_server(authority: CertificateAuthority) -> None:
    issued = authority.issue_client("lims")
    server = ssl_server_context(authority.certs_dir)
    lims = client(authority, issued.cert_path, issued.key_path)
    assert connect(server, lims).reply == b"hello lims"
    CertificateAuthority.load(authority.certs_dir).revoke("lims")  # e.g. `certs revoke lims`
    assert connect(server, lims).refused_because == "certificate revoked"


def test_without_crl_reloading_the_second_check_refuses(authority: CertificateAuthority) -> None:
    issued = authority.issue_client("lims")
    server = ssl_server_context(authority.certs_dir, reload_crl=False)
    authority.revoke("lims")
    outcome = connect(server, client(authority, issued.cert_path, issued.key_path))
    assert outcome.reply == b"hello lims"  # this context still holds the old CRL ...
    assert outcome.peer_der is not None
    with pytest.raises(CertificateRefused) as info:  # ... which is why the server checks again
        verify_client_certificate(outcome.peer_der, authority.cert, authority.revoked_serials())
    assert info.value.reason == "revoked"


def test_an_expired_certificate_is_refused(authority: CertificateAuthority) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    issued = authority.issue_client("dhis2", days=5, not_before=past)
    outcome = connect(
        ssl_server_context(authority.certs_dir),
        client(authority, issued.cert_path, issued.key_path),
    )
    assert outcome.refused_because == "certificate has expired"


def test_a_not_yet_valid_certificate_is_refused(authority: CertificateAuthority) -> None:
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    issued = authority.issue_client("dhis2", not_before=soon)
    outcome = connect(
        ssl_server_context(authority.certs_dir),
        client(authority, issued.cert_path, issued.key_path),
    )
    assert outcome.refused_because == "certificate is not yet valid"


def test_a_certificate_from_another_ca_is_refused(
    authority: CertificateAuthority, tmp_path: Path
) -> None:
    other = CertificateAuthority.create(tmp_path / "other")  # same CA name, other key
    issued = other.issue_client("openmrs")
    outcome = connect(
        ssl_server_context(authority.certs_dir),
        client(authority, issued.cert_path, issued.key_path),
    )
    assert outcome.refused_because == "unable to get local issuer certificate"


def test_the_server_certificate_is_no_client_certificate(authority: CertificateAuthority) -> None:
    d = authority.certs_dir
    outcome = connect(
        ssl_server_context(d), client(authority, d / "server.pem", d / "server-key.pem")
    )
    assert outcome.refused_because == "unsuitable certificate purpose"


@pytest.mark.parametrize("system", ["openmrs", "dhis2", "lims"])
def test_opencr_sample_certificates_are_refused(
    authority: CertificateAuthority, reference_dir: Path, system: str
) -> None:
    """OpenCR's samples: issued by another CA (openmrs' has also expired)."""
    folder = reference_dir / "opencr" / "certificates"
    if not folder.is_dir():
        pytest.skip(f"OpenCR's sample certificates not found at {folder}")
    outcome = connect(
        ssl_server_context(authority.certs_dir),
        client(authority, folder / f"{system}_cert.pem", folder / f"{system}_key.pem"),
    )
    assert outcome.refused_because == "unable to get local issuer certificate"


def test_peer_identity(authority: CertificateAuthority) -> None:
    issued = authority.issue_client("openmrs")
    server = ssl_server_context(authority.certs_dir)
    seen: list[object] = []

    def serve(listener: socket.socket) -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            with server.wrap_socket(conn, server_side=True) as tls:
                seen.append(peer_identity(tls, authority.cert, authority.revoked_serials()))
                tls.sendall(b"ok")

    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)
        thread = threading.Thread(target=serve, args=(listener,), daemon=True)
        thread.start()
        for cert, key in ((issued.cert_path, issued.key_path), (None, None)):
            with (
                socket.create_connection(listener.getsockname(), timeout=TIMEOUT) as raw,
                client(authority, cert, key).wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                assert tls.recv(8) == b"ok"
        thread.join(TIMEOUT)
    first, second = seen
    assert getattr(first, "system", None) == "openmrs"
    assert second is None


def test_asyncio_server_reads_the_identity_and_applies_revocations(
    authority: CertificateAuthority,
) -> None:
    """The way a server built on asyncio sees it: ``get_extra_info("ssl_object")``."""
    issued = authority.issue_client("dhis2")
    lims = client(authority, issued.cert_path, issued.key_path)
    seen: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        identity = peer_identity(
            writer.get_extra_info("ssl_object"), authority.cert, authority.revoked_serials()
        )
        seen.append(identity.system if identity else "anonymous")
        writer.write(b"ok")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def ask(context: ssl.SSLContext, port: int) -> bytes:
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname="localhost"
            )
        except (ssl.SSLError, OSError):
            return b""
        try:
            return await reader.read(8)
        except (ssl.SSLError, OSError):
            return b""
        finally:
            writer.close()
            with contextlib.suppress(ssl.SSLError, OSError):
                await writer.wait_closed()

    async def scenario() -> list[bytes]:
        server = await asyncio.start_server(
            handle, "127.0.0.1", 0, ssl=ssl_server_context(authority.certs_dir)
        )
        port = server.sockets[0].getsockname()[1]
        async with server:
            replies = [await ask(lims, port), await ask(client(authority, None, None), port)]
            authority.revoke("dhis2")
            replies.append(await ask(lims, port))
        return replies

    assert asyncio.run(asyncio.wait_for(scenario(), TIMEOUT)) == [b"ok", b"ok", b""]
    assert seen == ["dhis2", "anonymous"]
