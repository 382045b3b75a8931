"""One error format for the people's API (``/auth``, ``/admin``): ``{"detail": "..."}``.

The FHIR routes answer errors as OperationOutcomes; the admin API, as FastAPI's own
``HTTPException`` does, as ``application/json``::

    {"detail": "what went wrong, for a person",
     "errors": [{"loc": ["body", "role"], "msg": "Input should be ...", "type": "enum"}]}

``errors`` comes with a request that failed validation (a parameter or body field, or a FHIR
resource sent to ``/admin/match/dry-run``: ``loc`` is then the FHIRPath of the element),
at most :data:`MAX_ERRORS` of them, each message at most :data:`MAX_MESSAGE` characters, and
never the input itself. The OpenAPI description names this schema ``Error``.

:func:`install` wraps each of the application's exception handlers: on a path under ``/auth``
or ``/admin`` the handler still runs (its audit and log, its status and headers) and its
OperationOutcome is rewritten into this format. Errors the admin routes raise themselves
(:class:`~clientregistry.api.auth.ApiError`) are already in it; raised on a FHIR path (a
search with a bearer token that is refused), they answer an OperationOutcome.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from clientregistry.api.auth import ApiError
from clientregistry.api.responses import fhir_response
from clientregistry.fhir.errors import FhirError
from clientregistry.fhir.operation_outcome import from_error

API_PREFIXES = ("/auth", "/admin")
MAX_ERRORS = 20
MAX_MESSAGE = 300
_BEARER = 'Bearer realm="clientregistry"'

Handler = Callable[[Request, Any], Response | Awaitable[Response]]


def is_api_path(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in API_PREFIXES)


def install(app: FastAPI) -> None:
    """Answer errors under ``/auth`` and ``/admin`` as :func:`api_error` bodies. Call it after
    every exception handler is registered."""
    for kind, handler in list(app.exception_handlers.items()):
        if kind is ApiError:
            app.exception_handlers[kind] = _for_fhir(handler)
        elif callable(handler):
            app.exception_handlers[kind] = _for_api(handler)


def _for_api(handler: Handler) -> Handler:
    async def answer(request: Request, error: Exception) -> Response:
        response = handler(request, error)
        if inspect.isawaitable(response):
            response = await response
        if not is_api_path(request.url.path):
            return response
        return _rewrite(response, error)

    return answer


def _for_fhir(handler: Handler) -> Handler:
    """An :class:`ApiError` on a FHIR path (a bearer token on a search): an OperationOutcome."""

    async def answer(request: Request, error: Exception) -> Response:
        if is_api_path(request.url.path) or not isinstance(error, ApiError):
            response = handler(request, error)
            return await response if inspect.isawaitable(response) else response
        code = {401: "login", 403: "forbidden", 404: "not-found"}.get(error.status_code)
        failure = FhirError(error.status_code, code or "processing", str(error.detail))
        return fhir_response(from_error(failure), error.status_code, error.headers)

    return answer


def _cut(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def api_error(detail: str, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The body of an error of the people's API."""
    body: dict[str, Any] = {"detail": _cut(detail)}
    if errors:
        body["errors"] = errors[:MAX_ERRORS]
    return body


def validation_errors(error: RequestValidationError) -> list[dict[str, Any]]:
    """Where and why the request is invalid, without the input."""
    return [
        {
            "loc": [part if isinstance(part, int) else _cut(str(part)) for part in item["loc"]],
            "msg": _cut(str(item.get("msg", ""))),
            "type": _cut(str(item.get("type", ""))),
        }
        for item in error.errors()[:MAX_ERRORS]
    ]


def _rewrite(response: Response, error: Exception) -> Response:
    detail = "Error"
    errors: list[dict[str, Any]] = []
    try:
        outcome = orjson.loads(bytes(response.body))
        issues = outcome.get("issue") or [{}]
        detail = str(issues[0].get("diagnostics") or issues[0].get("code") or detail)
        errors = [
            {
                "loc": list(issue.get("expression", [])),
                "msg": _cut(str(issue.get("diagnostics", ""))),
                "type": str(issue.get("code", "")),
            }
            for issue in issues[:MAX_ERRORS]
            if issue.get("expression")
        ]
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        pass
    if isinstance(error, RequestValidationError):
        detail, errors = "The request is invalid", validation_errors(error)
    headers = {
        name: value
        for name, value in response.headers.items()
        if name not in ("content-length", "content-type")
    }
    if response.status_code == 401:
        headers["www-authenticate"] = _BEARER
    return JSONResponse(api_error(detail, errors), response.status_code, headers=headers)
