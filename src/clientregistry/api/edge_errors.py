"""Errors found by the middlewares in front of the routes, answered by the routes' handlers.

A middleware sits outside FastAPI's exception handling, so it cannot raise a
:class:`~clientregistry.fhir.errors.FhirError`. :func:`answer` passes one to the handler the
application registered for it instead, so the answer is what a route raising it would get: an
OperationOutcome on ``/fhir``, ``{"detail": …}`` on ``/auth`` and ``/admin``
(:mod:`clientregistry.api.admin_errors`), audited the same way.
"""

from __future__ import annotations

import inspect

from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from clientregistry.fhir.errors import FhirError


async def answer(
    app: FastAPI, scope: Scope, receive: Receive, send: Send, error: FhirError
) -> None:
    """Send the response ``app``'s :class:`FhirError` handler makes of ``error``."""
    handler = app.exception_handlers[FhirError]
    request = Request(scope, receive)
    response = handler(request, error)
    if inspect.isawaitable(response):
        response = await response
    assert isinstance(response, Response)
    await response(scope, receive, send)
