"""What the tamper-evident audit chain and the ATNA outbox cost a submission:
``python bench/audit_chain.py [--n 2000] [--rounds 3] [--database-url postgresql://…]``.

Submits ``n`` synthetic Patients, one transaction each, in process (``Submitter.submit``, the
use case the FHIR routes call, with its audit event), to a fresh registry per variant and
round, variants interleaved round by round:

* ``off``: the chain switched off (its functions replaced by no-ops: events are inserted
  without ``chain_seq``/``chain_hash``, as before this change);
* ``chain``: every event linked into the hash chain (on SQLite the head row read and updated
  in each submission's transaction; on PostgreSQL one statement that moves the head and
  inserts the event, the server computing the hash);
* ``chain+outbox``: the same, with the audit forwarder (``AtnaSenderProcess``, the server's)
  delivering the events meanwhile over TLS to a local sink that reads and discards (it reads
  the new events and commits its cursor beside the submissions).

Prints, per submission (medians of the rounds): wall-clock milliseconds, CPU milliseconds of
the submitting process (the steadier figure on a shared machine), and CPU milliseconds the
forwarder process spent delivering (measured until the backlog is empty).
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import random
import socket
import ssl
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from clientregistry.registry import audit as audit_module
from clientregistry.registry.atna_sender import AtnaSenderProcess
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.setup import init_data_dir
from clientregistry.registry.submit import Submitter
from clientregistry.security.certificates import (
    create_ca,
    issue_server_cert,
    write_key,
    write_pem,
)
from clientregistry.settings import load_settings
from clientregistry.store import audit_chain
from clientregistry.store.db import transaction
from clientregistry.store.driver import DriverInsert
from clientregistry.store.models import AuditEvent

FAMILIES = ["Nakato", "Okello", "Achieng", "Mugisha", "Atieno", "Kato", "Namubiru", "Odhiambo"]
GIVEN = ["Grace", "Peter", "Mary", "John", "Aisha", "Moses", "Ruth", "Daniel"]


def patient(rng: random.Random, system: str, n: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": system, "value": f"b-{n}"}],
        "name": [{"family": rng.choice(FAMILIES) + str(n % 997), "given": [rng.choice(GIVEN)]}],
        "birthDate": f"{rng.randint(1940, 2020)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "gender": rng.choice(["female", "male"]),
        "telecom": [{"system": "phone", "value": f"07{rng.randint(10**7, 10**8 - 1)}"}],
    }


@contextlib.contextmanager
def chain_off() -> Iterator[None]:
    """Events inserted without links, as before the chain."""
    plain = DriverInsert(insert(AuditEvent))
    saved = (audit_module.insert_linked, audit_chain.link_event)
    audit_module.insert_linked = plain.execute  # type: ignore[assignment]
    audit_chain.link_event = lambda connection, event: None  # type: ignore[assignment]
    try:
        yield
    finally:
        audit_module.insert_linked, audit_chain.link_event = saved


def _sink(directory: str, ready: Any) -> None:
    """A TLS server on 127.0.0.1 that reads and discards (in a process of its own, so that it
    takes no time from the submitting process)."""
    base = Path(directory)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(base / "sink.pem", base / "sink-key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    ready.put(listener.getsockname()[1])

    def serve(conn: socket.socket) -> None:
        with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True) as tls:
            while tls.recv(65536):
                pass

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


@contextlib.contextmanager
def tls_sink(directory: Path) -> Iterator[tuple[int, Path]]:
    """Start :func:`_sink`: (its port, its CA file)."""
    ca_key, ca = create_ca("bench sink CA")
    key, cert = issue_server_cert(ca_key, ca, ["localhost"], ["127.0.0.1"])
    write_pem(directory / "sink-ca.pem", ca)
    write_pem(directory / "sink.pem", cert)
    write_key(directory / "sink-key.pem", key)
    spawn = multiprocessing.get_context("spawn")
    ready = spawn.Queue()
    process = spawn.Process(target=_sink, args=(str(directory), ready), daemon=True)
    process.start()
    try:
        yield ready.get(timeout=60), directory / "sink-ca.pem"
    finally:
        process.kill()
        process.join()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_variant(variant: str, n: int, database_url: str, seed: int) -> tuple[float, float, float]:
    """Per submission, for one variant on a fresh registry: wall-clock milliseconds, CPU
    milliseconds of the submitting process, CPU milliseconds of the forwarder process."""
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp, contextlib.ExitStack() as stack:
        data_dir = Path(tmp) / "data"
        url = database_url
        if url:
            url = fresh_postgres(url, stack)
        init_data_dir(data_dir, hostnames=[], database_url=url)
        if variant == "chain+outbox":
            port, ca_file = stack.enter_context(tls_sink(Path(tmp)))
            config = data_dir / "config.toml"
            text = config.read_text(encoding="utf-8").replace(
                'host = ""\nport = 6514\n',
                f'host = "localhost"\nport = {port}\nca_file = "{ca_file}"\n',
            )
            config.write_text(text, encoding="utf-8")
        context = RegistryContext.open(load_settings(data_dir, environ={}))
        stack.callback(context.close)
        if variant == "off":
            stack.enter_context(chain_off())
        if variant == "chain+outbox":
            sender = AtnaSenderProcess(data_dir)
            sender.start()
            stack.callback(sender.stop)
            deadline = time.monotonic() + 120
            while not delivering(context) and time.monotonic() < deadline:
                time.sleep(0.1)  # (it starts, imports, and registers its cursor)
            time.sleep(1.0)
        systems = list(context.settings.systems.values())
        rng = random.Random(seed)
        submitter = Submitter(context)
        forwarder_cpu = _cpu_seconds(sender.pid or 0) if variant == "chain+outbox" else 0.0
        start, cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            config = systems[i % len(systems)]
            with transaction(context.sessions) as session:
                submitter.submit(session, patient(rng, config.internal_id_system, i), config)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        if variant == "chain+outbox":
            deadline = time.monotonic() + 120
            while backlog(context) and time.monotonic() < deadline:
                time.sleep(0.1)
            forwarder_cpu = _cpu_seconds(sender.pid or 0) - forwarder_cpu
    return elapsed / n * 1000, cpu / n * 1000, forwarder_cpu / n * 1000


def delivering(context: RegistryContext) -> bool:
    from sqlalchemy import select

    from clientregistry.store.models import AuditDelivery

    with context.sessions() as session:
        return session.scalar(select(AuditDelivery.seq)) is not None


def backlog(context: RegistryContext) -> int:
    from sqlalchemy import select

    from clientregistry.store.models import AuditChainHead, AuditDelivery

    with context.sessions() as session:
        head = session.scalar(select(AuditChainHead.seq)) or 0
        done = session.scalar(select(AuditDelivery.seq)) or 0
    return int(head) - int(done)


def fresh_postgres(base_url: str, stack: contextlib.ExitStack) -> str:
    import uuid

    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(base_url)
    name = f"bench_audit_{uuid.uuid4().hex[:10]}"
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    stack.callback(drop)
    return base.set(database=name).render_as_string(hide_password=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", default="", help="PostgreSQL server (default SQLite)")
    parser.add_argument("--variants", default="off,chain,chain+outbox")
    args = parser.parse_args()
    variants = args.variants.split(",")
    results: dict[str, list[tuple[float, float, float]]] = {v: [] for v in variants}
    for round_number in range(args.rounds):
        for variant in variants:
            measured = run_variant(variant, args.n, args.database_url, seed=round_number)
            results[variant].append(measured)
            wall, cpu, forwarder = measured
            print(
                f"round {round_number + 1} {variant}: {wall:.3f} ms wall, {cpu:.3f} ms CPU,"
                f" forwarder {forwarder:.3f} ms CPU per submission",
                flush=True,
            )
    print(f"\nmedians of {args.rounds} rounds, per submission")
    print("| variant | wall ms | CPU ms (submitting) | CPU ms (forwarder) |")
    print("|---|---|---|---|")
    for variant in variants:
        wall, cpu, forwarder = (statistics.median(m[k] for m in results[variant]) for k in range(3))
        print(f"| {variant} | {wall:.3f} | {cpu:.3f} | {forwarder:.3f} |")


if __name__ == "__main__":
    main()
