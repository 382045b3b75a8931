"""The service benchmark: submissions over mutual TLS to a running registry.

``python bench/service.py --database sqlite|postgresql [--load N] [--submit M] [--clients C]
[--workers K]`` does, end to end:

1. ``clientregistry init`` a fresh data directory under ``bench/out/`` (PostgreSQL: a fresh
   database ``cr_bench_<pid>`` on ``--pg-url``, dropped at the end);
2. starts ``clientregistry serve`` as a subprocess (log: ``bench/out/service_<db>.log``);
3. loads the first N Patients of the data set as Bundles (``POST /fhir``, ``--batch-size``
   entries each, ``--load-clients`` concurrent connections, default two per worker) - the real
   submit path; ``batch`` (default) commits each entry on its own, ``--load-bundle
   transaction`` commits each Bundle once (fewer fsyncs; on PostgreSQL it holds the advisory
   locks of every entry until the end, which concurrent Bundles can exhaust) - and reports the
   load rate;
4. the measured phases, one per ``--rate`` (default one, closed loop): M Patients each, never
   preloaded, as single ``POST /fhir/Patient`` requests from C threads, each with its own
   keep-alive ``httpx.Client`` (HTTP/1.1, client certificate of ``openmrs``). Each client
   opens its connection first (``GET /fhir/metadata``, not measured), then all start
   together; the latency of every request is taken with ``time.perf_counter``. Closed loop
   (``--rate 0``) measures the most the server can do: every client sends again as soon as it
   has its answer, so by Little's law the latency is C / throughput (8 clients at 200
   requests/s wait 40 ms on average) and says little about the server. Open loop
   (``--rate R``) sends request ``i`` at ``start + i / R`` and counts latency from then: what
   a client meets at that load, queueing included;
5. prints one JSON line (p50/p90/p99/max latency, requests/s, errors = any non-2xx, peak RSS of
   the server processes from ``/proc/<pid>/status`` VmHWM, CPU use) and appends it to
   ``bench/out/service_results.jsonl``. To explain slow requests, each line also holds the
   20 slowest with their due times (``slowest``, to match against the server's and the
   database's logs), the client's own full garbage collections (``client_gc_pauses``), a CPU
   probe (``cpu_probe_ms``: the machine's speed drifts) and the machine's dirty pages at the
   start (``dirty_kb_at_start``); ``--sync`` flushes those after the load.

The data set defaults to ``bench/out/synthetic_<N+M>.ndjson`` (built with ``bench/datasets.py``
when missing), so the submitted records are a realistic mix of new people and duplicates of
preloaded ones. Each Patient gets the caller's internal identifier
``http://clientregistry.org/openmrs|<its id>`` (its other identifiers are kept; the ``id`` is
dropped, as a create carries none).

PostgreSQL servers running without autovacuum (``SHOW autovacuum`` is recorded) never gather
planner statistics, and the candidate query then costs several times more; the script stands
in for auto-analyze by running ``ANALYZE`` whenever the record count grew by 10% (at least
1,000) and once before the measured phase (``--no-analyze`` to leave statistics alone).

``--profile`` runs a single-worker server under cProfile (``bench/out/service_<db>.prof``).
Not a test: run on demand; figures depend on the machine and its load (recorded).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
RESULTS = OUT / "service_results.jsonl"
INTERNAL_SYSTEM = "http://clientregistry.org/openmrs"
CLIENT = "openmrs"
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
TARGETS = {"p50_ms": 10.0, "p99_ms": 50.0, "requests_per_second": 200.0}


# --------------------------------------------------------------------------- data


def synthetic_name(n_records: int) -> str:
    size = f"{n_records // 1000}k" if n_records % 1000 == 0 else str(n_records)
    return f"synthetic_{size}"


def ensure_dataset(path: Path | None, needed: int) -> Path:
    """The data set to use: ``path``, or ``synthetic_<needed>`` (generated if missing)."""
    if path is not None:
        return path
    path = OUT / f"{synthetic_name(needed)}.ndjson"
    if not path.exists():
        print(f"generating {path.name} ...", file=sys.stderr)
        subprocess.run(
            [sys.executable, str(HERE / "datasets.py"), "synthetic", "--n", str(needed)],
            check=True,
        )
    return path


def read_patients(path: Path, needed: int) -> list[dict[str, Any]]:
    """All Patients of ``path`` with the caller's internal identifier added."""
    patients = []
    with path.open("rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            patient = orjson.loads(line)
            record_id = patient.pop("id")
            identifiers = list(patient.get("identifier") or [])
            identifiers.append({"system": INTERNAL_SYSTEM, "value": record_id})
            patient["identifier"] = identifiers
            patients.append(patient)
    if len(patients) < needed:
        raise SystemExit(f"{path} has {len(patients)} Patients; {needed} are needed")
    return patients


def bundle_body(patients: list[dict[str, Any]], kind: str) -> bytes:
    entries = [{"resource": p, "request": {"method": "POST", "url": "Patient"}} for p in patients]
    return orjson.dumps({"resourceType": "Bundle", "type": kind, "entry": entries})


# --------------------------------------------------------------------------- processes


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def descendants(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc/<pid>/task/*/children)."""
    found = [pid]
    for current in found:
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            found.extend(int(c) for c in children if int(c) not in found)
    return found


def proc_status(pid: int, key: str) -> int | None:
    """A ``kB`` field of /proc/<pid>/status (VmHWM, VmRSS), in kB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` (not their reaped children)."""
    total = 0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    log: Any

    @property
    def pids(self) -> list[int]:
        return descendants(self.process.pid)

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.terminate()
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait()
        self.log.close()
        return self.process.returncode


def start_server(
    data_dir: Path, port: int, workers: int, log_path: Path, profile: Path | None
) -> Server:
    serve = ["-m", "clientregistry.cli", "serve", "--data-dir", str(data_dir)]
    serve += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    prefix = [sys.executable] + (["-m", "cProfile", "-o", str(profile)] if profile else [])
    log = log_path.open("wb")
    process = subprocess.Popen(
        prefix + serve, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    return Server(process, log)


def client(certs: Path, timeout: float = 60.0) -> httpx.Client:
    pem = certs / "clients" / f"{CLIENT}.pem"
    key = certs / "clients" / f"{CLIENT}-key.pem"
    # httpx 0.28 ignores cert= when verify is a path: build the context ourselves
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    context.load_cert_chain(pem, key)
    return httpx.Client(
        http1=True,
        http2=False,
        verify=context,
        timeout=timeout,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
    )


def wait_ready(
    server: Server, base: str, certs: Path, workers: int, log_path: Path, seconds: float = 120.0
) -> None:
    """Wait until every worker has started (else keep-alive connections all land on the first
    one) and the server answers."""
    deadline = time.monotonic() + seconds
    with client(certs, timeout=5.0) as http:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise SystemExit(f"the server exited with status {server.process.returncode}")
            started = log_path.read_text(errors="replace").count("Application startup complete")
            try:
                if started >= workers and http.get(f"{base}/fhir/metadata").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
    raise SystemExit(f"the server did not answer within {seconds:.0f} s")


# --------------------------------------------------------------------------- PostgreSQL


def pg_admin(url: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


def pg_autovacuum(url: str) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SHOW autovacuum").fetchone()
    return str(row[0]) if row else "?"


class Analyzer:
    """Stands in for autovacuum's auto-analyze where the server runs without autovacuum:
    ``ANALYZE`` whenever the number of records grew by 10% (at least 1,000) since the last."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.last = 0
        self.runs = 0
        self.seconds = 0.0
        self.lock = threading.Lock()

    def maybe(self, records: int, force: bool = False) -> None:
        if self.url is None:
            return
        with self.lock:
            if not force and records < max(self.last + 1000, int(self.last * 1.1)):
                return
            self.last = records
            started = time.perf_counter()
            pg_admin(self.url, "ANALYZE")
            self.seconds += time.perf_counter() - started
            self.runs += 1


def pg_database_url(admin_url: str, name: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


# --------------------------------------------------------------------------- phases


@dataclass
class LoadResult:
    seconds: float = 0.0
    entries: int = 0
    entry_errors: int = 0
    http_errors: int = 0
    statuses: Counter[str] = field(default_factory=Counter)


def load(
    base: str,
    certs: Path,
    patients: list[dict[str, Any]],
    batch_size: int,
    clients: int,
    kind: str,
    analyzer: Analyzer,
) -> LoadResult:
    """POST the Patients as batch Bundles from ``clients`` threads; count entry outcomes."""
    batches = [patients[i : i + batch_size] for i in range(0, len(patients), batch_size)]
    bodies = iter([bundle_body(b, kind) for b in batches])
    lock = threading.Lock()
    result = LoadResult()
    done = [0]
    started = time.perf_counter()

    def worker() -> None:
        with client(certs, timeout=600.0) as http:
            while True:
                with lock:
                    body = next(bodies, None)
                if body is None:
                    return
                response = http.post(f"{base}/fhir", content=body, headers=FHIR_JSON)
                with lock:
                    if response.status_code != 200:
                        result.http_errors += 1
                        result.statuses[f"http {response.status_code}"] += 1
                        continue
                    for entry in response.json().get("entry", []):
                        status = entry.get("response", {}).get("status", "?")
                        result.statuses[status] += 1
                        result.entries += 1
                        if status[:1] != "2":
                            result.entry_errors += 1
                    done[0] += 1
                    entries = result.entries
                    if done[0] % 20 == 0:
                        elapsed = time.perf_counter() - started
                        print(
                            f"  loaded {result.entries:,} in {elapsed:.0f} s "
                            f"({result.entries / elapsed:,.0f} rec/s)",
                            file=sys.stderr,
                        )
                analyzer.maybe(entries)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.seconds = time.perf_counter() - started
    return result


@dataclass
class Sample:
    latency: float
    status: int
    headers_ok: bool
    due: float = 0.0
    """When the request was due (open loop) or sent (closed loop), as ``time.time()``."""


def measure(
    base: str, certs: Path, patients: list[dict[str, Any]], clients: int, rate: float = 0.0
) -> tuple[list[Sample], float, list[str]]:
    """Single POSTs from ``clients`` keep-alive clients; (samples, wall seconds, failures).

    ``rate`` 0: closed loop, each client sends its next request as soon as it has the answer
    (the most the server can do; by Little's law the latency is then clients / throughput).
    ``rate`` > 0: open loop, request ``i`` is due at ``start + i / rate``; a client waits for
    its due time, and latency counts from the due time, so time spent waiting for a free
    client when the server falls behind is counted too (no coordinated omission)."""
    bodies = [orjson.dumps(p) for p in patients]
    next_index = itertools.count()
    lock = threading.Lock()
    samples: list[Sample] = []
    failures: list[str] = []
    barrier = threading.Barrier(clients + 1)
    url = f"{base}/fhir/Patient"
    started_at = [0.0]

    def worker() -> None:
        mine: list[Sample] = []
        with client(certs) as http:
            http.get(f"{base}/fhir/metadata").raise_for_status()  # TLS handshake, not measured
            barrier.wait()
            while True:
                with lock:
                    i = next(next_index)
                if i >= len(bodies):
                    break
                t0 = time.perf_counter()
                if rate > 0:
                    due = started_at[0] + i / rate
                    if due > t0:
                        time.sleep(due - t0)
                    t0 = due
                try:
                    response = http.post(url, content=bodies[i], headers=FHIR_JSON)
                    response.read()
                    status = response.status_code
                except httpx.HTTPError as error:
                    status = 0
                    with lock:
                        failures.append(f"{type(error).__name__}: {error}")
                latency = time.perf_counter() - t0
                ok = status == 0 or (
                    "Location" in response.headers and "LocationCRUID" in response.headers
                )
                if not 200 <= status < 300 and status != 0 and len(failures) < 20:
                    with lock:
                        failures.append(f"{status}: {response.text[:300]}")
                due_wall = time.time() - (time.perf_counter() - t0)
                mine.append(Sample(latency, status, ok, due_wall))
        with lock:
            samples.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    started = started_at[0] = time.perf_counter() + 0.01
    barrier.wait()
    for t in threads:
        t.join()
    return samples, time.perf_counter() - started, failures


class GcPauses:
    """Full collections of this (the client's) process, as ``[time (UTC), ms]``: a pause
    here delays every client thread at once and would count as the server's latency."""

    def __init__(self) -> None:
        self.pauses: list[list[Any]] = []
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        now = time.time()
        stamp = time.strftime("%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}"
        self.pauses.append([stamp, round(took * 1000, 1)])

    def take(self) -> list[list[Any]]:
        taken, self.pauses = self.pauses, []
        return taken


def meminfo_kb(key: str) -> int | None:
    """A ``/proc/meminfo`` figure in kB (``Dirty``: written, not yet on disk); None off Linux."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == key:
                return int(value.split()[0])
    except OSError:
        return None
    return None


def cpu_probe(iterations: int = 3_000_000) -> float:
    """Seconds a fixed loop takes just before a phase: this machine's speed drifts by up to
    ~40% (a slow spell shows as a longer probe and more server CPU per request)."""
    started = time.perf_counter()
    total = 0
    for i in range(iterations):
        total += i
    return time.perf_counter() - started


def slowest(samples: list[Sample], n: int = 20) -> list[list[Any]]:
    """The ``n`` slowest requests as ``[due time (UTC, ms), latency ms]``, in time order: to
    match against the server's and the database's logs."""
    worst = sorted(samples, key=lambda s: -s.latency)[:n]
    return [
        [
            time.strftime("%H:%M:%S", time.gmtime(s.due)) + f".{int(s.due % 1 * 1000):03d}",
            round(s.latency * 1000, 1),
        ]
        for s in sorted(worst, key=lambda s: s.due)
    ]


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(p / 100 * len(sorted_values) + 0.5 - 1e-9)))
    return sorted_values[rank - 1]


def reset_peak_rss(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--load", type=int, default=100_000, help="Patients preloaded")
    parser.add_argument("--submit", type=int, default=2000, help="Patients in the measured phase")
    parser.add_argument("--clients", type=int, default=8, help="concurrent measured clients")
    parser.add_argument("--workers", type=int, help="server workers (default 2; 1 with --profile)")
    parser.add_argument("--batch-size", type=int, default=250, help="entries per load Bundle")
    parser.add_argument(
        "--load-bundle",
        choices=("batch", "transaction"),
        default="batch",
        help="Bundle type for loading: batch (one transaction per entry) or transaction",
    )
    parser.add_argument("--load-clients", type=int, help="concurrent loaders (default 2×workers)")
    parser.add_argument("--data", type=Path, help="Patient NDJSON (default synthetic_<N+M>)")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("CR_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"),
        help="PostgreSQL server to create the benchmark database on (via this database)",
    )
    parser.add_argument(
        "--sync",
        action="store_true",
        help="flush the machine's dirty pages (sync) after the load, before the phases",
    )
    parser.add_argument(
        "--no-analyze",
        action="store_true",
        help="PostgreSQL without autovacuum: do not ANALYZE as auto-analyze would",
    )
    parser.add_argument(
        "--rate",
        type=float,
        action="append",
        help="a measured phase at this many requests/s (open loop); 0 = closed loop (the "
        "default); repeat for several phases, each with --submit new Patients",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the server (1 worker)")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args(argv)
    workers = args.workers or (1 if args.profile else 3 if args.database == "sqlite" else 2)
    if args.profile and workers != 1:
        parser.error("--profile needs --workers 1 (cProfile sees only the main process)")
    load_clients = args.load_clients or 2 * workers

    OUT.mkdir(parents=True, exist_ok=True)
    rates = args.rate or [0.0]
    needed = args.load + args.submit * len(rates)
    data = ensure_dataset(args.data, needed)
    patients = read_patients(data, needed)
    gc_pauses = GcPauses()
    preload = patients[: args.load]
    phases = [
        patients[args.load + n * args.submit : args.load + (n + 1) * args.submit]
        for n in range(len(rates))
    ]

    data_dir = Path(tempfile.mkdtemp(prefix=f"cr_bench_{args.database}_", dir=OUT))
    shutil.rmtree(data_dir)  # init wants to create it
    pg_name = f"cr_bench_{os.getpid()}"
    database_url = ""
    autovacuum = None
    analyzer = Analyzer(None)
    if args.database == "postgresql":
        pg_admin(args.pg_url, f'CREATE DATABASE "{pg_name}"')
        database_url = pg_database_url(args.pg_url, pg_name)
        autovacuum = pg_autovacuum(args.pg_url)
        if autovacuum != "on" and not args.no_analyze:
            analyzer = Analyzer(database_url)
    server: Server | None = None
    results: list[dict[str, Any]] = []
    try:
        init = [sys.executable, "-m", "clientregistry.cli", "init", "--data-dir", str(data_dir)]
        init += ["--hostname", "localhost", "--hostname", "127.0.0.1"]
        if database_url:
            init += ["--database-url", database_url]
        run(init)
        certs = data_dir / "certs"
        port = free_port()
        base = f"https://localhost:{port}"
        log_path = OUT / f"service_{args.database}.log"
        profile = OUT / f"service_{args.database}.prof" if args.profile else None
        server = start_server(data_dir, port, workers, log_path, profile)
        wait_ready(server, base, certs, workers, log_path)
        load_avg_start = os.getloadavg()

        print(
            f"loading {len(preload):,} Patients from {data.name} in Bundles of "
            f"{args.batch_size} ({args.load_bundle}) over {load_clients} connections ...",
            file=sys.stderr,
        )
        loaded = load(
            base, certs, preload, args.batch_size, load_clients, args.load_bundle, analyzer
        )
        load_rate = loaded.entries / loaded.seconds if loaded.seconds else 0.0
        print(
            f"loaded {loaded.entries:,} in {loaded.seconds:.1f} s ({load_rate:,.0f} rec/s), "
            f"{loaded.entry_errors} entry errors, {loaded.http_errors} failed Bundles",
            file=sys.stderr,
        )
        analyzer.maybe(loaded.entries, force=True)
        if args.sync:
            started = time.perf_counter()
            os.sync()
            print(f"sync took {time.perf_counter() - started:.1f} s", file=sys.stderr)
        pids = server.pids
        load_peak_kb = sum(proc_status(p, "VmHWM") or 0 for p in pids)
        reset_peak_rss(pids)

        for phase, (rate, submit) in enumerate(zip(rates, phases, strict=True)):
            pace = f"at {rate:g} requests/s" if rate else "closed loop"
            print(
                f"submitting {len(submit):,} Patients from {args.clients} clients, {pace} ...",
                file=sys.stderr,
            )
            load_avg_measure = os.getloadavg()
            probe = cpu_probe()
            dirty_kb = meminfo_kb("Dirty")
            gc_pauses.take()
            cpu_before, machine_before = cpu_seconds(pids), machine_cpu()
            own_before = time.process_time()
            samples, wall, failures = measure(base, certs, submit, args.clients, rate)
            own_cpu = time.process_time() - own_before
            server_cpu = cpu_seconds(pids) - cpu_before
            machine_after = machine_cpu()
            busy = machine_after[0] - machine_before[0]
            total = machine_after[1] - machine_before[1]
            per_process = {p: proc_status(p, "VmHWM") or 0 for p in server.pids}
            measured_peak_kb = sum(per_process.values())

            latencies = sorted(s.latency * 1000 for s in samples)
            statuses = Counter(s.status for s in samples)
            errors = sum(1 for s in samples if not 200 <= s.status < 300)
            result: dict[str, Any] = {
                "benchmark": "service",
                "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "database": args.database,
                "workers": workers,
                "clients": args.clients,
                "offered_rate": rate or None,
                "dataset": data.name,
                "records_loaded": loaded.entries + sum(len(p) for p in phases[:phase]),
                "load_seconds": round(loaded.seconds, 2),
                "load_rate": round(load_rate, 1),
                "load_bundle": args.load_bundle,
                "load_batch_size": args.batch_size,
                "load_clients": load_clients,
                "load_errors": loaded.entry_errors + loaded.http_errors,
                "load_statuses": dict(loaded.statuses),
                "submitted": len(samples),
                "p50_ms": round(percentile(latencies, 50), 2),
                "p90_ms": round(percentile(latencies, 90), 2),
                "p99_ms": round(percentile(latencies, 99), 2),
                "max_ms": round(latencies[-1], 2) if latencies else None,
                "slowest": slowest(samples),
                "mean_ms": round(sum(latencies) / len(latencies), 2) if latencies else None,
                "requests_per_second": round(len(samples) / wall, 1) if wall else None,
                "measure_seconds": round(wall, 2),
                "errors": errors,
                "statuses": {str(k): v for k, v in sorted(statuses.items())},
                "missing_location_headers": sum(1 for s in samples if not s.headers_ok),
                "server_peak_rss_mb": round(max(load_peak_kb, measured_peak_kb) / 1024, 1),
                "server_peak_rss_measured_mb": round(measured_peak_kb / 1024, 1),
                "server_processes": len(per_process),
                "server_cpu_ms_per_request": round(server_cpu * 1000 / len(samples), 2)
                if samples
                else None,
                "client_cpu_ms_per_request": round(own_cpu * 1000 / len(samples), 2)
                if samples
                else None,
                "machine_cpu_busy": round(busy / total, 3) if total else None,
                "load_average_start": [round(v, 2) for v in load_avg_start],
                "load_average_measure": [round(v, 2) for v in load_avg_measure],
                "cpu_probe_ms": round(probe * 1000, 1),
                "dirty_kb_at_start": dirty_kb,
                "client_gc_pauses": gc_pauses.take(),
                "pg_autovacuum": autovacuum,
                "pg_analyze_runs": analyzer.runs,
                "pg_analyze_seconds": round(analyzer.seconds, 2),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
            }
            # Throughput: a closed loop must reach the target; an open loop must offer at
            # least the target and keep up with it (its measured rate falls a little short of
            # the offered one, as the last answers come after the last sends).
            achieved = result["requests_per_second"] or 0
            throughput_ok = (
                achieved >= TARGETS["requests_per_second"]
                if not rate
                else rate >= TARGETS["requests_per_second"] and achieved >= 0.99 * rate
            )
            result["targets_met"] = bool(
                errors == 0
                and samples
                and result["p50_ms"] <= TARGETS["p50_ms"]
                and result["p99_ms"] <= TARGETS["p99_ms"]
                and throughput_ok
            )
            result["latency_targets_met"] = bool(
                errors == 0
                and result["p50_ms"] <= TARGETS["p50_ms"]
                and result["p99_ms"] <= TARGETS["p99_ms"]
            )
            for failure in failures[:5]:
                print(f"  failure: {failure}", file=sys.stderr)
            results.append(result)
    finally:
        if server is not None:
            code = server.stop()
            print(f"server stopped (status {code})", file=sys.stderr)
        if args.database == "postgresql":
            pg_admin(args.pg_url, f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    with RESULTS.open("a", encoding="utf-8") as fh:
        for result in results:
            line = json.dumps(result)
            print(line)
            fh.write(line + "\n")
    return 0 if results and all(r["errors"] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
