"""Who may call: no certificate, an unknown system, expired, foreign and revoked certificates.

This module revokes lims' certificate, so it runs its own servers.
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from clientregistry.security.authority import CertificateAuthority
from clientregistry.security.certificates import issue_client_cert, write_key, write_pem

HEADERS = {"Content-Type": "application/fhir+json"}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, launch_server):
    return launch_server(request.param)


def causes(error: BaseException | None) -> list[BaseException]:
    chain = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def assert_refused_at_tls(server, cert: Path, key: Path) -> None:
    """A connection presenting ``cert`` gets no HTTP answer: with TLS 1.2 the handshake itself
    fails (an SSL error); with TLS 1.3 (the default) the server drops the connection before
    answering the first request. The server itself keeps serving."""
    with pytest.raises(httpx.ConnectError) as info:
        server.new_client(cert=cert, key=key, tls12=True).get("/fhir/Patient/x")
    assert any(isinstance(e, ssl.SSLError) for e in causes(info.value)), info.value
    for method in ("GET", "POST"):
        client = server.new_client(cert=cert, key=key)
        with pytest.raises(httpx.TransportError):
            client.request(method, "/fhir/Patient", content=b"{}", headers=HEADERS)
    assert server.process.poll() is None
    assert server.new_client("openmrs").get("/fhir/Patient/x").status_code == 404


def test_a_valid_certificate_is_accepted_over_tls_1_2_and_1_3(server, fhir) -> None:
    """The control for the refusals below: the same clients with a good certificate."""
    cert, key = server.cert_files("openmrs")
    for tls12 in (True, False):
        client = server.new_client(cert=cert, key=key, tls12=tls12)
        fhir.outcome(client.get("/fhir/Patient/x"), 404, "not-found")


def test_no_client_certificate_is_401(server, fhir) -> None:
    client = server.new_client()
    for method, url in (("GET", "/fhir/Patient/x"), ("POST", "/fhir/Patient"), ("POST", "/fhir")):
        response = client.request(method, url, content=b"{}", headers=HEADERS)
        fhir.outcome(response, 401, "login")
        assert response.headers["WWW-Authenticate"] == "Mutual-TLS"


def test_certificate_of_an_unconfigured_system_is_403(server, fhir) -> None:
    issued = CertificateAuthority.load(server.certs_dir).issue_client("stranger")
    client = server.new_client(cert=issued.cert_path, key=issued.key_path)
    body = fhir.outcome(client.get("/fhir/Patient/x"), 403, "forbidden")
    assert "stranger" in body["issue"][0]["diagnostics"]
    patient = fhir.patient("openmrs")
    response = client.post("/fhir/Patient", content=json.dumps(patient), headers=HEADERS)
    fhir.outcome(response, 403, "forbidden")
    assert server.submit("openmrs", patient).status_code == 201  # nothing was stored


def test_expired_certificate_is_refused(server, tmp_path: Path) -> None:
    """A certificate of a configured system (CN openmrs), signed by the registry's CA, that
    expired yesterday."""
    authority = CertificateAuthority.load(server.certs_dir)
    ca_key = serialization.load_pem_private_key(
        (server.certs_dir / "ca-key.pem").read_bytes(), None
    )
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    key, cert = issue_client_cert(ca_key, authority.cert, "openmrs", days=2, not_before=past)
    assert cert.not_valid_after_utc < dt.datetime.now(dt.UTC)
    write_pem(tmp_path / "expired.pem", cert)
    write_key(tmp_path / "expired-key.pem", key)
    assert_refused_at_tls(server, tmp_path / "expired.pem", tmp_path / "expired-key.pem")


def test_expired_certificate_issued_by_the_authority_is_refused(server) -> None:
    authority = CertificateAuthority.load(server.certs_dir)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    issued = authority.issue_client("lapsed", days=1, not_before=past)
    assert_refused_at_tls(server, issued.cert_path, issued.key_path)


@pytest.mark.parametrize("system", ["openmrs", "dhis2", "lims"])
def test_opencr_certificates_from_another_ca_are_refused(
    server, reference_dir: Path, system: str
) -> None:
    folder = reference_dir / "opencr" / "certificates"
    cert, key = folder / f"{system}_cert.pem", folder / f"{system}_key.pem"
    if not (cert.is_file() and key.is_file()):
        pytest.skip(f"OpenCR's sample certificates not found in {folder}")
    assert_refused_at_tls(server, cert, key)


def test_revoked_certificate_is_refused(server, fhir) -> None:
    # kept alive while `certs revoke` runs (7 s on a loaded machine; httpx drops an idle
    # connection after 5 s by default, and a new one would be refused at the handshake)
    kept_alive = httpx.Client(
        base_url=server.base_url,
        verify=server.ssl_context(*server.cert_files("lims")),
        timeout=60,
        limits=httpx.Limits(keepalive_expiry=300),
    )
    before = kept_alive.post(
        "/fhir/Patient", content=json.dumps(fhir.patient("lims")), headers=HEADERS
    )
    assert before.status_code == 201, before.text

    result = server.cli("certs", "revoke", "lims")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "revoked" in result.stdout

    # a new connection with lims' certificate is refused at the TLS layer ...
    assert_refused_at_tls(server, *server.cert_files("lims"))
    # ... and a connection opened before the revocation is refused by the application
    after = kept_alive.post(
        "/fhir/Patient", content=json.dumps(fhir.patient("lims")), headers=HEADERS
    )
    fhir.outcome(after, 401, "login")
    # the other systems are not affected
    with_new_connection = server.new_client("dhis2")
    response = with_new_connection.post(
        "/fhir/Patient", content=json.dumps(fhir.patient("dhis2")), headers=HEADERS
    )
    assert response.status_code == 201, response.text
    kept_alive.close()
