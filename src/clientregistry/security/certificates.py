"""X.509 building blocks for mutual TLS: the registry's certificate authority, the server
certificate and one client certificate per point-of-service system (its CN names the system),
EC P-256 keys, PEM/.p12 files, and ``verify_client_certificate``, the checks a client certificate
must pass. ``authority`` keeps them in a certs directory, ``tls`` builds the SSL contexts.

Private keys, and .p12 files (which hold one), are written with 0600 permissions; every file is
written atomically (temporary file + rename).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import ipaddress
import os
import re
import tempfile
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
)
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from clientregistry.errors import ClientRegistryError

CLOCK_SKEW = dt.timedelta(minutes=5)
"""Certificates and CRLs start this long before "now", so that a peer whose clock is a little
behind does not see them as not yet valid."""

SYSTEM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A client system's name: it is the certificate CN and part of file names."""

ISSUER_KEY_TYPES = (
    ec.EllipticCurvePrivateKey,
    rsa.RSAPrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)
"""Private keys that can sign certificates (for ``isinstance``). Not DSA: cryptography
deprecates it (no CA should still use it), and the registry's own CA key is EC P-256."""


class CertificateError(ClientRegistryError):
    """The certificate authority cannot do what was asked (files exist, unknown system, ...)."""


class CertificateRefused(ClientRegistryError):
    """A client certificate is not accepted. ``reason`` is one of ``malformed``, ``untrusted``
    (not issued by this registry's CA), ``expired``, ``not_yet_valid``, ``revoked``,
    ``no_common_name`` and ``not_client_auth``; the message explains it to a person."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """Who a verified client certificate belongs to."""

    system: str
    serial: int
    not_after: dt.datetime
    fingerprint: str
    """SHA-256 of the DER certificate, lowercase hex."""


# --- building certificates --------------------------------------------------------------------


def generate_key() -> ec.EllipticCurvePrivateKey:
    """A new EC P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def signing_hash(key: CertificateIssuerPrivateKeyTypes) -> hashes.SHA256 | None:
    """The digest to sign with: none for Ed25519/Ed448, SHA-256 otherwise."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


def _cn(value: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, value)])


def _validity(days: int, not_before: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
    if days < 1:
        raise ValueError(f"a certificate must be valid for at least one day, not {days}")
    start = not_before if not_before is not None else utcnow() - CLOCK_SKEW
    return start, start + dt.timedelta(days=days)


def check_system_name(system: str) -> str:
    """``system`` if it can name a client system (letters, digits, ``.``, ``_``, ``-``)."""
    if not SYSTEM_NAME.fullmatch(system) or system.endswith("-key"):
        raise CertificateError(
            f"invalid system name {system!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit and not ending in '-key'"
        )
    return system


def _leaf_builder(
    ca_key: CertificateIssuerPrivateKeyTypes,
    ca_cert: x509.Certificate,
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    validity: tuple[dt.datetime, dt.datetime],
    usage: x509.ObjectIdentifier,
) -> x509.CertificateBuilder:
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def create_ca(
    common_name: str = "clientregistry CA", days: int = 3650
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new self-signed certificate authority: its key and certificate."""
    key = generate_key()
    start, end = _validity(days, None)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_cn(common_name))
        .issuer_name(_cn(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue_server_cert(
    ca_key: CertificateIssuerPrivateKeyTypes,
    ca_cert: x509.Certificate,
    hostnames: list[str],
    ips: list[str],
    days: int = 825,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A server certificate whose subjectAltName lists ``hostnames`` and ``ips`` (host names that
    are IP addresses are moved to ``ips``); its CN is the first host name."""
    names, addresses = _split_hosts(hostnames, ips)
    if not names and not addresses:
        raise ValueError("a server certificate needs at least one host name or IP address")
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans += [x509.IPAddress(a) for a in addresses]
    key = generate_key()
    subject = _cn(names[0] if names else str(addresses[0]))
    builder = _leaf_builder(
        ca_key, ca_cert, subject, key, _validity(days, None), ExtendedKeyUsageOID.SERVER_AUTH
    )
    builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, signing_hash(ca_key))


def _split_hosts(
    hostnames: Iterable[str], ips: Iterable[str]
) -> tuple[list[str], list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    names: list[str] = []
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for host in hostnames:
        try:
            addresses.append(ipaddress.ip_address(host))
        except ValueError:
            if host and host.lower() not in names:
                names.append(host.lower())
    for ip in ips:
        addresses.append(ipaddress.ip_address(ip))  # ValueError names a bad address
    return names, list(dict.fromkeys(addresses))


def issue_client_cert(
    ca_key: CertificateIssuerPrivateKeyTypes,
    ca_cert: x509.Certificate,
    system: str,
    days: int = 365,
    *,
    not_before: dt.datetime | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A client certificate for ``system`` (CN=system, extendedKeyUsage clientAuth), valid
    ``days`` days from ``not_before`` (default: now)."""
    check_system_name(system)
    key = generate_key()
    validity = _validity(days, not_before)
    builder = _leaf_builder(
        ca_key, ca_cert, _cn(system), key, validity, ExtendedKeyUsageOID.CLIENT_AUTH
    )
    return key, builder.sign(ca_key, signing_hash(ca_key))


# --- files ------------------------------------------------------------------------------------


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` through a temporary file created with 0600 permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_pem(path: Path, cert: x509.Certificate) -> None:
    """Write a certificate as PEM (0644)."""
    write_atomic(Path(path), cert.public_bytes(serialization.Encoding.PEM), 0o644)


def write_key(path: Path, key: PrivateKeyTypes) -> None:
    """Write a private key as unencrypted PKCS#8 PEM, readable by its owner only (0600)."""
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomic(Path(path), data, 0o600)


def write_p12(
    path: Path,
    key: pkcs12.PKCS12PrivateKeyTypes,
    cert: x509.Certificate,
    ca_cert: x509.Certificate,
    password: bytes | None,
) -> None:
    """Write key, certificate and CA certificate as PKCS#12 (0600), encrypted with ``password``
    (AES-256, PBKDF2) or not encrypted when it is None."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if password is None
        else serialization.BestAvailableEncryption(password)
    )
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = str(names[0].value).encode() if names else None
    data = pkcs12.serialize_key_and_certificates(name, key, cert, [ca_cert], encryption)
    write_atomic(Path(path), data, 0o600)


def load_certificate(data: x509.Certificate | bytes | str) -> x509.Certificate:
    """A certificate from PEM (bytes or str) or DER; ValueError when it is not one."""
    if isinstance(data, x509.Certificate):
        return data
    raw = data.encode() if isinstance(data, str) else data
    if b"-----BEGIN" in raw:
        return x509.load_pem_x509_certificate(raw)
    return x509.load_der_x509_certificate(raw)


def read_certificate(path: Path) -> x509.Certificate:
    """The PEM certificate in ``path``."""
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


# --- checking a client certificate ------------------------------------------------------------


def verify_client_certificate(
    certificate: x509.Certificate | bytes | str,
    ca_cert: x509.Certificate,
    revoked_serials: Collection[int],
    now: dt.datetime | None = None,
) -> ClientIdentity:
    """The identity in a client certificate (PEM or DER), after checking that this registry's CA
    issued it, that it is valid ``now``, not revoked, names a system and allows client
    authentication. Raises ``CertificateRefused`` otherwise.

    What cannot change for a given certificate (its signature, CN, key usage) is checked once
    and remembered (:func:`_issued_identity`); validity dates and revocation every time."""
    cert, identity = _issued_identity(certificate, ca_cert)
    who = cert.subject.rfc4514_string() or "(empty subject)"
    now = utcnow() if now is None else now
    now = now if now.tzinfo is not None else now.replace(tzinfo=dt.UTC)
    if now < cert.not_valid_before_utc:
        raise CertificateRefused(
            "not_yet_valid", f"certificate {who} is not valid before {cert.not_valid_before_utc}"
        )
    if now > cert.not_valid_after_utc:
        raise CertificateRefused(
            "expired", f"certificate {who} expired on {cert.not_valid_after_utc}"
        )
    if cert.serial_number in revoked_serials:
        raise CertificateRefused(
            "revoked", f"certificate {who} (serial {cert.serial_number:x}) has been revoked"
        )
    if isinstance(identity, CertificateRefused):
        raise CertificateRefused(identity.reason, str(identity))  # a fresh one: no old traceback
    return identity


@functools.lru_cache(maxsize=1024)
def _issued_identity(
    certificate: x509.Certificate | bytes | str, ca_cert: x509.Certificate
) -> tuple[x509.Certificate, ClientIdentity | CertificateRefused]:
    """The parsed certificate, once ``ca_cert`` is known to have issued it (else the refusal is
    raised, and so not remembered), and its identity, or why it cannot be a client's
    (returned, for the caller to raise after the date and revocation checks)."""
    try:
        cert = load_certificate(certificate)
    except ValueError as exc:
        raise CertificateRefused("malformed", f"not a readable certificate: {exc}") from exc
    who = cert.subject.rfc4514_string() or "(empty subject)"
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CertificateRefused(
            "untrusted",
            f"certificate {who} (issuer {cert.issuer.rfc4514_string()}) was not issued by this "
            f"registry's CA {ca_cert.subject.rfc4514_string()}",
        ) from exc
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    system = str(names[0].value).strip() if names else ""
    if not system:
        return cert, CertificateRefused(
            "no_common_name", f"certificate {who} has no common name (CN)"
        )
    if not _is_client_auth(cert):
        return cert, CertificateRefused(
            "not_client_auth", f"certificate {who} is not a client-authentication certificate"
        )
    return cert, ClientIdentity(
        system=system,
        serial=cert.serial_number,
        not_after=cert.not_valid_after_utc,
        fingerprint=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
    )


def _is_client_auth(cert: x509.Certificate) -> bool:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if constraints.ca:
            return False
    except x509.ExtensionNotFound:
        pass
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.CLIENT_AUTH in usages
