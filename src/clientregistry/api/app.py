"""The ASGI application: routers, and one place that turns errors into OperationOutcomes."""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from clientregistry.api import (
    admin,
    admin_errors,
    bulk_export,
    bundle,
    imports,
    match,
    merge,
    metadata,
    oidc,
    openapi,
    operations,
    patient,
    pixm,
    rules,
    search,
    trusted_proxy,
)
from clientregistry.api.audit import audit_failure
from clientregistry.api.body_guard import BodyGuard
from clientregistry.api.formats import FhirFormats
from clientregistry.api.request_limits import RequestLimits
from clientregistry.api.responses import fhir_response
from clientregistry.api.security_headers import SecurityHeaders
from clientregistry.fhir.errors import FhirError, internal_error
from clientregistry.fhir.operation_outcome import from_error
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.rules_store import MAX_RULES_BYTES
from clientregistry.security.authority import CertificateAuthority
from clientregistry.settings import default_data_dir, load_settings
from clientregistry.store.checkpoint_process import EXTERNAL_CHECKPOINTS
from clientregistry.store.errors import Busy, Conflict, StoreError
from clientregistry.ui import app as ui

log = logging.getLogger(__name__)


def create_app(context: RegistryContext, *, freeze_heap: bool = False) -> FastAPI:
    """The registry's application over an open :class:`RegistryContext`, whose background
    work runs while the application does and which it closes when it stops.

    ``freeze_heap`` (a server process: ``clientregistry serve``) moves everything alive at
    startup out of the garbage collector's sight (:func:`gc.freeze`): the modules, the
    matcher, the term counts of every record held. Otherwise each full collection walks them
    all, stopping the worker for 100-160 ms at 100,000 records (measured: the cause of most
    slow requests then), and does it again whenever the heap has grown by a quarter. A
    collection that still takes longer than :data:`SLOW_COLLECTION` is logged.
    """

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        context.start()
        if freeze_heap:
            gc.collect()
            gc.freeze()
            gc.callbacks.append(_warn_on_long_collections)
        try:
            yield
        finally:
            if freeze_heap:
                gc.callbacks.remove(_warn_on_long_collections)
            context.close()

    app = FastAPI(
        title="clientregistry",
        version="0.1.0",
        docs_url=None,  # operations.install serves /docs without a CDN
        redoc_url=None,
        lifespan=lifespan,
    )
    # /auth and /admin: the caller's token checked before the body is read; bounded bodies
    app.add_middleware(BodyGuard, fastapi=app, limit=lambda: _api_body_limit(context))
    # headers bounded (431), no NUL in paths and queries, HEAD as GET without the body
    app.add_middleware(RequestLimits, fastapi=app)
    # JSON or XML on /fhir, in and out, errors included (the routes speak JSON)
    app.add_middleware(FhirFormats, max_body_bytes=lambda _scope: bundle.max_bytes(context))
    app.add_middleware(SecurityHeaders)  # HSTS, CSP, nosniff, no-store ... on every answer
    trusted_proxy.install(app, context.settings)  # believe X-Forwarded-For from proxies only
    app.state.context = context
    app.state.authority = CertificateAuthority.load(context.settings.certs_dir)
    operations.install(app, context.settings)  # request ids, metrics, /healthz, /readyz
    app.include_router(metadata.router)
    # the operations and search before patient.router: its GET /fhir/Patient/{patient_id}
    # would otherwise take $ihe-pix and _search for ids
    app.include_router(pixm.router)
    app.include_router(match.router)
    app.include_router(merge.router)
    app.include_router(search.router)
    app.include_router(bulk_export.router)  # GET /fhir/Patient/$export and its status, files
    app.include_router(patient.router)
    app.include_router(bundle.router)
    admin.mount(app)  # /auth and /admin: people with bearer tokens, never certificates
    app.include_router(imports.router)  # /admin/imports
    app.include_router(rules.router)  # /admin/rules, /admin/rematches
    oidc.mount(app, context.settings)  # /auth/oidc: single sign-on, when configured
    ui.mount(app)  # /ui: the web UI for people (browser sessions), and / sends browsers there

    @app.exception_handler(FhirError)
    async def fhir_error(request: Request, error: FhirError) -> Response:
        await run_in_threadpool(audit_failure, context, request, error.status, error.diagnostics)
        headers = {"WWW-Authenticate": "Mutual-TLS"} if error.status == 401 else None
        return fhir_response(from_error(error), error.status, headers)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, error: StoreError) -> Response:
        if isinstance(error, Conflict):
            failure = FhirError(409, "conflict", f"Conflicts with a stored record: {error}")
        elif isinstance(error, Busy):
            failure = FhirError(503, "transient", "The database is busy; try again")
        else:
            log.error("database error on %s %s: %s", request.method, request.url.path, error)
            failure = internal_error("Database error")
        await run_in_threadpool(
            audit_failure, context, request, failure.status, failure.diagnostics
        )
        return fhir_response(from_error(failure), failure.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> Response:
        # where and why, never the input itself (it may be large)
        await run_in_threadpool(audit_failure, context, request, 400, "invalid request")
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
            for item in admin_errors.validation_errors(error)
        )
        failure = FhirError(400, "invalid", f"Bad request: {problems}")
        return fhir_response(from_error(failure), 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        code = {404: "not-found", 405: "not-supported"}.get(error.status_code, "processing")
        failure = FhirError(error.status_code, code, str(error.detail))
        await run_in_threadpool(
            audit_failure, context, request, failure.status, failure.diagnostics
        )
        headers = dict(error.headers or {})
        if error.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(app, request))
        return fhir_response(from_error(failure), error.status_code, headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return fhir_response(from_error(internal_error()), 500)

    admin_errors.install(app)  # errors under /auth and /admin as {"detail": ...}
    openapi.install(app)  # every status, error format and FHIR body in /openapi.json
    return app


def _api_body_limit(context: RegistryContext) -> int:
    """The largest body of a request to ``/auth`` or ``/admin`` (a Patient, a rules file)."""
    return max(context.settings.max_body_bytes, MAX_RULES_BYTES)


SLOW_COLLECTION = 0.025
"""A garbage collection that stops a server process this long (seconds) is logged."""

_collection_started = [0.0, 0.0]


def _warn_on_long_collections(phase: str, info: dict[str, int]) -> None:
    """A ``gc.callbacks`` hook: warn when a collection stopped this worker for long, saying
    how much of that the collector worked (this thread's CPU time) and how much the worker
    waited for a CPU (a busy machine)."""
    if phase == "start":
        _collection_started[0] = time.perf_counter()
        _collection_started[1] = time.thread_time()
        return
    took = time.perf_counter() - _collection_started[0]
    if took >= SLOW_COLLECTION:
        worked = time.thread_time() - _collection_started[1]
        log.warning(
            "garbage collection (generation %d, %d objects freed) stopped this worker for "
            "%.0f ms (%.0f ms of it collecting)",
            info.get("generation", -1),
            info.get("collected", 0),
            took * 1000,
            worked * 1000,
        )


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route accepts at this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    routes = list(app.router.routes)
    while routes:
        route = routes.pop()
        nested = getattr(route, "original_router", None)  # an included router
        if nested is not None:
            routes.extend(nested.routes)
            continue
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    if "GET" in methods:
        methods.add("HEAD")  # (request_limits answers HEAD as GET)
    return sorted(methods)


def app_from_environment() -> FastAPI:
    """The application for ``clientregistry serve`` workers (data directory from CR_DATA_DIR)."""
    data_dir = Path(os.environ.get("CR_DATA_DIR", str(default_data_dir())))
    settings = load_settings(data_dir)
    context = RegistryContext.open(
        settings,
        run_migrations=False,
        serving=True,
        checkpoint_thread=os.environ.get(EXTERNAL_CHECKPOINTS) != "1",
    )
    return create_app(context, freeze_heap=True)
