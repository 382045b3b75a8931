"""The import benchmark: ``clientregistry import`` of a synthetic file into a fresh registry.

``python bench/import.py --database sqlite|postgresql --records N [--batch-size B]`` does:

1. ``bench/out/synthetic_<N>.ndjson`` (built by ``bench/datasets.py`` when missing: 30%
   duplicates, households, twins);
2. ``clientregistry init`` a fresh data directory under ``bench/out/`` (PostgreSQL: a fresh
   database ``cr_import_<pid>`` on ``--pg-url``, dropped at the end);
3. runs ``clientregistry import FILE --system openmrs`` as a subprocess and, every 0.2 s,
   sums the resident memory of it and its reader process (``/proc/<pid>/status``): the peak
   of that sum is "peak RSS (all processes)"; PostgreSQL's own backends are not counted;
4. every 5 s reads the job's rows so far (its ``bulk_job`` row) and the CPU so far of the
   import's main process (matching and writing) and of the others (the reader): the
   ``timeline`` of ``[seconds, rows, main CPU s, reader CPU s]``, from which the CPU cost per
   record over the run (its growth) is read;
5. scores the persons the import made against the file's truth (``<name>.truth.csv``, the
   generator's): pairwise precision, recall and F1 of the source records' golden records;
6. prints one JSON line (records, seconds, records/s, CPU of the import's processes, split
   between the main process (and, of that, its main thread: the rest is SQLite's background
   checkpointer) and the rest, peak RSS, the timeline, the import's summary, the
   machine's load average before and after; on PostgreSQL also the CPU of the server
   processes serving the import's database, sampled every 5 s, so their last seconds are
   missed) and appends it to
   ``bench/out/import_results.jsonl``.

Records per second count from the command's start to its end (start-up, counting the file's
lines and hashing it included). Run heavy sizes under ``flock /tmp/bench.lock``. Not a test:
figures depend on the machine and its load (recorded).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
RESULTS = OUT / "import_results.jsonl"
CLI = Path(sys.executable).with_name("clientregistry")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TIMELINE_SECONDS = 5.0
"""How often the import's rows and CPU so far are read (the cost per record over the run)."""


def synthetic_name(n_records: int) -> str:
    size = f"{n_records // 1000}k" if n_records % 1000 == 0 else str(n_records)
    return f"synthetic_{size}"


def dataset(n_records: int) -> Path:
    path = OUT / f"{synthetic_name(n_records)}.ndjson"
    if not path.exists():
        print(f"generating {path.name} ...", file=sys.stderr)
        subprocess.run(
            [sys.executable, str(HERE / "datasets.py"), "synthetic", "--n", str(n_records)],
            check=True,
        )
    return path


def descendants(pid: int) -> list[int]:
    found = [pid]
    for current in found:
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            found.extend(int(c) for c in children if int(c) not in found)
    return found


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def pg_admin(url: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(statement)  # type: ignore[arg-type]


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User and system CPU of process ``pid`` (or of its thread ``thread``) so far (0 when it
    is gone)."""
    stat = Path(f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat")
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rows_done(data_dir: Path, database_url: str) -> int | None:
    """The import's rows so far, as its job's progress says (None when not readable)."""
    try:
        if database_url:
            import psycopg

            with psycopg.connect(database_url, connect_timeout=2) as connection:
                found = connection.execute("SELECT progress FROM bulk_job").fetchone()
        else:
            import sqlite3

            uri = f"file:{data_dir / 'registry.db'}?mode=ro"
            with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=1)) as connection:
                found = connection.execute("SELECT progress FROM bulk_job").fetchone()
    except Exception:
        return None
    if not found:
        return None
    progress = found[0] if isinstance(found[0], dict) else json.loads(found[0] or "{}")
    return int(progress.get("counts", {}).get("rows", 0))


def backend_pids(database_url: str) -> list[int]:
    """PostgreSQL: the server processes serving the import's database (this machine's)."""
    if not database_url:
        return []
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    admin = url.set(database="postgres").render_as_string(False)
    try:
        with psycopg.connect(admin, connect_timeout=2, autocommit=True) as connection:
            found = connection.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (url.database,)
            ).fetchall()
    except Exception:
        return []
    return [int(pid) for (pid,) in found]


def run_import(
    data_dir: Path, path: Path, batch_size: int, extra: list[str], database_url: str = ""
) -> dict[str, Any]:
    command = [
        str(CLI),
        "import",
        str(path),
        "--system",
        "openmrs",
        "--data-dir",
        str(data_dir),
        "--batch-size",
        str(batch_size),
        *extra,
    ]
    started = time.perf_counter()
    usage_before = os.times()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    cpu: dict[int, float] = {}
    main_thread = 0.0
    server: dict[int, float] = {}
    timeline: list[list[float]] = []
    next_read = started + TIMELINE_SECONDS
    while process.poll() is None:
        found = descendants(process.pid)
        peak = max(peak, sum(rss_kb(pid) for pid in found))
        for pid in found:
            cpu[pid] = max(cpu.get(pid, 0.0), cpu_seconds(pid))
        main_thread = max(main_thread, cpu_seconds(process.pid, process.pid))
        if time.perf_counter() >= next_read:
            next_read += TIMELINE_SECONDS
            for pid in backend_pids(database_url):
                server[pid] = max(server.get(pid, 0.0), cpu_seconds(pid))
            rows = rows_done(data_dir, database_url)
            if rows is not None:
                main_cpu = cpu.get(process.pid, 0.0)
                others = sum(v for pid, v in cpu.items() if pid != process.pid)
                elapsed = time.perf_counter() - started
                timeline.append([round(elapsed, 1), rows, round(main_cpu, 2), round(others, 2)])
        time.sleep(0.2)
    _, err = process.communicate()
    seconds = time.perf_counter() - started
    usage_after = os.times()
    if process.returncode != 0:
        raise SystemExit(f"import failed ({process.returncode}):\n{err.decode()}")
    total_cpu = (usage_after.children_user - usage_before.children_user) + (
        usage_after.children_system - usage_before.children_system
    )
    main_cpu = cpu.get(process.pid, 0.0)
    return {
        "seconds": round(seconds, 1),
        "cpu_seconds": round(total_cpu, 1),
        "cpu_main_seconds": round(main_cpu, 1),
        "cpu_main_thread_seconds": round(main_thread, 1),
        "cpu_postgresql_seconds": round(sum(server.values()), 1) if database_url else None,
        "cpu_reader_seconds": round(sum(cpu.values()) - main_cpu, 1),
        "timeline": timeline,
        "peak_rss_mb": round(peak / 1024),
        "summary": err.decode().strip().splitlines()[-2:],
    }


def accuracy(data_dir: Path, database_url: str, truth_path: Path) -> dict[str, float] | None:
    """Pairwise precision, recall and F1 of the golden records against the truth."""
    from sqlalchemy import create_engine, text

    from clientregistry.batch.evaluate import pairwise_scores, read_two_columns

    if not truth_path.exists():
        return None
    url = database_url or f"sqlite:///{data_dir / 'registry.db'}"
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT internal_value, golden_id FROM source_record")
            ).all()
    finally:
        engine.dispose()
    clusters = {value: golden for value, golden in rows}
    scores = pairwise_scores(clusters, read_two_columns(truth_path, "patient_id", "entity_id"))
    return {
        "precision": round(scores.precision, 4),
        "recall": round(scores.recall, 4),
        "f1": round(scores.f1, 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args(argv)
    OUT.mkdir(exist_ok=True)
    path = dataset(args.records)
    data_dir = OUT / f"import_{args.database}_{os.getpid()}"
    shutil.rmtree(data_dir, ignore_errors=True)
    database_url = ""
    name = f"cr_import_{os.getpid()}"
    if args.database == "postgresql":
        from sqlalchemy.engine import make_url

        pg_admin(args.pg_url, f'CREATE DATABASE "{name}"')
        database_url = make_url(args.pg_url).set(database=name).render_as_string(False)
    try:
        subprocess.run(
            [str(CLI), "init", "--data-dir", str(data_dir), "--database-url", database_url],
            check=True,
            capture_output=True,
        )
        load_before = os.getloadavg()
        measured = run_import(data_dir, path, args.batch_size, [], database_url)
        load_after = os.getloadavg()
        measured["accuracy"] = accuracy(
            data_dir, database_url, path.with_name(path.name.replace(".ndjson", ".truth.csv"))
        )
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
            if args.database == "postgresql":
                pg_admin(args.pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    result = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "database": args.database,
        "records": args.records,
        "batch_size": args.batch_size,
        **measured,
        "records_per_second": round(args.records / measured["seconds"]),
        "load_before": [round(x, 1) for x in load_before],
        "load_after": [round(x, 1) for x in load_after],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "data_dir": str(data_dir) if args.keep else None,
    }
    line = json.dumps(result)
    print(line)
    with RESULTS.open("a", encoding="utf-8") as fh:
        fh.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
