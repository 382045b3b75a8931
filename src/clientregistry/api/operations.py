"""What the registry's application carries for its operators: the request observer (request
id, metrics, request log), ``/healthz`` and ``/readyz``, ``/metrics`` when a metrics token is
configured, and ``/docs`` served without a CDN. :func:`install` adds them to the
application."""

from __future__ import annotations

from fastapi import FastAPI

from clientregistry.api import docs, health, metrics
from clientregistry.api.observer import RequestObserver
from clientregistry.settings import Settings


def install(app: FastAPI, settings: Settings) -> None:
    """Add the operators' parts to ``app``."""
    app.add_middleware(
        RequestObserver, count=settings.metrics_enabled, log_requests=settings.access_log
    )
    app.include_router(health.router)
    if settings.metrics_token:
        app.include_router(metrics.router)
    docs.install(app)
