"""Prometheus's view of the registry: what a scrape shows and where.

A scrape shows what the workers counted (:mod:`clientregistry.metrics`: requests, latency,
submissions, database connections; with several workers, added up from the files of
prometheus-client's multiprocess mode) and what the database holds when asked
(:class:`DatabaseCollector`: the open review-queue items by queue, the audit events
recorded so far, the audit backlog — events not yet delivered to each audit repository
(``clientregistry_audit_backlog{repository}``) — and whether the database answered).

Where, as configured (``[metrics]``):

* ``port`` — a port of its own, plain HTTP on ``host`` (``127.0.0.1`` by default: a
  Prometheus on this machine, or behind the operator's own front), served by the server's
  main process (:func:`start_metrics_port`);
* ``token`` — ``GET /metrics`` on the registry's own port, over its TLS, for
  ``Authorization: Bearer <token>`` (401 otherwise; the route is absent without a token).
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterable, Iterator
from threading import Thread
from typing import Any
from wsgiref.simple_server import WSGIServer

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, start_http_server
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from clientregistry.errors import ClientRegistryError
from clientregistry.settings import Settings
from clientregistry.store.db import create_engine_for, translate_errors
from clientregistry.store.enums import IssueStatus
from clientregistry.store.models import AuditChainHead, AuditDelivery, AuditEvent, MatchIssue

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


class DatabaseCollector(Collector):
    """Figures read from the database at each scrape (two small indexed queries)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def describe(self) -> Iterable[Metric]:
        return []  # (not collected when registered)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "clientregistry_database_up", "1 when the database answered the scrape's queries."
        )
        queue = GaugeMetricFamily(
            "clientregistry_review_queue_items",
            "Open review-queue items, by queue (potential, conflict).",
            labels=["queue"],
        )
        audit = GaugeMetricFamily(
            "clientregistry_audit_events", "Audit events recorded so far (the highest event id)."
        )
        backlog = GaugeMetricFamily(
            "clientregistry_audit_backlog",
            "Audit events not yet delivered to the audit repository (ATNA), by repository.",
            labels=["repository"],
        )
        try:
            with translate_errors(), self.engine.connect() as connection:
                open_items = connection.execute(
                    select(MatchIssue.kind, func.count())
                    .where(MatchIssue.status == IssueStatus.OPEN)
                    .group_by(MatchIssue.kind)
                ).all()
                recorded = connection.scalar(select(func.max(AuditEvent.id))) or 0
                head = connection.scalar(select(AuditChainHead.seq)) or 0
                delivered = connection.execute(
                    select(AuditDelivery.repository, AuditDelivery.seq)
                ).all()
        except ClientRegistryError as error:
            log.warning("metrics: the database did not answer: %s", error)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        counts = {"potential": 0, "conflict": 0} | {str(k): int(n) for k, n in open_items}
        for kind, count in sorted(counts.items()):
            queue.add_metric([kind], count)
        audit.add_metric([], int(recorded))
        for repository, seq in delivered:
            backlog.add_metric([repository], max(int(head) - int(seq), 0))
        yield from (up, queue, audit, backlog)


_SCRAPE_REGISTRIES: dict[int, CollectorRegistry] = {}


def scrape_registry(engine: Engine) -> CollectorRegistry:
    """What a scrape reads: every worker's counts (the multiprocess files, when the server
    runs several workers; else this process's) and the database's figures."""
    known = _SCRAPE_REGISTRIES.get(id(engine))
    if known is not None:
        return known
    if os.environ.get(MULTIPROCESS_DIR):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    registry.register(DatabaseCollector(engine))
    _SCRAPE_REGISTRIES[id(engine)] = registry
    return registry


def start_metrics_port(settings: Settings) -> tuple[WSGIServer, Thread, Engine] | None:
    """Serve the metrics on ``metrics.port`` (a daemon thread of this process), when set."""
    if not settings.metrics_port:
        return None
    engine = create_engine_for(settings.database, pool_size=1, max_overflow=1)
    try:
        server, thread = start_http_server(
            settings.metrics_port, settings.metrics_host, registry=scrape_registry(engine)
        )
    except OSError as error:
        engine.dispose()
        raise ClientRegistryError(
            f"metrics.port {settings.metrics_port} on {settings.metrics_host}: {error.strerror}"
        ) from None
    return server, thread, engine


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """The metrics, for the configured bearer token."""
    context: Any = request.app.state.context
    token: str = context.settings.metrics_token
    given = request.headers.get("authorization", "")
    scheme, _, credentials = given.partition(" ")
    if not (
        token
        and scheme.lower() == "bearer"
        and secrets.compare_digest(credentials.strip().encode(), token.encode())
    ):
        return Response(
            "a metrics token is required\n",
            status_code=401,
            media_type="text/plain",
            headers={"WWW-Authenticate": "Bearer"},
        )
    body = await run_in_threadpool(generate_latest, scrape_registry(context.engine))
    return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)
