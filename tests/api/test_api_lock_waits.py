"""A submission that must wait for a lock (PostgreSQL) waits off the worker's event loop, so
the worker keeps serving everything else meanwhile: here a transaction Bundle's registry-wide
lock, held from outside, must not freeze a one-worker server."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import text

from clientregistry.store.blocking_index import key_hashes
from clientregistry.store.locks import REGISTRY_KEY

HEADERS = {"Content-Type": "application/fhir+json"}


def test_a_submission_waiting_for_a_lock_does_not_stop_the_worker(launch_server, fhir) -> None:
    server = launch_server("postgresql", workers=1)
    submitter = server.new_client("openmrs")
    reader = server.new_client("openmrs")
    assert reader.get("/fhir/metadata").status_code == 200
    engine = server.engine()
    try:
        with engine.connect() as bundle, ThreadPoolExecutor(1) as pool:
            # what a large transaction Bundle holds until it commits
            registry = key_hashes([REGISTRY_KEY])[0]
            bundle.execute(text("SELECT pg_advisory_xact_lock(:h)"), {"h": registry})
            body = json.dumps(fhir.patient("openmrs"))
            pending = pool.submit(submitter.post, "/fhir/Patient", content=body, headers=HEADERS)
            time.sleep(0.5)
            assert not pending.done()  # it waits for the lock ...
            started = time.monotonic()
            answer = reader.get("/fhir/metadata", timeout=5)  # ... and the worker serves on
            assert answer.status_code == 200
            assert time.monotonic() - started < 2
            assert not pending.done()
            bundle.rollback()  # the Bundle ends: the submission goes ahead
            assert pending.result(timeout=30).status_code == 201
    finally:
        engine.dispose()
