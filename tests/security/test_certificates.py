"""Tests of the certificate authority, client certificates, revocation (CRL + JSON), .p12 files
and the checks of ``verify_client_certificate``, on real certificates in a temporary folder."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from clientregistry.errors import ClientRegistryError
from clientregistry.security.authority import CertificateAuthority
from clientregistry.security.certificates import (
    CertificateError,
    CertificateRefused,
    create_ca,
    issue_client_cert,
    issue_server_cert,
    load_certificate,
    read_certificate,
    verify_client_certificate,
    write_key,
    write_p12,
    write_pem,
)
from clientregistry.security.tls import ssl_server_context

UTC = dt.UTC
CA = tuple[ec.EllipticCurvePrivateKey, x509.Certificate]


def now() -> dt.datetime:
    return dt.datetime.now(UTC)


def ec_public_key(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def authority(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path / "certs", ["cr.example.org", "10.1.2.3"])


@pytest.fixture(scope="module")
def ca() -> CA:
    return create_ca()


def refusal(cert: object, ca_cert: x509.Certificate, revoked: set[int] | None = None) -> str:
    with pytest.raises(CertificateRefused) as info:
        verify_client_certificate(cert, ca_cert, revoked or set())  # type: ignore[arg-type]
    assert str(info.value)
    return info.value.reason


# --- building blocks ----------------------------------------------------------------------------


def test_ca_is_a_self_signed_authority(
    ca: CA,
) -> None:
    _, cert = ca
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "clientregistry CA"
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    cert.verify_directly_issued_by(cert)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=3650)


def test_client_cert_names_the_system_and_allows_client_auth(
    ca: CA,
) -> None:
    key, cert = issue_client_cert(*ca, "openmrs", days=30)
    assert cert.subject.rfc4514_string() == "CN=openmrs"
    assert cert.issuer == ca[1].subject
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.public_key() == key.public_key()
    assert isinstance(key.curve, ec.SECP256R1)
    assert abs(cert.not_valid_after_utc - (now() + dt.timedelta(days=30))) < dt.timedelta(hours=1)
    cert.verify_directly_issued_by(ca[1])
    _, other = issue_client_cert(*ca, "openmrs")
    assert other.serial_number != cert.serial_number


def test_validity_must_be_positive(ca: CA) -> None:
    with pytest.raises(ValueError, match="at least one day"):
        issue_client_cert(*ca, "openmrs", days=0)
    with pytest.raises(ValueError, match="at least one day"):
        create_ca(days=-1)


@pytest.mark.parametrize("name", ["", "../evil", "a/b", "-x", "white space", "x" * 65, "lims-key"])
def test_bad_system_names_are_refused(ca: CA, name: str) -> None:
    with pytest.raises(CertificateError, match="invalid system name"):
        issue_client_cert(*ca, name)


def test_server_cert_lists_names_and_addresses(
    ca: CA,
) -> None:
    _, cert = issue_server_cert(*ca, ["LocalHost", "cr.example.org", "192.168.0.9"], ["::1"])
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "cr.example.org"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("192.168.0.9"),
        ipaddress.ip_address("::1"),
    ]
    assert cert.subject.rfc4514_string() == "CN=localhost"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    with pytest.raises(ValueError, match="host name"):
        issue_server_cert(*ca, [], [])


def test_write_files_and_permissions(tmp_path: Path, ca: CA) -> None:
    key, cert = issue_client_cert(*ca, "dhis2")
    write_key(tmp_path / "k.pem", key)
    write_pem(tmp_path / "c.pem", cert)
    assert mode(tmp_path / "k.pem") == 0o600
    assert mode(tmp_path / "c.pem") == 0o644
    loaded = serialization.load_pem_private_key((tmp_path / "k.pem").read_bytes(), None)
    assert loaded.public_key() == key.public_key()
    assert read_certificate(tmp_path / "c.pem") == cert
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pem", "k.pem"]  # no temp files


@pytest.mark.parametrize("password", [b"s3cret-p12", None])
def test_p12_loads_back(
    tmp_path: Path,
    ca: CA,
    password: bytes | None,
) -> None:
    key, cert = issue_client_cert(*ca, "lims")
    path = tmp_path / "lims.p12"
    write_p12(path, key, cert, ca[1], password)
    assert mode(path) == 0o600
    loaded_key, loaded_cert, extra = pkcs12.load_key_and_certificates(path.read_bytes(), password)
    assert loaded_cert == cert
    assert extra == [ca[1]]
    assert loaded_key is not None and loaded_key.public_key() == key.public_key()
    bundle = pkcs12.load_pkcs12(path.read_bytes(), password)
    assert bundle.cert is not None and bundle.cert.friendly_name == b"lims"
    if password is not None:
        with pytest.raises(ValueError):
            pkcs12.load_key_and_certificates(path.read_bytes(), b"wrong")


def test_load_certificate_accepts_pem_der_and_objects(
    ca: CA,
) -> None:
    cert = ca[1]
    pem = cert.public_bytes(serialization.Encoding.PEM)
    der = cert.public_bytes(serialization.Encoding.DER)
    assert load_certificate(pem) == load_certificate(pem.decode()) == load_certificate(der) == cert
    assert load_certificate(cert) is cert


# --- verify_client_certificate ------------------------------------------------------------------


def test_verified_identity(ca: CA) -> None:
    _, cert = issue_client_cert(*ca, "openmrs")
    der = cert.public_bytes(serialization.Encoding.DER)
    for form in (cert, der, cert.public_bytes(serialization.Encoding.PEM)):
        identity = verify_client_certificate(form, ca[1], set())
        assert identity.system == "openmrs"
        assert identity.serial == cert.serial_number
        assert identity.not_after == cert.not_valid_after_utc
        assert identity.fingerprint == cert.fingerprint(hashes.SHA256()).hex()


def test_refused_when_malformed(ca: CA) -> None:
    assert refusal(b"not a certificate", ca[1]) == "malformed"
    assert refusal("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----", ca[1]) == (
        "malformed"
    )


def test_refused_when_issued_by_another_ca(
    ca: CA,
) -> None:
    other = create_ca("another CA")
    assert refusal(issue_client_cert(*other, "openmrs")[1], ca[1]) == "untrusted"
    # same CA name, other key: the signature decides
    twin = create_ca()
    assert twin[1].subject == ca[1].subject
    assert refusal(issue_client_cert(*twin, "openmrs")[1], ca[1]) == "untrusted"


def test_refused_when_expired_or_not_yet_valid(
    ca: CA,
) -> None:
    past = now() - dt.timedelta(days=10)
    _, expired = issue_client_cert(*ca, "openmrs", days=5, not_before=past)
    assert refusal(expired, ca[1]) == "expired"
    _, future = issue_client_cert(*ca, "openmrs", not_before=now() + dt.timedelta(days=1))
    assert refusal(future, ca[1]) == "not_yet_valid"
    _, cert = issue_client_cert(*ca, "openmrs", days=5)
    late = cert.not_valid_after_utc + dt.timedelta(seconds=1)
    with pytest.raises(CertificateRefused, match="expired"):
        verify_client_certificate(cert, ca[1], set(), now=late)
    naive_early = (cert.not_valid_before_utc - dt.timedelta(seconds=1)).replace(tzinfo=None)
    with pytest.raises(CertificateRefused, match="not valid before"):
        verify_client_certificate(cert, ca[1], set(), now=naive_early)
    assert verify_client_certificate(cert, ca[1], set(), now=late - dt.timedelta(days=1))


def test_refused_when_revoked(ca: CA) -> None:
    _, cert = issue_client_cert(*ca, "lims")
    assert refusal(cert, ca[1], {cert.serial_number}) == "revoked"
    assert verify_client_certificate(cert, ca[1], {cert.serial_number + 1}).system == "lims"


def _custom_cert(
    ca: CA,
    subject: x509.Name,
    usages: list[x509.ObjectIdentifier] | None,
) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca[1].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - dt.timedelta(hours=1))
        .not_valid_after(now() + dt.timedelta(days=1))
    )
    if usages is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return builder.sign(ca[0], hashes.SHA256())


def test_refused_without_common_name(
    ca: CA,
) -> None:
    no_cn = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "openmrs")])
    assert refusal(_custom_cert(ca, no_cn, [ExtendedKeyUsageOID.CLIENT_AUTH]), ca[1]) == (
        "no_common_name"
    )
    blank = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, " ")])
    assert refusal(_custom_cert(ca, blank, [ExtendedKeyUsageOID.CLIENT_AUTH]), ca[1]) == (
        "no_common_name"
    )


def test_refused_when_not_a_client_auth_certificate(
    ca: CA,
) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "openmrs")])
    assert refusal(_custom_cert(ca, name, None), ca[1]) == "not_client_auth"
    assert refusal(_custom_cert(ca, name, [ExtendedKeyUsageOID.CODE_SIGNING]), ca[1]) == (
        "not_client_auth"
    )
    _, server = issue_server_cert(*ca, ["localhost"], [])
    assert refusal(server, ca[1]) == "not_client_auth"
    assert refusal(ca[1], ca[1]) == "not_client_auth"  # the CA signs itself: still no client


def test_opencr_expired_foreign_certificate_is_refused(reference_dir: Path, ca: CA) -> None:
    folder = reference_dir / "opencr" / "certificates"
    if not folder.is_dir():
        pytest.skip(f"OpenCR's sample certificates not found at {folder}")
    opencr = read_certificate(folder / "openmrs_cert.pem")
    assert opencr.not_valid_after_utc < now()
    assert refusal(opencr, ca[1]) == "untrusted"
    # against its own CA (the self-signed server certificate) it is refused as expired
    opencr_ca = read_certificate(folder / "server_cert.pem")
    assert refusal(opencr, opencr_ca) == "expired"


def test_refusal_is_a_client_registry_error() -> None:
    assert issubclass(CertificateRefused, ClientRegistryError)
    assert issubclass(CertificateError, ClientRegistryError)


# --- CertificateAuthority -------------------------------------------------------------------------


def test_create_lays_out_the_certs_directory(authority: CertificateAuthority) -> None:
    d = authority.certs_dir
    for name in ("ca.pem", "server.pem", "crl.pem", "revoked.json"):
        assert mode(d / name) == 0o644, name
    for name in ("ca-key.pem", "server-key.pem"):
        assert mode(d / name) == 0o600, name
    assert (d / "clients").is_dir()
    server = read_certificate(d / "server.pem")
    server.verify_directly_issued_by(authority.cert)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "cr.example.org"]
    assert {str(a) for a in san.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1",
        "::1",
        "10.1.2.3",
    }
    crl = x509.load_pem_x509_crl((d / "crl.pem").read_bytes())
    assert crl.is_signature_valid(ec_public_key(authority.cert))
    assert len(crl) == 0
    assert authority.revoked_serials() == frozenset()
    assert authority.clients() == []


def test_create_refuses_to_overwrite(authority: CertificateAuthority) -> None:
    before = (authority.certs_dir / "ca.pem").read_bytes()
    with pytest.raises(CertificateError, match="refusing to overwrite"):
        CertificateAuthority.create(authority.certs_dir)
    assert (authority.certs_dir / "ca.pem").read_bytes() == before


def test_load(authority: CertificateAuthority, tmp_path: Path) -> None:
    assert CertificateAuthority.load(authority.certs_dir).cert == authority.cert
    with pytest.raises(CertificateError, match="clientregistry init"):
        CertificateAuthority.load(tmp_path / "nowhere")


def test_issue_client_writes_pem_key_and_p12(authority: CertificateAuthority) -> None:
    issued = authority.issue_client("openmrs", days=90, p12_password=b"pw")
    clients = authority.certs_dir / "clients"
    assert issued.cert_path == clients / "openmrs.pem"
    assert issued.key_path == clients / "openmrs-key.pem"
    assert issued.p12_path == clients / "openmrs.p12"
    assert mode(issued.key_path) == 0o600 and mode(issued.p12_path) == 0o600
    cert = read_certificate(issued.cert_path)
    assert cert.serial_number == issued.serial
    identity = verify_client_certificate(cert, authority.cert, authority.revoked_serials())
    assert identity.system == "openmrs"
    key, p12_cert, cas = pkcs12.load_key_and_certificates(issued.p12_path.read_bytes(), b"pw")
    assert p12_cert == cert and cas == [authority.cert]
    assert key is not None and key.public_key() == cert.public_key()
    authority.issue_client("dhis2.v2")
    (issued.cert_path.parent / "not a system.pem").write_text("stray file")
    assert [c.system for c in authority.clients()] == ["dhis2.v2", "openmrs"]
    assert authority.client("lims") is None


def test_issue_refuses_while_a_valid_certificate_exists(authority: CertificateAuthority) -> None:
    first = authority.issue_client("lims")
    with pytest.raises(CertificateError, match="revoke it first"):
        authority.issue_client("lims")
    assert authority.revoke("lims") == first.serial
    second = authority.issue_client("lims")
    assert second.serial != first.serial
    assert authority.is_revoked(first.serial) and not authority.is_revoked(second.serial)


def test_an_expired_certificate_can_be_replaced(authority: CertificateAuthority) -> None:
    past = now() - dt.timedelta(days=30)
    authority.issue_client("lims", days=1, not_before=past)
    assert authority.issue_client("lims").not_after > now()


def test_revoke_updates_crl_and_json(authority: CertificateAuthority) -> None:
    issued = authority.issue_client("lims")
    other = authority.issue_client("dhis2")
    assert authority.revoke("lims") == issued.serial
    crl = x509.load_pem_x509_crl(authority.crl_path.read_bytes())
    assert crl.is_signature_valid(ec_public_key(authority.cert))
    assert crl.issuer == authority.cert.subject
    assert crl.get_revoked_certificate_by_serial_number(issued.serial) is not None
    assert crl.get_revoked_certificate_by_serial_number(other.serial) is None
    assert crl.next_update_utc is not None and crl.next_update_utc > now()
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number == 2
    record = json.loads((authority.certs_dir / "revoked.json").read_text())
    assert [(e["system"], int(e["serial"], 16)) for e in record["revoked"]] == [
        ("lims", issued.serial)
    ]
    # seen by another process loading the same directory
    fresh = CertificateAuthority.load(authority.certs_dir)
    assert fresh.revoked_serials() == {issued.serial}
    assert fresh.is_revoked(issued.serial) and not fresh.is_revoked(other.serial)
    with pytest.raises(CertificateRefused, match="revoked"):
        verify_client_certificate(
            issued.cert_path.read_bytes(), fresh.cert, fresh.revoked_serials()
        )


def test_revoke_is_idempotent_and_checks_the_name(authority: CertificateAuthority) -> None:
    authority.issue_client("lims")
    serial = authority.revoke("lims")
    crl_before = authority.crl_path.read_bytes()
    assert authority.revoke("lims") == serial
    assert authority.crl_path.read_bytes() == crl_before
    with pytest.raises(CertificateError, match="no certificate for system 'openmrs'"):
        authority.revoke("openmrs")
    with pytest.raises(CertificateError, match="invalid system name"):
        authority.revoke("../ca")


def test_refresh_crl_keeps_entries(authority: CertificateAuthority) -> None:
    serial = authority.issue_client("lims").serial
    authority.revoke("lims")
    authority.crl_path.unlink()
    authority.refresh_crl()
    crl = x509.load_pem_x509_crl(authority.crl_path.read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 3


def test_server_context_needs_the_files(tmp_path: Path) -> None:
    with pytest.raises(CertificateError, match="missing"):
        ssl_server_context(tmp_path)
