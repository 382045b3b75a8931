"""Client systems change on a running server, with no restart: a system issued with
``certs issue`` can submit, ``systems grant`` lets it search and ``revoke-permission`` stops
it, and ``certs revoke`` shuts it out, each within a second or so, on every one of two
workers (each fresh connection may land on either)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import pytest
from registry_servers import FHIR_JSON, JSON_HEADERS, RegistryServer

EMR_SYSTEM = "http://clientregistry.org/emr4"
DEADLINE = 3.0
"""Seconds a change may take to reach every worker: the workers look twice a second; the
rest is slack for a machine busy with other tests."""
FRESH_CONNECTIONS = 8


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, launch_server: Callable[..., RegistryServer]):
    return launch_server(request.param, workers=2)


def _patient(value: str) -> str:
    return json.dumps(
        {
            "resourceType": "Patient",
            "identifier": [{"system": EMR_SYSTEM, "value": value}],
            "name": [{"family": "Zawadi", "given": ["Imani"]}],
            "gender": "female",
            "birthDate": "1991-03-04",
        }
    )


def _statuses(
    server: RegistryServer, request: Callable[[httpx.Client], httpx.Response]
) -> set[int]:
    """The status of ``request`` on each of several fresh connections as emr4."""
    statuses = set()
    for _ in range(FRESH_CONNECTIONS):
        with server.new_client("emr4") as client:
            statuses.add(request(client).status_code)
    return statuses


def _until(
    server: RegistryServer, request: Callable[[httpx.Client], httpx.Response], status: int
) -> float:
    """Seconds until every fresh connection answers ``status`` (fails past the deadline)."""
    started = time.monotonic()
    while True:
        seen = _statuses(server, request)
        took = time.monotonic() - started
        if seen == {status}:
            return took
        assert took < DEADLINE, f"still {seen} after {took:.1f} s, expected {status}"
        time.sleep(0.1)


def _cli(server: RegistryServer, *args: str) -> str:
    result = server.cli(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_a_system_is_issued_granted_and_revoked_without_a_restart(
    server: RegistryServer, fhir
) -> None:
    pid = server.process.pid

    def submit(client: httpx.Client) -> httpx.Response:
        return client.post("/fhir/Patient", content=_patient(fhir.token()), headers=JSON_HEADERS)

    def search(client: httpx.Client) -> httpx.Response:
        # A search by demographics: a search by identifier alone is open to every system
        # (answered without demographics, the CRUID look-up), so it would not tell.
        query = {"family": "Zawadi", "birthdate": "1991-03-04"}
        return client.get("/fhir/Patient", params=query, headers={"Accept": FHIR_JSON})

    out = _cli(server, "certs", "issue", "emr4")
    assert "registered system 'emr4'" in out
    _until(server, submit, 201)
    assert _statuses(server, search) == {403}  # may submit, may not read demographics

    out = _cli(server, "systems", "grant", "emr4", "read-demographics")
    assert "read-demographics" in out
    _until(server, search, 200)

    _cli(server, "systems", "revoke-permission", "emr4", "read-demographics")
    _until(server, search, 403)
    _cli(server, "systems", "revoke-permission", "emr4", "submit")
    _until(server, submit, 403)

    _cli(server, "certs", "revoke", "emr4")
    with server.new_client("emr4") as client, pytest.raises(httpx.TransportError):
        submit(client)  # refused at the TLS handshake
    assert server.process.pid == pid and server.process.poll() is None  # never restarted

    listing = _cli(server, "systems", "list")
    row = next(line for line in listing.splitlines() if "emr4" in line)
    assert "revoked" in row and "read-identifiers" in row


def test_changes_are_audited_with_the_operator(server: RegistryServer) -> None:
    from sqlalchemy import select

    from clientregistry.store.models import AuditEvent

    _cli(server, "systems", "grant", "dhis2", "read-demographics")
    engine = server.engine()
    try:
        with engine.connect() as connection:
            event = connection.execute(
                select(AuditEvent.agent, AuditEvent.detail)
                .where(AuditEvent.event_type == "system-grant")
                .order_by(AuditEvent.id.desc())
            ).first()
    finally:
        engine.dispose()
    assert event is not None
    agent, detail = event
    assert agent.startswith("cli")
    assert detail["system"] == "dhis2"
    assert "read-demographics" in detail["after"]
    assert "read-demographics" not in detail["before"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("systems", "grant", "emr9", "submit"), "no client system 'emr9'"),
        (("systems", "grant", "lims", "write-everything"), "unknown permission"),
        (
            ("certs", "issue", "emr5", "--internal-id-system", "http://clientregistry.org/lims"),
            "already belongs to system 'lims'",
        ),
    ],
)
def test_refused_changes_say_why(
    server: RegistryServer, args: tuple[str, ...], message: str
) -> None:
    result = server.cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (server.certs_dir / "clients" / "emr5.pem").exists()
