"""One error format under /auth and /admin, ``{"detail": ..., "errors": [...]}``, whatever
raised the error (a route, FastAPI's validation, routing, a FHIR parser), bounded in size."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from people import token_for

from clientregistry.api.admin_errors import MAX_ERRORS, MAX_MESSAGE


@pytest.fixture(scope="module")
def admin(registry_server: Any) -> httpx.Client:
    client: httpx.Client = registry_server.new_client()
    client.headers["Authorization"] = f"Bearer {token_for(registry_server, 'admin')}"
    return client


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json", response.headers
    body: dict[str, Any] = response.json()
    assert isinstance(body["detail"], str) and body["detail"], body
    assert set(body) <= {"detail", "errors"}, body
    return body


def test_a_bad_parameter_names_the_parameter(admin: httpx.Client) -> None:
    body = _error(admin.get("/admin/audit", params={"offset": "-1"}), 400)
    assert body["errors"][0]["loc"] == ["query", "offset"], body
    assert body["errors"][0]["msg"] and body["errors"][0]["type"], body


def test_an_unknown_route_and_a_wrong_method(admin: httpx.Client) -> None:
    _error(admin.get("/admin/nowhere"), 404)
    wrong = admin.delete("/admin/users")
    _error(wrong, 405)
    assert set(wrong.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}  # HEAD as GET


def test_an_invalid_fhir_resource_names_its_elements(admin: httpx.Client) -> None:
    response = admin.post(
        "/admin/match/dry-run",
        content=b'{"resourceType": "Patient", "birthDate": "12 May"}',
        headers={"Content-Type": "application/fhir+json"},
    )
    body = _error(response, 400)
    assert any("Patient.birthDate" in e["loc"] for e in body["errors"]), body
    _error(
        admin.post("/admin/match/dry-run", content=b"{}", headers={"Content-Type": "text/x"}), 415
    )


def test_without_a_token_the_answer_says_bearer(registry_server: Any) -> None:
    response = registry_server.new_client().get("/admin/audit", params={"offset": "x"})
    _error(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_an_error_never_echoes_a_large_input(admin: httpx.Client) -> None:
    huge = "x" * 500_000
    response = admin.post("/admin/users", json={"username": huge, "role": "nobody", "extra": huge})
    body = _error(response, 400)
    assert len(response.content) < 4 * MAX_ERRORS * MAX_MESSAGE, len(response.content)
    assert huge[:1000] not in response.text
    assert {tuple(e["loc"]) for e in body["errors"]} >= {("body", "password"), ("body", "role")}


def test_fhir_routes_keep_operation_outcomes(registry_server: Any) -> None:
    response = registry_server.client("openmrs").get("/fhir/Patient/$ihe-pix")
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


def test_a_refused_token_on_a_fhir_search_answers_an_operation_outcome(
    registry_server: Any,
) -> None:
    response = registry_server.new_client().get(
        "/fhir/Patient", params={"family": "x"}, headers={"Authorization": "Bearer nonsense"}
    )
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert response.json()["issue"][0]["code"] == "login"
    assert response.headers["www-authenticate"].startswith("Bearer")
