"""The served OpenAPI description: every route documents the statuses it can answer, in its
family's error format, and the FHIR routes their bodies and query parameters."""

from __future__ import annotations

from typing import Any

import pytest

from clientregistry.api.openapi import DEPENDENCY_STATUSES

SQLITE_ONLY = pytest.mark.parametrize("registry_server", ["sqlite"], indirect=True)
OPEN = {("get", "/fhir/metadata"), ("post", "/auth/token")}
"""The operations anyone may call."""
GUARDED_BY_ROLE = [
    ("post", "/admin/users"),
    ("get", "/admin/audit"),
    ("post", "/admin/records/{record_id}/break"),
    ("post", "/fhir/Patient"),
    ("get", "/fhir/Patient"),
    ("get", "/fhir/Patient/$ihe-pix"),
]
"""Operations that need a role or a permission as well as a caller."""


@pytest.fixture(scope="module")
def document(registry_server: Any) -> dict[str, Any]:
    response = registry_server.new_client().get("/openapi.json")
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def _schema_of(response: dict[str, Any]) -> tuple[str, str]:
    ((media, content),) = response["content"].items()
    return media, content["schema"]["$ref"].rsplit("/", 1)[-1]


@SQLITE_ONLY
def test_every_guarded_route_documents_401_and_403(document: dict[str, Any]) -> None:
    for method, path, operation in _operations(document):
        if (method, path) in OPEN or path in ("/openapi.json", "/docs"):
            continue
        responses = operation["responses"]
        assert "401" in responses, (method, path)
        assert "WWW-Authenticate" in responses["401"]["headers"], (method, path)
    for method, path in GUARDED_BY_ROLE:
        assert "403" in document["paths"][path][method]["responses"], (method, path)


@SQLITE_ONLY
def test_errors_are_in_the_format_of_their_family(document: dict[str, Any]) -> None:
    for method, path, operation in _operations(document):
        for status, response in operation["responses"].items():
            if not status.startswith(("4", "5")):
                continue
            expected = (
                ("application/fhir+json", "OperationOutcome")
                if path.startswith("/fhir")
                else ("application/json", "Error")
            )
            assert _schema_of(response) == expected, (method, path, status)
    schemas = document["components"]["schemas"]
    assert schemas["Error"]["required"] == ["detail"]
    assert "HTTPValidationError" not in schemas


@SQLITE_ONLY
def test_validation_errors_are_documented_as_400(document: dict[str, Any]) -> None:
    audit = document["paths"]["/admin/audit"]["get"]["responses"]
    assert "400" in audit and "422" not in audit
    users = document["paths"]["/admin/users"]["post"]["responses"]
    assert {"400", "401", "403", "409", "413"} <= set(users)
    record = document["paths"]["/admin/records/{record_id}"]["get"]["responses"]
    assert "404" in record


@SQLITE_ONLY
def test_fhir_routes_document_their_bodies_and_queries(document: dict[str, Any]) -> None:
    paths = document["paths"]
    create = paths["/fhir/Patient"]["post"]
    body = create["requestBody"]["content"]["application/fhir+json"]["schema"]
    assert body["$ref"].endswith("/Patient")
    assert {"201", "400", "401", "403", "409", "413", "415", "422"} <= set(create["responses"])
    assert _schema_of(create["responses"]["201"]) == ("application/fhir+json", "Resource")
    bundle = paths["/fhir"]["post"]["requestBody"]["content"]["application/fhir+json"]
    assert bundle["schema"]["$ref"].endswith("/Bundle")
    pix = {p["name"]: p for p in paths["/fhir/Patient/$ihe-pix"]["get"]["parameters"]}
    assert pix["sourceIdentifier"]["required"] is True
    search = {p["name"] for p in paths["/fhir/Patient"]["get"]["parameters"]}
    assert {"identifier", "family", "birthdate", "_count"} <= search
    conditional = {p["name"]: p for p in paths["/fhir/Patient"]["put"]["parameters"]}
    assert conditional["identifier"]["required"] is True


def test_the_dependencies_the_table_names_exist() -> None:
    """A renamed dependency would silently stop documenting 401/403."""
    import importlib

    for module, qualname in DEPENDENCY_STATUSES:
        top = qualname.split(".", 1)[0]
        assert hasattr(importlib.import_module(module), top), (module, qualname)
