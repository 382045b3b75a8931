"""A TLS scanner (sslyze) against the running server: Mozilla's "intermediate" profile (TLS 1.2
and 1.3 only, forward-secret AEAD suites, no known TLS vulnerability), HSTS and the other
security headers on what the server answers."""

from __future__ import annotations

from typing import Any

import pytest
from sslyze import (
    Scanner,
    ServerNetworkLocation,
    ServerScanRequest,
    ServerScanResult,
    ServerScanStatusEnum,
)
from sslyze.mozilla_tls_profile.tls_config_checker import (
    SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER,
    MozillaTlsConfiguration,
    ServerNotCompliantWithTlsConfiguration,
    TlsConfigurationEnum,
    check_server_against_tls_configuration,
)
from sslyze.plugins.certificate_info.implementation import CertificateInfoExtraArgument
from sslyze.plugins.scan_commands import ScanCommand
from sslyze.scanner.models import ScanCommandsExtraArguments
from sslyze.server_setting import ServerNetworkConfiguration

from clientregistry.api.security_headers import HSTS_MAX_AGE
from clientregistry.security.tls import TLS12_CIPHERS

pytestmark = pytest.mark.filterwarnings(
    # a certificate of sslyze's bundled trust stores, read to validate ours
    "ignore:Parsed a serial number which wasn't positive"
)
SQLITE_ONLY = pytest.mark.parametrize("registry_server", ["sqlite"], indirect=True)
ACCEPTED_ISSUES = {
    "maximum_certificate_lifespan": "Mozilla's profile wants public web certificates renewed "
    "yearly; the registry's own CA issues its server certificate for 825 days (an operations "
    "choice, not a TLS setting)",
    "tls_curves": "X448 and secp521r1 (P-521) are offered beside X25519, P-256 and P-384: "
    "stronger, only slower; Python's ssl module (3.11) can set one curve or OpenSSL's list, "
    "and one curve would refuse clients that lack it",
}
STRONG_CURVES = {"X25519", "prime256v1", "secp256r1", "secp384r1", "X448", "secp521r1"}


@pytest.fixture(scope="module")
def scan(registry_server: Any) -> ServerScanResult:
    server = registry_server
    location = ServerNetworkLocation("localhost", server.port, ip_address="127.0.0.1")
    extra = ScanCommandsExtraArguments(
        certificate_info=CertificateInfoExtraArgument(custom_ca_file=server.certs_dir / "ca.pem")
    )
    scan_request = ServerScanRequest(
        server_location=location,
        network_configuration=ServerNetworkConfiguration("localhost"),
        scan_commands={*SCAN_COMMANDS_NEEDED_BY_MOZILLA_CHECKER, ScanCommand.HTTP_HEADERS},
        scan_commands_extra_arguments=extra,
    )
    scanner = Scanner()
    scanner.queue_scans([scan_request])
    (result,) = list(scanner.get_results())
    assert result.scan_status == ServerScanStatusEnum.COMPLETED, result.connectivity_error_trace
    return result


def _accepted(scan: ServerScanResult, version: str) -> set[str]:
    attempt: Any = getattr(scan.scan_result, f"{version}_cipher_suites")
    return {suite.cipher_suite.openssl_name for suite in attempt.result.accepted_cipher_suites}


@SQLITE_ONLY
def test_the_server_meets_mozillas_intermediate_profile(scan: ServerScanResult) -> None:
    config = MozillaTlsConfiguration.get(TlsConfigurationEnum.MOZILLA_INTERMEDIATE)
    try:
        check_server_against_tls_configuration(scan, config)
    except ServerNotCompliantWithTlsConfiguration as error:
        issues = {k: v for k, v in error.issues.items() if k not in ACCEPTED_ISSUES}
        assert not issues, issues
    curves: Any = scan.scan_result.elliptic_curves.result  # type: ignore[union-attr]
    supported = {curve.name for curve in curves.supported_curves}
    assert supported and supported <= STRONG_CURVES, supported


@SQLITE_ONLY
def test_only_tls_1_2_and_1_3_with_strong_suites(scan: ServerScanResult) -> None:
    for old in ("ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1"):
        assert _accepted(scan, old) == set(), old
    # the registry's certificate has an ECDSA key: the ECDSA half of the list
    ecdsa = {name for name in TLS12_CIPHERS.split(":") if "-ECDSA-" in name}
    assert _accepted(scan, "tls_1_2") == ecdsa
    tls13 = _accepted(scan, "tls_1_3")
    assert tls13 and tls13 <= {
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
    }
    result: Any = scan.scan_result
    assert result.tls_compression.result.supports_compression is False
    assert result.session_renegotiation.result.is_vulnerable_to_client_renegotiation_dos is False
    assert result.session_renegotiation.result.supports_secure_renegotiation is True
    assert result.heartbleed.result.is_vulnerable_to_heartbleed is False
    assert result.tls_fallback_scsv.result.supports_fallback_scsv is True


@SQLITE_ONLY
def test_hsts_and_the_security_headers(scan: ServerScanResult) -> None:
    result: Any = scan.scan_result
    headers = result.http_headers.result
    assert headers.strict_transport_security_header is not None, headers
    assert headers.strict_transport_security_header.max_age == HSTS_MAX_AGE
    assert headers.strict_transport_security_header.include_subdomains is True
