"""Behind a trusted proxy: a real nginx (``docs/nginx-mtls-proxy.conf``) does the mutual TLS and
names the client system in ``X-OpenHIM-ClientID``; the registry believes that header (and
``X-Forwarded-For``) only from the proxy's address and refuses it, audited, from anyone else.

nginx connects from 127.0.0.2 (``proxy_bind``); the tests' own clients connect from
127.0.0.1, so a direct request is a request from an untrusted address.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from nginx_front import PROXY_ADDRESS, NginxFront, nginx_front
from sqlalchemy import select

from clientregistry.security.authority import CertificateAuthority
from clientregistry.store.models import AuditEvent

HEADER = "X-OpenHIM-ClientID"
FHIR_JSON = "application/fhir+json"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def proxied(
    request: pytest.FixtureRequest,
    launch_server: Callable[..., Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Any, NginxFront]]:
    """A registry that trusts 127.0.0.2, and nginx in front of it."""
    server = launch_server(request.param, env={"CR_PROXY_TRUSTED_ADDRESSES": PROXY_ADDRESS})
    directory = tmp_path_factory.mktemp(f"nginx-{request.param}")
    with nginx_front(directory, server.port, server.certs_dir) as front:
        yield server, front


def _through(proxied: tuple[Any, NginxFront], system: str | None = None) -> httpx.Client:
    """A client of nginx, presenting ``system``'s certificate (or none)."""
    server, front = proxied
    cert, key = server.cert_files(system) if system else (None, None)
    return httpx.Client(base_url=front.base_url, verify=server.ssl_context(cert, key), timeout=30.0)


def _events(server: Any, **where: Any) -> list[AuditEvent]:
    engine = server.engine()
    try:
        with engine.connect() as connection:
            query = select(AuditEvent).filter_by(**where).order_by(AuditEvent.id)
            return [AuditEvent(**row._mapping) for row in connection.execute(query)]
    finally:
        engine.dispose()


def test_a_system_submits_through_nginx_as_itself(
    proxied: tuple[Any, NginxFront], fhir: Any
) -> None:
    server, _front = proxied
    patient = fhir.patient("openmrs")
    with _through(proxied, "openmrs") as client:
        response = client.post("/fhir/Patient", json=patient, headers={"Content-Type": FHIR_JSON})
    assert response.status_code == 201, response.text
    record_id, _golden = fhir.ids(response)
    (event,) = _events(server, entity=f"Patient/{record_id}", event_type="create")
    assert event.agent == "openmrs"
    assert event.source_address == "127.0.0.1"  # the client's, from X-Forwarded-For


def test_without_a_certificate_nginx_names_no_one(proxied: tuple[Any, NginxFront]) -> None:
    with _through(proxied) as client:
        plain = client.get("/fhir/Patient/anything")
        forged = client.get("/fhir/Patient/anything", headers={HEADER: "openmrs"})
        metadata = client.get("/fhir/metadata")
    assert plain.status_code == 401, plain.text
    assert forged.status_code == 401, forged.text  # nginx overwrote the client's header
    assert metadata.status_code == 200


def test_a_system_cannot_pass_for_another_through_nginx(
    proxied: tuple[Any, NginxFront],
) -> None:
    search = "/fhir/Patient?family=Nobodyhere"
    with _through(proxied, "openmrs") as openmrs, _through(proxied, "hie") as hie:
        as_openmrs = openmrs.get(search, headers={HEADER: "hie"})
        as_hie = hie.get(search)
    assert as_openmrs.status_code == 403, as_openmrs.text  # openmrs may not read demographics
    assert "openmrs" in as_openmrs.text
    assert as_hie.status_code == 200, as_hie.text


def test_the_header_from_an_untrusted_address_is_refused_and_audited(
    proxied: tuple[Any, NginxFront],
) -> None:
    server, _front = proxied
    reason = "accepted only from a trusted proxy"
    before = len(_events(server, source_address="127.0.0.1", outcome=4))
    anonymous = server.new_client().get("/fhir/Patient/x1", headers={HEADER: "openmrs"})
    # even with a valid certificate: the header is refused, not ignored
    certified = server.client("openmrs").get("/fhir/Patient/x2", headers={HEADER: "hie"})
    for response in (anonymous, certified):
        assert response.status_code == 403, response.text
        assert reason in response.json()["issue"][0]["diagnostics"]
    refused = _events(server, source_address="127.0.0.1", outcome=4)[before:]
    paths = {e.event_type for e in refused if reason in (e.detail or {}).get("reason", "")}
    assert {"GET /fhir/Patient/x1", "GET /fhir/Patient/x2"} <= paths, refused


def test_forwarded_for_from_an_untrusted_address_is_ignored(
    proxied: tuple[Any, NginxFront], fhir: Any
) -> None:
    server, _front = proxied
    response = server.client("openmrs").post(
        "/fhir/Patient",
        json=fhir.patient("openmrs"),
        headers={"Content-Type": FHIR_JSON, "X-Forwarded-For": "10.9.9.9"},
    )
    assert response.status_code == 201, response.text
    record_id, _golden = fhir.ids(response)
    (event,) = _events(server, entity=f"Patient/{record_id}", event_type="create")
    assert event.source_address == "127.0.0.1"


def test_a_certificate_of_no_configured_system_is_refused(
    proxied: tuple[Any, NginxFront],
) -> None:
    server, _front = proxied
    # issued by the registry's CA (nginx lets it through) for a name the registry does not know
    CertificateAuthority.load(server.certs_dir).issue_client("ghost")
    with _through(proxied, "ghost") as client:
        response = client.get("/fhir/Patient/anything")
    assert response.status_code == 403, response.text
    assert "'ghost' is not a client system" in response.text


def test_nginx_refuses_a_foreign_and_after_a_reload_a_revoked_certificate(
    proxied: tuple[Any, NginxFront], tmp_path: Path
) -> None:
    server, front = proxied
    foreign = CertificateAuthority.create(tmp_path / "foreign").issue_client("openmrs")
    verify = server.ssl_context(foreign.cert_path, foreign.key_path)
    with httpx.Client(base_url=front.base_url, verify=verify, timeout=30.0) as client:
        response = client.get("/fhir/Patient/anything")
    assert response.status_code == 400 and "SSL certificate" in response.text, response.text

    revoked = server.cli("certs", "revoke", "lims")
    assert revoked.returncode == 0, revoked.stderr
    os.kill(int((front.directory / "nginx.pid").read_text()), signal.SIGHUP)  # nginx -s reload
    deadline = time.monotonic() + 10
    while True:
        with _through(proxied, "lims") as client:
            response = client.get("/fhir/Patient/anything")
        if response.status_code == 400 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert response.status_code == 400 and "SSL certificate" in response.text, response.text
