"""Requests a hostile caller sends (issue 15): bodies before credentials, input the database
cannot hold, echoed input, oversized headers, HEAD, a future birth date, and what is audited.

Over real HTTPS against ``clientregistry serve`` on SQLite and PostgreSQL; every refusal must
be the same 4xx on both, name the field, and write nothing.
"""

from __future__ import annotations

import json
import socket
import ssl
from typing import Any

import pytest
from people import token_for
from registry_servers import FHIR_JSON, JSON_HEADERS, RegistryServer, id_system
from sqlalchemy import text

HUGE = 200_000_000
"""A body size declared and never sent (200 MB)."""


@pytest.fixture(scope="module")
def admin_token(registry_server: RegistryServer) -> str:
    return token_for(registry_server, "admin")


def _raw_request(server: RegistryServer, head: bytes, body: bytes = b"") -> bytes:
    """Send ``head`` and the start of a body over TLS (no client certificate), and read what
    the server answers before the rest is sent: the status line and headers, or b"" when
    it closes or does not answer within the timeout (it is waiting for the body)."""
    context = server.ssl_context()
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=60) as plain,
        context.wrap_socket(plain, server_hostname="localhost") as tls,
    ):
        tls.settimeout(60)
        tls.sendall(head + body)
        received = b""
        try:
            while b"\r\n\r\n" not in received:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                received += chunk
        except (TimeoutError, ssl.SSLError, ConnectionError):
            pass
        return received


def _post_head(path: str, length: int, authorization: str | None = None) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: localhost",
        "Content-Type: application/json",
        f"Content-Length: {length}",
    ]
    if authorization is not None:
        lines.append(f"Authorization: {authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _audit_rows(server: RegistryServer, request_id: str) -> list[Any]:
    engine = server.engine()
    try:
        with engine.connect() as connection:
            return list(
                connection.execute(
                    text(
                        "SELECT event_type, outcome, agent, source_address, detail "
                        "FROM audit_event WHERE request_id = :id"
                    ),
                    {"id": request_id},
                )
            )
    finally:
        engine.dispose()


def _count(server: RegistryServer, value: str) -> int:
    """Source records holding ``value`` as their internal identifier."""
    engine = server.engine()
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(
                    text("SELECT count(*) FROM source_record WHERE internal_value = :v"),
                    {"v": value},
                ).scalar_one()
            )
    finally:
        engine.dispose()


# ----------------------------------------------------------------------------- bodies


@pytest.mark.parametrize(
    "path", ["/admin/issues/1/resolve", "/admin/users", "/admin/match/dry-run", "/auth/logout"]
)
@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token"])
def test_an_unauthenticated_large_post_is_refused_before_its_body_is_read(
    registry_server: RegistryServer, path: str, authorization: str | None
) -> None:
    """The server answers 401 with 4 KiB of a declared 200 MB sent: it never waited for the
    body (before the fix, FastAPI read and parsed all of it first, then answered 401)."""
    answer = _raw_request(registry_server, _post_head(path, HUGE, authorization), b"{" * 4096)
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 401"), answer[:500]
    assert b"connection: close" in answer.lower(), answer[:500]


def test_an_authenticated_oversize_body_is_413(
    registry_server: RegistryServer, admin_token: str
) -> None:
    head = _post_head("/admin/issues/1/resolve", HUGE, f"Bearer {admin_token}")
    answer = _raw_request(registry_server, head, b"{" * 4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:500]
    # streamed without a length: 413 once past the limit
    client = registry_server.new_client()

    def chunks() -> Any:
        for _ in range(64):
            yield b" " * 65536

    response = client.post(
        "/admin/users",
        content=chunks(),
        headers={"Authorization": f"Bearer {admin_token}", "Content-Type": "application/json"},
    )
    assert response.status_code == 413, response.text
    assert "limit" in response.json()["detail"]


def test_the_login_body_is_bounded(registry_server: RegistryServer) -> None:
    answer = _raw_request(registry_server, _post_head("/auth/token", HUGE), b"{" * 4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:500]


# ----------------------------------------------------------------------------- 500s from input


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/admin/issues/99999999999999999999", "issue_id"),
        ("/admin/issues/9223372036854775808", "issue_id"),
        ("/admin/audit/9223372036854775808", "event_id"),
        ("/admin/audit?offset=9223372036854775808", "offset"),
        ("/admin/queues/auto?offset=99999999999999999999", "offset"),
        ("/admin/queues/potential?offset=9223372036854775808", "offset"),
        ("/admin/records/x/versions/9223372036854775808", "version"),
        ("/admin/imports?offset=9223372036854775808", "offset"),
        ("/admin/imports/9223372036854775808", "job_id"),
        ("/admin/rematches/9223372036854775808", "job_id"),
        ("/admin/people?name=a%00b", "name"),
        ("/admin/audit?agent=a%00b", "agent"),
    ],
)
def test_admin_parameters_the_database_cannot_hold_are_400(
    registry_server: RegistryServer, admin_token: str, path: str, field: str
) -> None:
    client = registry_server.new_client()
    response = client.get(path, headers={"Authorization": f"Bearer {admin_token}"})
    assert response.status_code == 400, response.text
    body = response.json()
    named = [part for error in body.get("errors", []) for part in error["loc"]]
    assert field in named or field in body["detail"], body


def test_a_large_id_in_a_post_is_400(registry_server: RegistryServer, admin_token: str) -> None:
    client = registry_server.new_client()
    headers = {"Authorization": f"Bearer {admin_token}"}
    for path, field in (
        ("/admin/issues/9223372036854775808/resolve", "issue_id"),
        ("/admin/audit/9223372036854775808/revert", "event_id"),
    ):
        response = client.post(path, json={"resolution": "new"}, headers=headers)
        assert response.status_code == 400, response.text
        assert field in [part for e in response.json()["errors"] for part in e["loc"]]


def test_a_nul_in_an_admin_body_is_400_and_nothing_is_written(
    registry_server: RegistryServer, admin_token: str
) -> None:
    client = registry_server.new_client()
    headers = {"Authorization": f"Bearer {admin_token}"}
    response = client.post(
        "/admin/users",
        json={"username": "nul-user", "password": "a long password \x00 here", "role": "reviewer"},
        headers=headers,
    )
    assert response.status_code == 400, response.text
    assert "body.password" in response.json()["detail"]
    users = client.get("/admin/users", headers=headers).json()
    assert "nul-user" not in {user["username"] for user in users}
    form = client.post(
        "/auth/token",
        content=b"username=a%00b&password=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 400, form.text
    assert "body.username" in form.json()["detail"]


def test_a_nul_in_a_patient_is_400_naming_the_element(
    registry_server: RegistryServer, fhir: Any
) -> None:
    value = fhir.token("nul-")
    patient = fhir.patient("openmrs", value)
    patient["name"][0]["family"] = "Ab\x00c"
    response = registry_server.submit("openmrs", patient)
    fhir.outcome(response, 400, "invalid", "Patient.name[0].family")
    assert _count(registry_server, value) == 0


@pytest.mark.parametrize(
    ("literal", "said"),
    [("-2585201609293027606528", "64 bits"), ("9223372036854775808", "64 bits"), ("1e400", "")],
)
@pytest.mark.parametrize("path", ["/fhir/Patient", "/fhir/Patient/$match"])
def test_a_number_the_registry_cannot_hold_is_400_not_500(
    registry_server: RegistryServer, fhir: Any, path: str, literal: str, said: str
) -> None:
    """Found by the fuzzer: an extension holding an integer beyond 64 bits was a 500 (the
    NUL check re-serialised it); ``1e400`` became infinity and would be stored as null."""
    value = fhir.token("num-")
    patient = fhir.patient("openmrs", value)
    patient["extension"] = [{"url": "http://example.org/n", "valueDecimal": 0}]
    body = json.dumps(patient).replace('"valueDecimal": 0', f'"valueDecimal": {literal}')
    if path.endswith("$match"):
        body = json.dumps(
            {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": 0}]}
        ).replace('"resource": 0', f'"resource": {body}')
    response = registry_server.client("openmrs").post(path, content=body, headers=JSON_HEADERS)
    outcome = fhir.outcome(response, 400, "structure")
    assert literal in outcome["issue"][0]["diagnostics"] and said in str(outcome), outcome
    assert _count(registry_server, value) == 0


def test_an_identifier_over_255_characters_is_400(
    registry_server: RegistryServer, fhir: Any
) -> None:
    value = "v" * 256
    response = registry_server.submit("openmrs", fhir.patient("openmrs", value))
    fhir.outcome(response, 400, "too-long", "Patient.identifier[0].value")
    assert _count(registry_server, value) == 0
    assert registry_server.submit("openmrs", fhir.patient("openmrs", "w" * 255)).status_code == 201


@pytest.mark.parametrize(
    "params",
    [
        [("family", ",".join(f"n{i}" for i in range(1000)))],
        [("family", f"n{i}") for i in range(1000)],
        [("identifier", ",".join(f"s|v{i}" for i in range(1000)))],
        [("given", f"n{i}") for i in range(101)],
    ],
    ids=["family-or", "family-and", "identifier-or", "given-101"],
)
def test_a_search_with_too_many_values_is_400_naming_the_parameter(
    registry_server: RegistryServer, fhir: Any, params: list[tuple[str, str]]
) -> None:
    client = registry_server.client("hie")
    response = client.get("/fhir/Patient", params=params, headers={"Accept": FHIR_JSON})
    fhir.outcome(response, 400, "too-costly", params[0][0])


def test_a_search_with_a_hundred_values_is_answered(
    registry_server: RegistryServer, fhir: Any
) -> None:
    client = registry_server.client("hie")
    params = {"family": ",".join(f"n{i}" for i in range(100))}
    response = client.get("/fhir/Patient", params=params, headers={"Accept": FHIR_JSON})
    assert response.status_code == 200, response.text


def test_a_nul_in_a_fhir_query_or_path_is_400(registry_server: RegistryServer, fhir: Any) -> None:
    client = registry_server.client("hie")
    response = client.get("/fhir/Patient?identifier=s%7Ca%00b", headers={"Accept": FHIR_JSON})
    fhir.outcome(response, 400, "invalid", "identifier")
    response = client.get("/fhir/Patient/a%00b", headers={"Accept": FHIR_JSON})
    fhir.outcome(response, 400, "invalid", "path")


# ----------------------------------------------------------------------------- echoed input


def test_validation_errors_do_not_echo_large_input(
    registry_server: RegistryServer, admin_token: str, fhir: Any
) -> None:
    client = registry_server.new_client()
    headers = {"Authorization": f"Bearer {admin_token}"}
    big = "u" * 500_000
    for body in ({"username": big}, {"username": big, "password": "x" * 20, "role": "reviewer"}):
        response = client.post("/admin/users", json=body, headers=headers)
        assert response.status_code == 400, response.text[:300]
        assert len(response.content) < 4096, response.text[:300]
    search = registry_server.client("hie").get(
        "/fhir/Patient", params={"family": "a\\" + "b" * 60_000}, headers={"Accept": FHIR_JSON}
    )
    fhir.outcome(search, 400)
    assert len(search.content) < 4096


# ----------------------------------------------------------------------------- headers, HEAD


def test_a_header_over_16_kib_is_431(registry_server: RegistryServer) -> None:
    client = registry_server.new_client("openmrs")
    response = client.get("/fhir/metadata", headers={"X-Big": "a" * 200_000})
    assert response.status_code == 431, response.text
    assert client.get("/fhir/metadata", headers={"X-Fine": "a" * 8000}).status_code == 200


def test_too_many_headers_or_too_large_in_all_are_431(registry_server: RegistryServer) -> None:
    client = registry_server.new_client("openmrs")
    many = {f"X-H{i}": "a" for i in range(10_000)}
    assert client.get("/fhir/metadata", headers=many).status_code == 431
    large = {f"X-H{i}": "a" * 10_000 for i in range(8)}
    assert client.get("/fhir/metadata", headers=large).status_code == 431
    some = {f"X-H{i}": "a" for i in range(50)}
    assert client.get("/fhir/metadata", headers=some).status_code == 200


def test_head_answers_as_get_without_a_body(
    registry_server: RegistryServer, admin_token: str
) -> None:
    client = registry_server.client("openmrs")
    got = client.get("/fhir/metadata")
    head = client.head("/fhir/metadata")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == got.headers["content-length"]
    assert head.headers["content-type"] == got.headers["content-type"]
    assert client.head("/fhir/Patient/no-such-patient").status_code == 404
    admin = registry_server.new_client()
    bearer = {"Authorization": f"Bearer {admin_token}"}
    assert admin.head("/admin/queues", headers=bearer).status_code == 200
    assert admin.head("/admin/queues").status_code == 401
    refused = client.delete("/fhir/metadata")
    assert refused.status_code == 405
    assert "HEAD" in refused.headers["allow"]


def test_a_birth_date_in_the_future_is_400(registry_server: RegistryServer, fhir: Any) -> None:
    for birth in ("2999-01-01", "2999-01", "2999"):
        value = fhir.token("future-")
        patient = fhir.patient("openmrs", value, birthDate=birth)
        response = registry_server.submit("openmrs", patient)
        fhir.outcome(response, 400, "invalid", "Patient.birthDate")
        assert _count(registry_server, value) == 0
    today = fhir.patient("openmrs", birthDate="2020-02-29")
    assert registry_server.submit("openmrs", today).status_code == 201


# ----------------------------------------------------------------------------- audit


def test_an_admin_request_without_credentials_is_audited(registry_server: RegistryServer) -> None:
    response = registry_server.new_client().get("/admin/queues")
    assert response.status_code == 401
    rows = _audit_rows(registry_server, response.headers["x-request-id"])
    assert [(row.event_type, row.outcome, row.source_address) for row in rows] == [
        ("token-missing", 4, "127.0.0.1")
    ]


def test_metadata_and_404s_are_audited(registry_server: RegistryServer) -> None:
    response = registry_server.client("openmrs").get("/fhir/metadata")
    assert response.status_code == 200
    rows = _audit_rows(registry_server, response.headers["x-request-id"])
    assert [(row.event_type, row.outcome, row.agent) for row in rows] == [
        ("capabilities", 0, "openmrs")
    ]
    anonymous = registry_server.new_client().get("/fhir/metadata")
    rows = _audit_rows(registry_server, anonymous.headers["x-request-id"])
    assert [(row.agent, row.source_address) for row in rows] == [("anonymous", "127.0.0.1")]
    for path in ("/no/such/route", "/admin/no-such-route", "/fhir/Observation"):
        missing = registry_server.new_client().get(path)
        assert missing.status_code == 404, path
        rows = _audit_rows(registry_server, missing.headers["x-request-id"])
        assert len(rows) == 1, (path, rows)
        assert rows[0].outcome == 4
        detail = rows[0].detail if isinstance(rows[0].detail, dict) else json.loads(rows[0].detail)
        assert detail["status"] == 404


def test_json_headers_are_a_valid_submission(registry_server: RegistryServer, fhir: Any) -> None:
    """The control for the refusals above: the same submission without the bad parts."""
    patient = fhir.patient("openmrs")
    client = registry_server.client("openmrs")
    response = client.post("/fhir/Patient", content=json.dumps(patient), headers=JSON_HEADERS)
    assert response.status_code == 201, response.text
    assert patient["identifier"][0]["system"] == id_system("openmrs")
