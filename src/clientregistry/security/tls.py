"""TLS contexts for mutual TLS: the server's (optional client certificate, checked against the
CA and the CRL at the handshake), a client's, and ``peer_identity`` to read the verified client
system from a connection.

Both sides speak TLS 1.2 and 1.3 only (:func:`harden`). TLS 1.2 is limited to Mozilla's
"intermediate" cipher suites minus the finite-field DHE ones: ECDHE key exchange (forward
secrecy) with AES-GCM or ChaCha20-Poly1305 (authenticated encryption), for ECDSA (the
registry's own certificates) and RSA server keys. TLS 1.3 has only strong suites, OpenSSL's
defaults. Compression and client-initiated renegotiation are off. ``tests/security/
test_tls_scan.py`` scans a running server with sslyze against Mozilla's intermediate profile.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Collection
from pathlib import Path

from cryptography import x509

from clientregistry.security.authority import CA_CERT, CRL_FILE, SERVER_CERT, SERVER_KEY
from clientregistry.security.certificates import (
    CertificateError,
    ClientIdentity,
    verify_client_certificate,
)

log = logging.getLogger(__name__)

_reloads = [0]
"""How many times this process was asked to load its certificates anew (SIGHUP)."""


def request_reload() -> None:
    """Make every server context of this process load the server certificate, key, CA and
    CRL anew at its next handshake (``clientregistry serve`` calls it on SIGHUP)."""
    _reloads[0] += 1


TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
"""The TLS 1.2 cipher suites offered and accepted (OpenSSL names)."""


def harden(context: ssl.SSLContext) -> ssl.SSLContext:
    """Limit ``context`` to TLS 1.2-1.3 with :data:`TLS12_CIPHERS`, without compression or
    renegotiation; returns it."""
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    return context


def ssl_server_context(certs_dir: Path, *, reload_crl: bool = True) -> ssl.SSLContext:
    """A TLS 1.2-1.3 server context (:func:`harden`) with the server certificate, asking for an
    optional client certificate that must chain to the CA and not be in the CRL.

    With ``reload_crl``, each handshake checks crl.pem's modification time and, when it changed
    (``certs revoke`` in another process), switches to a context built from the files anew, so a
    revocation is refused at the handshake without a restart; and after :func:`request_reload`
    (SIGHUP) it does the same, taking a renewed server certificate. A set of files that does
    not load (half written, a key that does not fit) leaves the last good context in use."""
    certs_dir = Path(certs_dir)
    context = _build_server_context(certs_dir)
    if not reload_crl:
        return context
    crl = certs_dir / CRL_FILE
    current: list[tuple[tuple[int, int], int, ssl.SSLContext]] = [
        (_stamp(crl), _reloads[0], context)
    ]

    def switch(connection: ssl.SSLObject, _server_name: str | None, _ctx: ssl.SSLContext) -> None:
        stamp, reloads, latest = current[0]
        try:
            now = _stamp(crl)
            if now != stamp or reloads != _reloads[0]:
                asked = reloads != _reloads[0]
                reloads = _reloads[0]  # one attempt per SIGHUP
                current[0] = (stamp, reloads, latest)
                latest = _build_server_context(certs_dir)
                current[0] = (now, reloads, latest)
                if asked:
                    log.info("TLS: loaded the certificates in %s anew", certs_dir)
        except (OSError, ssl.SSLError, CertificateError) as error:
            # mid-rewrite or broken: keep the last good context
            log.warning("TLS: cannot load the certificates in %s: %s", certs_dir, error)
        if latest is not context:
            connection.context = latest

    context.sni_callback = switch
    return context


def _stamp(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_mtime_ns, info.st_ino


def _build_server_context(certs_dir: Path) -> ssl.SSLContext:
    for name in (CA_CERT, SERVER_CERT, SERVER_KEY, CRL_FILE):
        if not (certs_dir / name).is_file():
            raise CertificateError(f"{certs_dir / name} is missing; run `clientregistry init`")
    context = harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    context.load_cert_chain(certs_dir / SERVER_CERT, certs_dir / SERVER_KEY)
    context.load_verify_locations(cafile=certs_dir / CA_CERT)
    context.load_verify_locations(cafile=certs_dir / CRL_FILE)
    context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF | ssl.VERIFY_X509_STRICT
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


def ssl_client_context(
    ca_file: Path, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext:
    """A TLS 1.2-1.3 client context trusting ``ca_file``, presenting ``cert_file`` if given."""
    context = harden(ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file)))
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context


def peer_identity(
    connection: ssl.SSLSocket | ssl.SSLObject,
    ca_cert: x509.Certificate,
    revoked_serials: Collection[int],
) -> ClientIdentity | None:
    """The verified identity of a TLS peer, or None when it sent no certificate. Raises
    ``CertificateRefused`` when its certificate does not pass ``verify_client_certificate``."""
    der = connection.getpeercert(binary_form=True)
    if not der:
        return None
    return verify_client_certificate(der, ca_cert, revoked_serials)
