"""What the registry counts for Prometheus (prometheus-client), wherever it happens.

* ``clientregistry_http_requests_total{method, route, status}`` and
  ``clientregistry_http_request_duration_seconds{method, route}`` (a histogram): every
  request, by its route's path template (never the path itself, which may hold identifiers);
* ``clientregistry_submissions_total{outcome}``: Patients submitted, by how matching ended
  (``auto``: linked to a person; ``potential``: awaiting review; ``conflict``; ``new``: a
  person of its own);
* ``clientregistry_db_connections_in_use`` and ``clientregistry_db_connections_pooled``: the
  database connections the workers hold and keep.

The review queues, the audit trail and the audit backlog (events not yet delivered to the
audit repository, ``clientregistry_audit_backlog{repository}``) are counted from the
database when scraped (:mod:`clientregistry.api.metrics`), whichever process sends them.
Under ``clientregistry serve`` with several workers each worker writes its counts to files
that a scrape adds up (prometheus-client's multiprocess mode: ``serve`` sets
``PROMETHEUS_MULTIPROC_DIR`` before the workers start).
"""

from __future__ import annotations

import atexit
import os
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, multiprocess
from sqlalchemy import Engine, event

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Seconds: a submission takes a few milliseconds, a large Bundle seconds."""

REQUESTS = Counter(
    "clientregistry_http_requests",
    "HTTP requests served, by method, route (path template) and status.",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "clientregistry_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response, by method and route.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
SUBMISSIONS = Counter(
    "clientregistry_submissions",
    "Patients submitted, by how matching ended: auto, potential, conflict or new.",
    ["outcome"],
)
CONNECTIONS_IN_USE = Gauge(
    "clientregistry_db_connections_in_use",
    "Database connections checked out of the workers' pools.",
    multiprocess_mode="livesum",
)
CONNECTIONS_POOLED = Gauge(
    "clientregistry_db_connections_pooled",
    "Database connections open in the workers' pools (in use or idle).",
    multiprocess_mode="livesum",
)

if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # This process's live gauges leave the sums when it ends.
    atexit.register(multiprocess.mark_process_dead, os.getpid())

_OUTCOMES = {"auto": "auto", "potential": "potential", "conflict": "conflict", "none": "new"}


def count_submission(status: str) -> None:
    """Count one submission whose match status is ``status`` (a ``MatchStatus`` value)."""
    SUBMISSIONS.labels(_OUTCOMES.get(status, status)).inc()


def watch_pool(engine: Engine) -> None:
    """Keep the connection gauges up to date with ``engine``'s pool."""

    @event.listens_for(engine, "connect")
    def _opened(_dbapi: Any, _record: Any) -> None:
        CONNECTIONS_POOLED.inc()

    @event.listens_for(engine, "close")
    def _closed(_dbapi: Any, _record: Any) -> None:
        CONNECTIONS_POOLED.dec()

    @event.listens_for(engine, "checkout")
    def _out(_dbapi: Any, _record: Any, _proxy: Any) -> None:
        CONNECTIONS_IN_USE.inc()

    @event.listens_for(engine, "checkin")
    def _in(_dbapi: Any, _record: Any) -> None:
        CONNECTIONS_IN_USE.dec()
