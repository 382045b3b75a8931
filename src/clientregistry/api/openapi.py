"""The OpenAPI description (``/openapi.json``, ``/docs``), completed for fuzzers and client
generators: every status a route can answer, with its error body, and the FHIR routes' bodies
and query parameters.

FastAPI describes what it sees in a route's signature: pydantic bodies, declared parameters,
200 and 422. :func:`install` replaces ``app.openapi`` with :func:`describe`, which builds that
document once and then, for every route, without any route having to say so:

* adds the statuses its **dependencies** imply (:data:`DEPENDENCY_STATUSES`: a client
  certificate or a bearer token, 401; a permission or a role, 403), 400 and 431 for every
  route (invalid parameters or body, a NUL in the path or query, headers over the limits;
  FastAPI's 422 is dropped, the application answers validation errors with 400), 404 for a
  path parameter, 413 for a body, 503 for a route that
  uses the database, and what :data:`ROUTE_STATUSES` adds for particular routes (409, 412,
  415, 422, 429 ...);
* describes each error in the format of its family of routes: an OperationOutcome
  (``application/fhir+json``) under ``/fhir``, ``{"detail": "..."}`` (:data:`ERROR_SCHEMA`,
  ``application/json``, see :mod:`clientregistry.api.admin_errors`) under ``/auth`` and
  ``/admin``, with ``WWW-Authenticate`` on 401 and ``Retry-After`` on 429;
* gives the FHIR routes, which read their own body and query, their request bodies (Patient,
  Bundle, Parameters, a search form) and query parameters (:data:`FHIR_REQUESTS`) and FHIR
  JSON answers.

A route added later is described by the same rules; a test checks that every route that
needs a caller documents 401.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

FHIR_JSON = "application/fhir+json"
FORM = "application/x-www-form-urlencoded"

DEPENDENCY_STATUSES: dict[tuple[str, str], tuple[int, ...]] = {
    ("clientregistry.api.deps", "current_system"): (401, 403),
    ("clientregistry.api.deps", "require.<locals>.check"): (401, 403),
    ("clientregistry.api.search", "searcher"): (401, 403),
    ("clientregistry.api.auth", "current_user"): (401,),
    ("clientregistry.api.auth", "require_role.<locals>.check"): (401, 403),
}
"""(module, qualified name) of a dependency → the statuses a route that uses it can answer."""

_SUBMIT = (201, 400, 409, 413, 415, 422)
_READ_BODY = (400, 413, 415)
_FORMAT = 406  # an unsupported _format
ROUTE_STATUSES: dict[tuple[str, str], tuple[int, ...]] = {
    ("POST", "/fhir/Patient"): _SUBMIT,
    ("PUT", "/fhir/Patient/{patient_id}"): _SUBMIT,
    ("PUT", "/fhir/Patient"): (*_SUBMIT, 412),
    ("POST", "/fhir"): (*_READ_BODY, 409, 422),
    ("POST", "/fhir/Patient/$match"): (*_READ_BODY, 422, _FORMAT),
    ("POST", "/fhir/Patient/_search"): (*_READ_BODY, _FORMAT),
    ("GET", "/fhir/Patient/$ihe-pix"): (400, 404, _FORMAT),
    ("GET", "/fhir/Patient"): (400, _FORMAT),
    ("GET", "/fhir/Patient/_search"): (400, _FORMAT),
    ("GET", "/fhir/Patient/{patient_id}/_history/{version_id}"): (410,),
    ("POST", "/auth/token"): (400, 401, 413, 415, 429),
    ("POST", "/admin/issues/{issue_id}/resolve"): (409,),
    ("POST", "/admin/records/{record_id}/break"): (409,),
    ("POST", "/admin/records/{record_id}/unbreak"): (409,),
    ("POST", "/admin/records/{record_id}/join"): (409,),
    ("POST", "/admin/records/{record_id}/confirm"): (409,),
    ("POST", "/admin/audit/{event_id}/revert"): (409,),
    ("POST", "/admin/match/dry-run"): (400, 413, 415, 422),
    ("POST", "/admin/users"): (409,),
    ("GET", "/auth/oidc/login"): (502,),
    ("POST", "/admin/rules/test"): (404,),
    # routes that read their body themselves (an upload, a rules file): FastAPI sees no body
    ("POST", "/admin/imports"): (409, 413, 415),
    ("GET", "/admin/imports/{job_id}/report"): (406,),
    ("POST", "/admin/imports/{job_id}/cancel"): (409,),
    ("POST", "/admin/rules/check"): (413, 415),
    ("POST", "/admin/rules/versions"): (413, 415),
    ("POST", "/admin/rules/restore"): (409,),
    ("POST", "/admin/rules/versions/{version_id}/dry-run"): (409,),
    ("POST", "/admin/rules/versions/{version_id}/activate"): (409,),
    ("POST", "/admin/rematches/{job_id}/cancel"): (409,),
}
"""Statuses particular routes answer beyond what their dependencies and parameters imply."""

NO_DATABASE = frozenset({"/auth/oidc/login"})

# ----------------------------------------------------------------------------- schemas

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {"type": "string", "description": "What went wrong, for a person"},
        "errors": {
            "type": "array",
            "description": "Invalid parameters or body fields (validation errors only)",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}
OPERATION_OUTCOME: dict[str, Any] = {
    "title": "OperationOutcome",
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"const": "OperationOutcome"},
        "issue": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["severity", "code"],
                "properties": {
                    "severity": {"enum": ["fatal", "error", "warning", "information"]},
                    "code": {"type": "string"},
                    "diagnostics": {"type": "string"},
                    "expression": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}
RESOURCE: dict[str, Any] = {
    "title": "Resource",
    "type": "object",
    "required": ["resourceType"],
    "properties": {"resourceType": {"type": "string"}},
}
_STRINGS = {"type": "array", "items": {"type": "string"}}
PATIENT: dict[str, Any] = {
    "title": "Patient",
    "description": "A FHIR R4 Patient (the elements the registry reads; others are kept)",
    "type": "object",
    "required": ["resourceType"],
    "properties": {
        "resourceType": {"const": "Patient"},
        "id": {"type": "string", "pattern": "^[A-Za-z0-9\\-.]{1,64}$"},
        "active": {"type": "boolean"},
        "identifier": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"system": {"type": "string"}, "value": {"type": "string"}},
            },
        },
        "name": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "use": {"type": "string"},
                    "family": {"type": "string"},
                    "given": _STRINGS,
                    "text": {"type": "string"},
                },
            },
        },
        "gender": {"enum": ["male", "female", "other", "unknown"]},
        "birthDate": {"type": "string", "pattern": "^[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?$"},
        "telecom": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "system": {"type": "string"},
                    "value": {"type": "string"},
                    "use": {"type": "string"},
                },
            },
        },
        "address": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "line": _STRINGS,
                    "city": {"type": "string"},
                    "district": {"type": "string"},
                    "state": {"type": "string"},
                    "postalCode": {"type": "string"},
                    "country": {"type": "string"},
                },
            },
        },
    },
}
_PATIENT_REF = {"$ref": "#/components/schemas/Patient"}
BUNDLE: dict[str, Any] = {
    "title": "Bundle",
    "description": "A batch or transaction of Patient creates and updates",
    "type": "object",
    "required": ["resourceType", "type"],
    "properties": {
        "resourceType": {"const": "Bundle"},
        "type": {"enum": ["batch", "transaction"]},
        "entry": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "fullUrl": {"type": "string"},
                    "resource": _PATIENT_REF,
                    "request": {
                        "type": "object",
                        "required": ["method", "url"],
                        "properties": {
                            "method": {"enum": ["POST", "PUT"]},
                            "url": {"type": "string"},
                        },
                    },
                },
            },
        },
    },
}
MATCH_PARAMETERS: dict[str, Any] = {
    "title": "MatchParameters",
    "description": "$match input: a Parameters resource (resource, onlyCertainMatches, count)",
    "type": "object",
    "required": ["resourceType"],
    "properties": {
        "resourceType": {"const": "Parameters"},
        "parameter": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"enum": ["resource", "onlyCertainMatches", "count"]},
                    "resource": _PATIENT_REF,
                    "valueBoolean": {"type": "boolean"},
                    "valueInteger": {"type": "integer"},
                },
            },
        },
    },
}
SCHEMAS = {
    "Error": ERROR_SCHEMA,
    "OperationOutcome": OPERATION_OUTCOME,
    "Resource": RESOURCE,
    "Patient": PATIENT,
    "Bundle": BUNDLE,
    "MatchParameters": MATCH_PARAMETERS,
}

# ----------------------------------------------------------------------------- FHIR requests

SEARCH_PARAMETERS = (
    "_id",
    "identifier",
    "family",
    "given",
    "name",
    "birthdate",
    "gender",
    "telecom",
    "address",
    "address-city",
    "address-postalcode",
    "address-state",
    "address-country",
    "active",
    "_count",
    "_include",
    "_summary",
    "_format",
)


def _query(name: str, description: str = "", *, required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": {"type": "string"},
        **({"description": description} if description else {}),
    }


def _fhir_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {FHIR_JSON: {"schema": schema}, "application/json": {"schema": schema}},
    }


_SEARCH_QUERY = [_query(name) for name in SEARCH_PARAMETERS]
_SEARCH_FORM = {
    "type": "object",
    "properties": {name: {"type": "string"} for name in SEARCH_PARAMETERS},
}
FHIR_REQUESTS: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/fhir/Patient"): {"requestBody": _fhir_body(_PATIENT_REF)},
    ("PUT", "/fhir/Patient/{patient_id}"): {"requestBody": _fhir_body(_PATIENT_REF)},
    ("PUT", "/fhir/Patient"): {
        "requestBody": _fhir_body(_PATIENT_REF),
        "parameters": [
            _query("identifier", "system|value of the caller's own identifier", required=True)
        ],
    },
    ("POST", "/fhir"): {"requestBody": _fhir_body({"$ref": "#/components/schemas/Bundle"})},
    ("POST", "/fhir/Patient/$match"): {
        "requestBody": _fhir_body(
            {"oneOf": [{"$ref": "#/components/schemas/MatchParameters"}, _PATIENT_REF]}
        )
    },
    ("GET", "/fhir/Patient/$ihe-pix"): {
        "parameters": [
            _query("sourceIdentifier", "system|value", required=True),
            _query("targetSystem", "an identifier system to answer with"),
            _query("_format"),
        ]
    },
    ("GET", "/fhir/Patient"): {"parameters": _SEARCH_QUERY},
    ("GET", "/fhir/Patient/_search"): {"parameters": _SEARCH_QUERY},
    ("POST", "/fhir/Patient/_search"): {
        "requestBody": {"content": {FORM: {"schema": _SEARCH_FORM}}},
        "parameters": _SEARCH_QUERY,
    },
}
"""What the FHIR routes read from the request themselves, in OpenAPI terms."""

# ----------------------------------------------------------------------------- building


def install(app: FastAPI) -> None:
    """Serve :func:`describe`'s document as the application's OpenAPI description."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def describe(app: FastAPI) -> dict[str, Any]:
    """The application's OpenAPI document, completed as the module docstring says."""
    document = get_openapi(
        title=app.title,
        version=app.version,
        openapi_version=app.openapi_version,
        description=app.description,
        routes=app.routes,
    )
    components = document.setdefault("components", {}).setdefault("schemas", {})
    components.update(SCHEMAS)
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for route in api_routes(app.routes):
        if not route.include_in_schema:
            continue
        for method in route.methods or ():
            operation = document["paths"].get(route.path_format, {}).get(method.lower())
            if operation is not None:
                _complete(operation, route, method)
    return document


def api_routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    """Every :class:`APIRoute` of ``routes``, those of included routers too."""
    for route in routes:
        nested = getattr(route, "original_router", None)  # an included router (FastAPI 0.16x)
        if nested is not None:
            yield from api_routes(nested.routes)
        elif isinstance(route, APIRoute):
            yield route


def _complete(operation: dict[str, Any], route: APIRoute, method: str) -> None:
    key = (method, route.path_format)
    fhir = route.path_format.startswith("/fhir")
    request = FHIR_REQUESTS.get(key, {})
    if "requestBody" in request:
        operation["requestBody"] = request["requestBody"]
    if "parameters" in request:
        declared = {p["name"] for p in operation.get("parameters", [])}
        extra = [p for p in request["parameters"] if p["name"] not in declared]
        operation["parameters"] = [*operation.get("parameters", []), *extra]
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if "HTTPValidationError" in str(responses.get("422")):
        del responses["422"]  # FastAPI's validation error: answered as 400 here
    statuses = set(statuses_of(route, method)) | {int(s) for s in responses if s.isdigit()}
    if fhir:
        success = next((s for s in responses if s.startswith("2")), "200")
        if success != "204":
            responses[success] = _fhir_success(responses[success])
        if 201 in statuses and "201" not in responses:
            responses["201"] = _fhir_success({"description": "Created"})
    for status in sorted(statuses):
        if status < 400 or (str(status) in responses and "content" in responses[str(status)]):
            continue
        description = responses.get(str(status), {}).get("description")
        responses[str(status)] = _error(status, fhir, description)


def statuses_of(route: APIRoute, method: str) -> list[int]:
    """Every status ``route`` can answer (errors and extra successes), sorted."""
    statuses: set[int] = set()
    for call in _calls(route.dependant):
        name = (getattr(call, "__module__", ""), getattr(call, "__qualname__", ""))
        statuses.update(DEPENDENCY_STATUSES.get(name, ()))
    dependant = route.dependant
    # any route: a NUL in its path or query (400), headers over the limits (431;
    # api/request_limits.py)
    statuses.update((400, 431))
    if dependant.path_params:
        statuses.add(404)
    if dependant.body_params:
        statuses.add(413)
    if route.path_format.startswith(("/fhir", "/admin", "/auth")) and (
        route.path_format not in NO_DATABASE
    ):
        statuses.add(503)
    statuses.update(ROUTE_STATUSES.get((method, route.path_format), ()))
    return sorted(statuses)


def _calls(dependant: Dependant) -> Iterator[Any]:
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            yield dependency.call
        yield from _calls(dependency)


def _fhir_success(response: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": response.get("description", "Successful Response"),
        "content": {FHIR_JSON: {"schema": {"$ref": "#/components/schemas/Resource"}}},
    }


def _error(status: int, fhir: bool, description: str | None) -> dict[str, Any]:
    media, schema = (FHIR_JSON, "OperationOutcome") if fhir else ("application/json", "Error")
    response: dict[str, Any] = {
        "description": description or HTTPStatus(status).phrase,
        "content": {media: {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }
    headers = {
        401: ("WWW-Authenticate", "How to authenticate (Mutual-TLS or Bearer)"),
        429: ("Retry-After", "Seconds until the next attempt may succeed"),
    }
    if status in headers:
        name, text = headers[status]
        response["headers"] = {name: {"description": text, "schema": {"type": "string"}}}
    return response
