"""What operators watch, on a real server: Prometheus metrics (scraped on their own port and
with the token on the registry's), a request followed by its id from the response to the
JSON log and the audit trail, and ``/healthz`` and ``/readyz`` (503 once the database is
gone, or a certificate expires too soon)."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from registry_servers import JSON_HEADERS, RegistryServer
from sqlalchemy import select

from clientregistry.store.models import AuditEvent

TOKEN = "scrape-me-0123456789"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


# ----------------------------------------------------------------------------- metrics


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def metered(request: pytest.FixtureRequest, launch_server: Callable[..., RegistryServer]):
    port = _free_port()
    env = {"CR_METRICS_PORT": str(port), "CR_METRICS_TOKEN": TOKEN}
    return launch_server(request.param, workers=2, env=env), port


def _scrape(metered: tuple[RegistryServer, int]) -> dict[Any, float]:
    _, port = metered
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return _samples(response.text)


def test_metrics_count_requests_submissions_and_the_database(metered, fhir) -> None:
    server, _ = metered
    before = _scrape(metered)
    posted = "clientregistry_http_requests_total"
    route = {"method": "POST", "route": "/fhir/Patient", "status": "201"}
    person = fhir.person()
    submitted = 0
    for system in ("openmrs", "dhis2", "lims"):  # one person, three systems: new, auto, auto
        for _ in range(2):  # fresh connections: either worker may take them
            with server.new_client(system) as client:
                patient = fhir.patient(system, demographics=person)
                response = client.post(
                    "/fhir/Patient", content=json.dumps(patient), headers=JSON_HEADERS
                )
                assert response.status_code == 201, response.text
                submitted += 1
    after = _scrape(metered)
    assert _value(after, posted, **route) - _value(before, posted, **route) == submitted
    histogram = "clientregistry_http_request_duration_seconds_count"
    timed = {"method": "POST", "route": "/fhir/Patient"}
    assert _value(after, histogram, **timed) - _value(before, histogram, **timed) == submitted
    outcomes = "clientregistry_submissions_total"
    assert _value(after, outcomes, outcome="new") - _value(before, outcomes, outcome="new") == 1
    assert _value(after, outcomes, outcome="auto") - _value(before, outcomes, outcome="auto") == 5
    assert _value(after, "clientregistry_database_up") == 1
    assert ("clientregistry_review_queue_items", frozenset({("queue", "potential")})) in after
    assert _value(after, "clientregistry_audit_events") > _value(
        before, "clientregistry_audit_events"
    )
    assert _value(after, "clientregistry_db_connections_pooled") >= 1
    # routes, never paths: no identifier or id in a label
    labels = {value for _, pairs in after for _, value in pairs}
    assert not any(re.fullmatch(r"[0-9a-f-]{36}", value) for value in labels)


def test_metrics_on_the_registry_port_need_the_token(metered) -> None:
    client = metered[0].new_client()
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    right = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert right.status_code == 200
    assert "clientregistry_http_requests_total" in right.text


# ----------------------------------------------------------------------------- request ids


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def logged(request: pytest.FixtureRequest, launch_server: Callable[..., RegistryServer]):
    env = {"CR_SERVER_ACCESS_LOG": "true", "CR_SERVER_LOG_FORMAT": "json"}
    return launch_server(request.param, workers=1, env=env)


def _log_lines(server: RegistryServer) -> list[dict[str, Any]]:
    lines = []
    for line in server.log().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def _audit_of(server: RegistryServer, request_id: str) -> list[AuditEvent]:
    engine = server.engine()
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(AuditEvent.event_type, AuditEvent.agent, AuditEvent.resource).where(
                    AuditEvent.request_id == request_id
                )
            ).all()
    finally:
        engine.dispose()
    return list(rows)


def test_a_request_is_followed_from_response_to_log_to_audit(logged: RegistryServer, fhir):
    given = f"trace-{fhir.token()}"
    response = logged.client("openmrs").post(
        "/fhir/Patient",
        content=json.dumps(fhir.patient("openmrs")),
        headers={**JSON_HEADERS, "X-Request-Id": given},
    )
    assert response.status_code == 201
    assert response.headers["X-Request-Id"] == given

    deadline = time.monotonic() + 10
    # the request's own line (a slow garbage collection during it is logged with its id too)
    while not (
        lines := [
            x
            for x in _log_lines(logged)
            if x.get("request_id") == given and x.get("logger") == "clientregistry.request"
        ]
    ):
        assert time.monotonic() < deadline, logged.log()
        time.sleep(0.1)
    [line] = lines
    assert line["route"] == "/fhir/Patient" and line["status"] == 201
    assert line["agent"] == "openmrs" and line["method"] == "POST"
    assert isinstance(line["duration_ms"], float) and line["level"] == "info"
    assert "identifier" not in json.dumps(line)  # routes, not paths or bodies

    [(_, agent, resource)] = _audit_of(logged, given)
    assert agent == "openmrs"
    balp = [e for e in resource["entity"] if e["type"].get("code") == "XrequestId"]
    assert balp[0]["what"]["identifier"]["value"] == given


def test_refusals_carry_an_id_too_and_bad_ids_are_replaced(logged: RegistryServer) -> None:
    client = logged.new_client()  # no certificate: 401, audited
    response = client.get("/fhir/Patient/x", headers={"X-Request-Id": "not an id; DROP"})
    assert response.status_code == 401
    request_id = response.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    [(_, agent, _)] = _audit_of(logged, request_id)
    assert agent == "unauthenticated"
    other = client.get("/fhir/Patient/x").headers["X-Request-Id"]
    assert other != request_id


def test_an_admin_action_audited_through_the_orm_keeps_the_id(logged: RegistryServer, fhir):
    given = f"login-{fhir.token()}"
    refused = logged.new_client().post(
        "/auth/token",
        json={"username": "admin", "password": "not the password"},
        headers={"X-Request-Id": given},
    )
    assert refused.status_code == 401 and refused.headers["X-Request-Id"] == given
    [(event_type, agent, _)] = _audit_of(logged, given)
    assert agent == "admin" and "login" in event_type


# ----------------------------------------------------------------------------- health


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_readiness_fails_when_the_database_is_gone(backend: str, tmp_path, fresh_database) -> None:
    from registry_servers import running_server

    with running_server(tmp_path, backend, fresh_database) as server:
        client = server.new_client()  # probes have no certificate
        alive = client.get("/healthz")
        assert alive.status_code == 200 and alive.json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"status": "ready"}

        _remove_database(server)
        deadline = time.monotonic() + 10
        while (gone := client.get("/readyz")).status_code == 200:
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert gone.status_code == 503
        assert gone.json() == {"status": "not ready", "failing": ["database"]}
        assert client.get("/healthz").status_code == 200  # alive all the same
        _wait_for_log(server, "readiness: the database")


def _wait_for_log(server: RegistryServer, text: str) -> None:
    """Wait for ``text`` in the server's log (a thread of its own writes the lines)."""
    deadline = time.monotonic() + 10
    while text not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)


def _remove_database(server: RegistryServer) -> None:
    if server.backend == "sqlite":
        (server.data_dir / "registry.db").rename(server.data_dir / "moved-away.db")
        return
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(server.database_url)
    admin = url.set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as db:
        db.execute(f'DROP DATABASE "{url.database}" WITH (FORCE)')


def test_readiness_fails_when_a_certificate_expires_too_soon(
    launch_server: Callable[..., RegistryServer],
) -> None:
    server = launch_server("sqlite", env={"CR_HEALTH_CERTIFICATE_DAYS": "5000"})
    response = server.new_client().get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "not ready", "failing": ["certificate"]}
    _wait_for_log(server, "expires in")
