"""Concurrent submissions of one person to a server with several worker processes must end in
ONE golden record (PostgreSQL: advisory locks on the blocking keys serialise them; SQLite: the
processes queue at the write gate for SQLite's single writer)."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from clientregistry.store.models import GoldenRecord, SourceRecord

THREADS = 8
HEADERS = {"Content-Type": "application/fhir+json"}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def busy_server(request: pytest.FixtureRequest, launch_server):
    """A server with three worker processes."""
    return launch_server(request.param, workers=3)


@pytest.mark.parametrize("attempt", [1, 2])
def test_one_person_submitted_at_once_gets_one_golden_record(busy_server, fhir, attempt) -> None:
    person = fhir.person()
    patients = [fhir.patient("openmrs", demographics=person) for _ in range(THREADS)]
    clients = [busy_server.new_client("openmrs") for _ in range(THREADS)]
    for client in clients:  # open every TLS connection before the race starts
        assert client.get("/fhir/metadata").status_code == 200
    barrier = threading.Barrier(THREADS, timeout=30)

    def submit(index: int):
        barrier.wait()
        return clients[index].post(
            "/fhir/Patient", content=json.dumps(patients[index]), headers=HEADERS
        )

    with ThreadPoolExecutor(THREADS) as pool:
        responses = list(pool.map(submit, range(THREADS)))

    assert [r.status_code for r in responses] == [201] * THREADS, [r.text for r in responses]
    ids = [fhir.ids(r) for r in responses]
    records = {record for record, _ in ids}
    cruids = {golden for _, golden in ids}
    assert len(records) == THREADS
    assert len(cruids) == 1, f"one person got {len(cruids)} golden records"
    [golden_id] = cruids

    golden = busy_server.read("openmrs", golden_id).json()
    assert set(fhir.links(golden, "seealso")) == {f"Patient/{r}" for r in records}

    engine = busy_server.engine()
    try:
        with engine.connect() as connection:
            stored = connection.execute(
                select(SourceRecord.id, SourceRecord.golden_id).where(
                    SourceRecord.id.in_(sorted(records))
                )
            ).all()
            goldens = connection.scalars(
                select(GoldenRecord.id).where(GoldenRecord.id.in_({g for _, g in stored}))
            ).all()
    finally:
        engine.dispose()
    assert {golden for _, golden in stored} == {golden_id}
    assert goldens == [golden_id]
