"""Refused TLS handshakes leave a trace (issue 15): a log line and an audit row with the
peer's address and OpenSSL's reason, for a certificate from another CA, an expired one and a
revoked one, over TLS 1.2 (the handshake itself fails at the client) and 1.3 (the server
refuses after the client has finished).

This module revokes a certificate, so it runs its own servers.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from registry_servers import RegistryServer
from sqlalchemy import text

from clientregistry.security.authority import CertificateAuthority
from clientregistry.security.certificates import create_ca, issue_client_cert, write_key, write_pem

WAIT = 60.0


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, launch_server: Any) -> RegistryServer:
    launched: RegistryServer = launch_server(request.param)
    return launched


def _refusals(server: RegistryServer) -> list[dict[str, Any]]:
    engine = server.engine()
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT agent, outcome, source_address, detail, request_id FROM audit_event "
                    "WHERE event_type = 'tls-refused' ORDER BY id"
                )
            )
            return [
                {
                    "agent": row.agent,
                    "outcome": row.outcome,
                    "address": row.source_address,
                    "request_id": row.request_id,
                    "detail": row.detail
                    if isinstance(row.detail, dict)
                    else json.loads(row.detail),
                }
                for row in rows
            ]
    finally:
        engine.dispose()


def _connect(server: RegistryServer, cert: Path, key: Path, *, tls12: bool) -> None:
    with pytest.raises(httpx.TransportError):
        server.new_client(cert=cert, key=key, tls12=tls12).get("/fhir/Patient/x")


def _wait_for_refusals(server: RegistryServer, before: int, new: int) -> list[dict[str, Any]]:
    """The ``new`` refusals audited after the first ``before``, once each is in the audit
    table and logged with its id (rows are written off the event loop)."""
    deadline = time.monotonic() + WAIT
    while True:
        rows = _refusals(server)[before:]
        logged = [line for line in server.log().splitlines() if "TLS handshake from" in line]
        if len(rows) >= new and all(
            any(row["request_id"] in line and row["detail"]["reason"] in line for line in logged)
            for row in rows
        ):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError((rows, logged))
        time.sleep(0.2)


def _check(rows: list[dict[str, Any]], reason: str) -> None:
    for row in rows:
        assert row["agent"] == "unauthenticated"
        assert row["outcome"] == 4
        assert row["address"] == "127.0.0.1"
        assert reason in row["detail"]["reason"], row
        assert row["request_id"], row


@pytest.mark.parametrize("tls12", [True, False], ids=["tls1.2", "tls1.3"])
def test_a_certificate_from_another_ca_is_logged_and_audited(
    server: RegistryServer, tmp_path: Path, tls12: bool
) -> None:
    before = len(_refusals(server))
    other_key, other_ca = create_ca("another CA")
    key, cert = issue_client_cert(other_key, other_ca, "openmrs", days=30)
    write_pem(tmp_path / "other.pem", cert)
    write_key(tmp_path / "other-key.pem", key)
    _connect(server, tmp_path / "other.pem", tmp_path / "other-key.pem", tls12=tls12)
    rows = _wait_for_refusals(server, before, 1)
    _check(rows, "unable to get local issuer certificate")
    # the server goes on serving
    assert server.new_client("openmrs").get("/fhir/Patient/x").status_code == 404


@pytest.mark.parametrize("tls12", [True, False], ids=["tls1.2", "tls1.3"])
def test_an_expired_certificate_is_logged_and_audited(server: RegistryServer, tls12: bool) -> None:
    before = len(_refusals(server))
    authority = CertificateAuthority.load(server.certs_dir)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    issued = authority.issue_client(f"lapsed{int(tls12)}", days=1, not_before=past)
    _connect(server, issued.cert_path, issued.key_path, tls12=tls12)
    rows = _wait_for_refusals(server, before, 1)
    _check(rows, "certificate has expired")


def test_a_revoked_certificate_is_logged_and_audited(server: RegistryServer) -> None:
    before = len(_refusals(server))
    result = server.cli("certs", "revoke", "lims")
    assert result.returncode == 0, result.stdout + result.stderr
    for tls12 in (True, False):
        _connect(server, *server.cert_files("lims"), tls12=tls12)
    rows = _wait_for_refusals(server, before, 2)
    _check(rows, "certificate revoked")


def test_a_port_probe_is_not_audited_as_a_refusal(server: RegistryServer) -> None:
    """A TCP connection closed before any handshake (a load balancer's check) is no refusal."""
    import socket

    before = len(_refusals(server))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10):
        pass
    assert server.new_client("openmrs").get("/fhir/Patient/x").status_code == 404
    assert len(_refusals(server)) == before
