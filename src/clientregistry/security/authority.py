"""The certificate authority of a certs directory: create it (CA, server certificate, empty
CRL), issue client certificates, revoke them (a CRL signed by the CA plus a JSON list).

Layout::

    ca.pem  ca-key.pem              the certificate authority
    server.pem  server-key.pem      the server; subjectAltName localhost, 127.0.0.1, ::1, hosts
    crl.pem  revoked.json           the revoked client certificates
    clients/<system>.pem  <system>-key.pem  <system>.p12
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

from clientregistry.security.certificates import (
    CLOCK_SKEW,
    ISSUER_KEY_TYPES,
    SYSTEM_NAME,
    CertificateError,
    check_system_name,
    create_ca,
    issue_client_cert,
    issue_server_cert,
    read_certificate,
    signing_hash,
    utcnow,
    write_atomic,
    write_key,
    write_p12,
    write_pem,
)

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
SERVER_CERT = "server.pem"
SERVER_KEY = "server-key.pem"
CRL_FILE = "crl.pem"
REVOKED_FILE = "revoked.json"
CLIENTS_DIR = "clients"

DEFAULT_HOSTNAMES: tuple[str, ...] = ("localhost",)
DEFAULT_IPS: tuple[str, ...] = ("127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """A client certificate in a certs directory and the files that hold it."""

    system: str
    serial: int
    not_after: dt.datetime
    cert_path: Path
    key_path: Path
    p12_path: Path


class CertificateAuthority:
    """The certificate authority kept in ``certs_dir`` (see the module docstring for the layout).
    Its private key is read only when it signs something."""

    def __init__(self, certs_dir: Path, cert: x509.Certificate) -> None:
        self.certs_dir = Path(certs_dir)
        self.cert = cert
        self._revoked_cache: tuple[tuple[int, int, int], frozenset[int]] | None = None

    @property
    def clients_dir(self) -> Path:
        return self.certs_dir / CLIENTS_DIR

    @property
    def crl_path(self) -> Path:
        return self.certs_dir / CRL_FILE

    @classmethod
    def create(
        cls,
        certs_dir: Path,
        hostnames: Iterable[str] = (),
        ips: Iterable[str] = (),
        *,
        common_name: str = "clientregistry CA",
        ca_days: int = 3650,
        server_days: int = 825,
    ) -> CertificateAuthority:
        """A new CA, server certificate (for localhost, 127.0.0.1, ::1 and ``hostnames``/``ips``)
        and empty CRL in ``certs_dir``; refuses to overwrite any of them."""
        certs_dir = Path(certs_dir)
        names = (CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY, CRL_FILE, REVOKED_FILE)
        existing = [str(certs_dir / n) for n in names if (certs_dir / n).exists()]
        if existing:
            raise CertificateError(f"refusing to overwrite {', '.join(existing)}")
        ca_key, ca_cert = create_ca(common_name, ca_days)
        server_key, server_cert = issue_server_cert(
            ca_key, ca_cert, [*DEFAULT_HOSTNAMES, *hostnames], [*DEFAULT_IPS, *ips], server_days
        )
        certs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        (certs_dir / CLIENTS_DIR).mkdir(mode=0o700, exist_ok=True)
        write_key(certs_dir / CA_KEY, ca_key)
        write_pem(certs_dir / CA_CERT, ca_cert)
        write_key(certs_dir / SERVER_KEY, server_key)
        write_pem(certs_dir / SERVER_CERT, server_cert)
        authority = cls(certs_dir, ca_cert)
        authority._write_revocations(1, [])
        return authority

    @classmethod
    def load(cls, certs_dir: Path) -> CertificateAuthority:
        """The CA in ``certs_dir``."""
        path = Path(certs_dir) / CA_CERT
        if not path.is_file():
            raise CertificateError(f"no certificate authority at {path}; run `clientregistry init`")
        return cls(Path(certs_dir), read_certificate(path))

    def server_names(self) -> tuple[list[str], list[str]]:
        """The host names and IP addresses the current server certificate is for."""
        cert = read_certificate(self.certs_dir / SERVER_CERT)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = sans.get_values_for_type(x509.DNSName)
        ips = [str(a) for a in sans.get_values_for_type(x509.IPAddress)]
        return names, ips

    def renew_server(
        self, hostnames: Iterable[str] = (), ips: Iterable[str] = (), *, days: int = 825
    ) -> x509.Certificate:
        """A new server key and certificate (for localhost, 127.0.0.1, ::1 and ``hostnames``/
        ``ips``; the current certificate's names when none are given), replacing the files:
        the key first, then the certificate, each atomically. A running server takes them on
        ``SIGHUP``."""
        names, addresses = list(hostnames), list(ips)
        if not names and not addresses:
            names, addresses = self.server_names()
        ca_key = self._key()
        names = [*dict.fromkeys([*DEFAULT_HOSTNAMES, *names])]
        addresses = [*dict.fromkeys([*DEFAULT_IPS, *addresses])]
        key, cert = issue_server_cert(ca_key, self.cert, names, addresses, days)
        write_key(self.certs_dir / SERVER_KEY, key)
        write_pem(self.certs_dir / SERVER_CERT, cert)
        return cert

    def _key(self) -> CertificateIssuerPrivateKeyTypes:
        key = serialization.load_pem_private_key((self.certs_dir / CA_KEY).read_bytes(), None)
        if not isinstance(key, ISSUER_KEY_TYPES):
            raise CertificateError(f"{self.certs_dir / CA_KEY}: this key type cannot sign")
        return key

    def _files(self, system: str) -> tuple[Path, Path, Path]:
        base = self.clients_dir / check_system_name(system)
        return Path(f"{base}.pem"), Path(f"{base}-key.pem"), Path(f"{base}.p12")

    def client(self, system: str) -> ClientCertificate | None:
        """The current certificate of ``system``, or None."""
        cert_path, key_path, p12_path = self._files(system)
        if not cert_path.is_file():
            return None
        cert = read_certificate(cert_path)
        return ClientCertificate(
            system, cert.serial_number, cert.not_valid_after_utc, cert_path, key_path, p12_path
        )

    def clients(self) -> list[ClientCertificate]:
        """Every client system's current certificate, by name."""
        if not self.clients_dir.is_dir():
            return []
        names = [p.name.removesuffix(".pem") for p in sorted(self.clients_dir.glob("*.pem"))]
        found = (self.client(n) for n in names if SYSTEM_NAME.fullmatch(n) and n[-4:] != "-key")
        return [c for c in found if c is not None]

    def issue_client(
        self,
        system: str,
        days: int = 365,
        *,
        p12_password: bytes | None = None,
        not_before: dt.datetime | None = None,
    ) -> ClientCertificate:
        """Issue a certificate for ``system`` (PEM cert + key, and .p12). Refuses while the
        system holds a certificate that is neither revoked nor expired."""
        current = self.client(system)
        if (
            current is not None
            and not self.is_revoked(current.serial)
            and current.not_after > utcnow()
        ):
            raise CertificateError(
                f"system {system!r} already has a valid certificate (serial {current.serial:x}); "
                "revoke it first"
            )
        ca_key = self._key()
        key, cert = issue_client_cert(ca_key, self.cert, system, days, not_before=not_before)
        cert_path, key_path, p12_path = self._files(system)
        write_key(key_path, key)
        write_p12(p12_path, key, cert, self.cert, p12_password)
        write_pem(cert_path, cert)
        return ClientCertificate(
            system, cert.serial_number, cert.not_valid_after_utc, cert_path, key_path, p12_path
        )

    def revoke(self, system: str) -> int:
        """Revoke the current certificate of ``system``; returns its serial number."""
        current = self.client(system)
        if current is None:
            raise CertificateError(f"no certificate for system {system!r}")
        number, entries = self._read_revocations()
        if current.serial not in {int(e["serial"], 16) for e in entries}:
            entries.append(
                {
                    "serial": f"{current.serial:x}",
                    "system": system,
                    "revoked_at": utcnow().isoformat(timespec="seconds"),
                }
            )
            self._write_revocations(number + 1, entries)
        return current.serial

    def refresh_crl(self) -> None:
        """Sign the CRL again (same entries, next number), e.g. when crl.pem was lost."""
        number, entries = self._read_revocations()
        self._write_revocations(number + 1, entries)

    def revoked_serials(self) -> frozenset[int]:
        """The serial numbers revoked so far (re-read when revoked.json changes)."""
        path = self.certs_dir / REVOKED_FILE
        try:
            info = path.stat()
        except FileNotFoundError:
            return frozenset()
        stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        if self._revoked_cache is None or self._revoked_cache[0] != stamp:
            _, entries = self._read_revocations()
            self._revoked_cache = (stamp, frozenset(int(e["serial"], 16) for e in entries))
        return self._revoked_cache[1]

    def is_revoked(self, serial: int) -> bool:
        return serial in self.revoked_serials()

    def _read_revocations(self) -> tuple[int, list[dict[str, Any]]]:
        path = self.certs_dir / REVOKED_FILE
        if not path.is_file():
            return 0, []
        data = json.loads(path.read_text(encoding="utf-8"))
        return int(data["crl_number"]), list(data["revoked"])

    def _write_revocations(self, number: int, entries: list[dict[str, Any]]) -> None:
        """Write revoked.json (the record) and then crl.pem (signed from it)."""
        document = {"crl_number": number, "revoked": entries}
        write_atomic(
            self.certs_dir / REVOKED_FILE, json.dumps(document, indent=2).encode() + b"\n", 0o644
        )
        ca_key = self._key()
        ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(utcnow() - CLOCK_SKEW)
            .next_update(self.cert.not_valid_after_utc)
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                critical=False,
            )
        )
        for entry in entries:
            revoked = (
                x509.RevokedCertificateBuilder()
                .serial_number(int(entry["serial"], 16))
                .revocation_date(dt.datetime.fromisoformat(entry["revoked_at"]))
                .build()
            )
            builder = builder.add_revoked_certificate(revoked)
        crl = builder.sign(ca_key, signing_hash(ca_key))
        write_atomic(self.crl_path, crl.public_bytes(serialization.Encoding.PEM), 0o644)
