"""The lookup benchmark: ``$match``, PIXm and PDQm search over mutual TLS.

``python bench/lookups.py [--n N] [--data PATH] [--requests R] [--warmup W]`` does, end to end:

1. ``init_data_dir`` a fresh SQLite data directory under ``bench/out/`` (removed at the end
   unless ``--keep``), adds a client system ``bench-reader`` allowed to read identifiers and
   demographics, and issues its certificate;
2. loads the first N Patients of the data set (default ``bench/out/synthetic_100k.ndjson``)
   in process with ``Submitter.submit`` (the real submit path: matching, blocking keys, search
   tokens), ``--batch`` Patients per transaction, each with the internal identifier
   ``http://clientregistry.org/openmrs|<its id>``; prints the load rate;
3. starts ``clientregistry serve`` (one worker; log ``bench/out/lookups_server.log``) and,
   from one keep-alive HTTPS client with the ``bench-reader`` certificate, after W warm-up
   requests of each kind, sends R sequential requests of each kind for Patients drawn at
   random (fixed seed) from the loaded ones:

   * ``POST /fhir/Patient/$match`` with the Patient as in the data set (no internal id);
   * ``GET /fhir/Patient/$ihe-pix?sourceIdentifier=http://clientregistry.org/openmrs|<id>``;
   * ``GET /fhir/Patient?family=<family>&birthdate=<birthDate>``;

4. prints one JSON line (p50/p90/p99/max/mean latency in ms per kind, non-2xx counts, load
   rate, machine load average) and appends it to ``bench/out/lookups_results.jsonl``.

Not a test: run on demand; figures depend on the machine and its load (recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import ssl
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from service import free_port, start_server, wait_ready

from clientregistry.registry.context import RegistryContext
from clientregistry.registry.setup import add_system_to_config, init_data_dir
from clientregistry.registry.submit import Submitter
from clientregistry.security.authority import CertificateAuthority
from clientregistry.settings import ClientSystemConfig, load_settings
from clientregistry.store.db import transaction

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
RESULTS = OUT / "lookups_results.jsonl"
INTERNAL_SYSTEM = "http://clientregistry.org/openmrs"
READER = ClientSystemConfig(
    "bench-reader",
    "Benchmark reader",
    "http://clientregistry.org/bench-reader",
    ("read-identifiers", "read-demographics"),
)
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
TARGETS_MS = {"match": 10.0, "pix": 10.0, "search": 20.0}


def read_patients(path: Path, n: int) -> list[dict[str, Any]]:
    """The first ``n`` Patients of ``path`` (each keeps its ``id`` for the benchmark)."""
    out = []
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                out.append(orjson.loads(line))
                if len(out) == n:
                    break
    if len(out) < n:
        raise SystemExit(f"{path} has {len(out)} Patients; {n} are needed")
    return out


def stored_form(patient: dict[str, Any]) -> dict[str, Any]:
    """The Patient as openmrs submits it: no ``id``, its internal identifier added."""
    out = {k: v for k, v in patient.items() if k != "id"}
    out["identifier"] = [
        *(patient.get("identifier") or []),
        {"system": INTERNAL_SYSTEM, "value": patient["id"]},
    ]
    return out


def load(data_dir: Path, patients: list[dict[str, Any]], batch: int) -> float:
    """Submit every Patient in process, ``batch`` per transaction; the seconds it took."""
    settings = load_settings(data_dir, environ={})
    context = RegistryContext.open(settings)
    submitter = Submitter(context)
    openmrs = settings.systems["openmrs"]
    started = time.perf_counter()
    try:
        for first in range(0, len(patients), batch):
            with transaction(context.sessions) as session:
                for patient in patients[first : first + batch]:
                    submitter.submit(session, stored_form(patient), openmrs)
            done = first + batch
            if done % (batch * 20) == 0:
                elapsed = time.perf_counter() - started
                print(
                    f"  loaded {done:,} in {elapsed:.0f} s ({done / elapsed:,.0f} rec/s)",
                    file=sys.stderr,
                )
    finally:
        context.close()
    return time.perf_counter() - started


def reader_client(data_dir: Path) -> httpx.Client:
    certs = data_dir / "certs"
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    # httpx ignores cert= when verify is a path: the context carries the client certificate
    context.load_cert_chain(
        certs / "clients" / f"{READER.name}.pem", certs / "clients" / f"{READER.name}-key.pem"
    )
    return httpx.Client(
        verify=context,
        timeout=60.0,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
    )


Request = Callable[[httpx.Client, dict[str, Any]], httpx.Response]


def requests_by_kind(base: str) -> dict[str, Request]:
    def match(http: httpx.Client, p: dict[str, Any]) -> httpx.Response:
        body = orjson.dumps({k: v for k, v in p.items() if k != "id"})
        return http.post(f"{base}/fhir/Patient/$match", content=body, headers=FHIR_JSON)

    def pix(http: httpx.Client, p: dict[str, Any]) -> httpx.Response:
        params = {"sourceIdentifier": f"{INTERNAL_SYSTEM}|{p['id']}"}
        return http.get(f"{base}/fhir/Patient/$ihe-pix", params=params, headers=FHIR_JSON)

    def search(http: httpx.Client, p: dict[str, Any]) -> httpx.Response:
        params = {"family": p["name"][0]["family"], "birthdate": p["birthDate"]}
        return http.get(f"{base}/fhir/Patient", params=params, headers=FHIR_JSON)

    return {"match": match, "pix": pix, "search": search}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def measure(
    http: httpx.Client, request: Request, sample: list[dict[str, Any]], warmup: int
) -> dict[str, Any]:
    for p in sample[:warmup]:
        request(http, p).read()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    entries = 0
    for p in sample[warmup:]:
        t0 = time.perf_counter()
        response = request(http, p)
        response.read()
        latencies.append((time.perf_counter() - t0) * 1000)
        statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
        if response.status_code == 200:
            body = response.json()
            entries += len(body.get("entry") or body.get("parameter") or [])
    return {
        "requests": len(latencies),
        "p50_ms": round(percentile(latencies, 0.5), 2),
        "p90_ms": round(percentile(latencies, 0.9), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "max_ms": round(max(latencies), 2),
        "mean_ms": round(statistics.fmean(latencies), 2),
        "statuses": statuses,
        "mean_results": round(entries / max(1, len(latencies)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--data", type=Path, default=OUT / "synthetic_100k.ndjson")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.add_argument(
        "--reuse",
        type=Path,
        help="a data directory kept (--keep) by an earlier run with the same --n and --data: "
        "measure again without loading",
    )
    args = parser.parse_args()

    patients = read_patients(args.data, args.n)
    port = free_port()
    if args.reuse:
        data_dir = args.reuse
        load_seconds = float("nan")
    else:
        data_dir = OUT / f"lookups_data_{args.n}_{os.getpid()}"
        init_data_dir(data_dir, hostnames=["localhost", "127.0.0.1"], port=port)
        add_system_to_config(data_dir, READER)
        settings = load_settings(data_dir, environ={})
        CertificateAuthority.load(settings.certs_dir).issue_client(READER.name)
    server = None
    try:
        if not args.reuse:
            print(f"loading {args.n:,} Patients ...", file=sys.stderr)
            load_seconds = load(data_dir, patients, args.batch)
            print(f"loaded {args.n:,} in {load_seconds:.1f} s", file=sys.stderr)
        rate = args.n / load_seconds

        log_path = OUT / "lookups_server.log"
        server = start_server(data_dir, port, 1, log_path, None)
        base = f"https://127.0.0.1:{port}"
        wait_ready(server, base, data_dir / "certs", 1, log_path)  # connects as openmrs

        rng = random.Random(args.seed)
        usable = [p for p in patients if p.get("name") and p.get("birthDate")]
        sample = rng.sample(usable, min(len(usable), args.requests + args.warmup))
        kinds: dict[str, Any] = {}
        with reader_client(data_dir) as http:
            for kind, request in requests_by_kind(base).items():
                kinds[kind] = measure(http, request, sample, args.warmup)
                print(f"  {kind}: {kinds[kind]}", file=sys.stderr)
    finally:
        if server is not None:
            server.stop()
        if not args.keep and not args.reuse:
            shutil.rmtree(data_dir, ignore_errors=True)

    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "database": "sqlite",
        "records": args.n,
        "data": args.data.name,
        "load_seconds": round(load_seconds, 1),
        "load_records_per_second": round(rate, 1),
        "targets_ms": TARGETS_MS,
        **kinds,
        "meets_targets": all(kinds[k]["p50_ms"] <= t for k, t in TARGETS_MS.items()),
        "loadavg": os.getloadavg(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    line = json.dumps(result)
    print(line)
    with RESULTS.open("a") as fh:
        fh.write(line + "\n")


if __name__ == "__main__":
    main()
