"""Reads while other clients write: every read must succeed."""

from __future__ import annotations

import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

HEADERS = {"Content-Type": "application/fhir+json"}
WRITERS = 3
WRITES_EACH = 20
READERS = 3


def test_reads_succeed_while_others_write(registry_server, fhir, request) -> None:
    created = registry_server.submit("openmrs", fhir.patient("openmrs"))
    record_id, golden_id = fhir.ids(created)
    statuses: Counter[tuple[str, int]] = Counter()
    lock = threading.Lock()
    writing = threading.Event()
    writing.set()

    def count(kind: str, status: int) -> None:
        with lock:
            statuses[kind, status] += 1

    def reader(system: str, reference: str) -> None:
        client = registry_server.new_client(system)
        while writing.is_set():
            count("read", client.get(f"/fhir/Patient/{reference}").status_code)

    def writer() -> None:
        client = registry_server.new_client("dhis2")
        for _ in range(WRITES_EACH):
            body = json.dumps(fhir.patient("dhis2"))
            count("write", client.post("/fhir/Patient", content=body, headers=HEADERS).status_code)

    with ThreadPoolExecutor(WRITERS + READERS) as pool:
        readers = [
            pool.submit(reader, *target)
            for target in [("hie", record_id), ("openmrs", golden_id), ("hie", golden_id)]
        ]
        writers = [pool.submit(writer) for _ in range(WRITERS)]
        try:
            for future in writers:
                future.result()
        finally:
            writing.clear()
        for future in readers:
            future.result()

    assert statuses["write", 201] == WRITERS * WRITES_EACH, statuses
    reads = sum(n for (kind, _), n in statuses.items() if kind == "read")
    assert reads >= READERS, statuses
    assert statuses["read", 200] == reads, statuses
