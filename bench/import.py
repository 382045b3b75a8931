"""The import benchmark: ``clientregistry import`` of a synthetic file into a fresh registry.

``python bench/import.py --database sqlite|postgresql --records N [--batch-size B]`` does:

1. ``bench/out/synthetic_<N>.ndjson`` (built by ``bench/datasets.py`` when missing: 30%
   duplicates, households, twins);
2. ``clientregistry init`` a fresh data directory under ``bench/out/`` (PostgreSQL: a fresh
   database ``cr_import_<pid>`` on ``--pg-url``, dropped at the end);
3. runs ``clientregistry import FILE --system openmrs`` as a subprocess and, every 0.2 s,
   sums the resident memory of it and its reader process (``/proc/<pid>/status``): the peak
   of that sum is "peak RSS (all processes)"; PostgreSQL's own backends are not counted;
4. prints one JSON line (records, seconds, records/s, CPU of the import's processes, peak
   RSS, the import's summary, the machine's load average before and after) and appends it to
   ``bench/out/import_results.jsonl``.

Records per second count from the command's start to its end (start-up, counting the file's
lines and hashing it included). Run heavy sizes under ``flock /work/.bench.lock``. Not a test:
figures depend on the machine and its load (recorded).
"""

from __future__ import annotations

import argparse
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


def run_import(data_dir: Path, path: Path, batch_size: int, extra: list[str]) -> dict[str, Any]:
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
    while process.poll() is None:
        peak = max(peak, sum(rss_kb(pid) for pid in descendants(process.pid)))
        time.sleep(0.2)
    _, err = process.communicate()
    seconds = time.perf_counter() - started
    usage_after = os.times()
    if process.returncode != 0:
        raise SystemExit(f"import failed ({process.returncode}):\n{err.decode()}")
    cpu = (usage_after.children_user - usage_before.children_user) + (
        usage_after.children_system - usage_before.children_system
    )
    return {
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu, 1),
        "peak_rss_mb": round(peak / 1024),
        "summary": err.decode().strip().splitlines()[-2:],
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
        measured = run_import(data_dir, path, args.batch_size, [])
        load_after = os.getloadavg()
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
