"""The re-match benchmark: a dry run over a registry of N records, beside ``dedupe`` of the
same records, in one run.

``python bench/rematch.py --records N [--database sqlite|postgresql] [--rounds R]``:

1. imports ``bench/out/synthetic_<N>.ndjson`` into a fresh registry (``bench/import.py
   --keep``; PostgreSQL: a fresh database, dropped at the end), or takes the registry an
   earlier ``bench/import.py --keep`` made (``--import-result``: the file of its JSON line);
2. then, R times, alternately: ``clientregistry dedupe`` of the file (its clusters to a
   temporary file) and ``clientregistry rematch --rules <the built-in rules> --dry-run`` on
   the registry, each as a subprocess, timed from start to end, with the peak of the summed
   resident memory of its processes;
3. prints one JSON line (every time, the medians, and their ratio: the target is a dry run
   within 1.5 times dedupe's time) and appends it to ``bench/out/rematch_results.jsonl``.

Run under ``flock /work/.bench.lock``: both take the two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import importlib  # noqa: E402

bench_import = importlib.import_module("import")

OUT = HERE / "out"
RESULTS = OUT / "rematch_results.jsonl"
CLI = bench_import.CLI
RULES = HERE.parent / "src" / "clientregistry" / "matching" / "default_rules.json"


def timed(command: list[str], cwd: Path) -> dict[str, Any]:
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)
    peak = 0
    while process.poll() is None:
        pids = bench_import.descendants(process.pid)
        peak = max(peak, sum(bench_import.rss_kb(pid) for pid in pids))
        time.sleep(0.1)
    _, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"{command[1]} failed:\n{err.decode()}")
    return {"seconds": round(time.perf_counter() - started, 2), "peak_rss_mb": round(peak / 1024)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument(
        "--import-result",
        type=Path,
        help="a registry imported already: the JSON line `bench/import.py --keep` printed (its "
        "data directory is used, then removed with its database)",
    )
    args = parser.parse_args(argv)
    path = bench_import.dataset(args.records)
    if args.import_result is not None:
        imported = json.loads(args.import_result.read_text().strip().splitlines()[-1])
        return compare(args, path, imported)
    loaded = subprocess.run(
        [
            sys.executable,
            str(HERE / "import.py"),
            "--database",
            args.database,
            "--records",
            str(args.records),
            "--keep",
            "--pg-url",
            args.pg_url,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return compare(args, path, json.loads(loaded.stdout.strip().splitlines()[-1]))


def compare(args: argparse.Namespace, path: Path, imported: dict[str, Any]) -> int:
    """Dedupe and the dry run, alternately, on the registry ``imported`` made."""
    data_dir = Path(imported["data_dir"])
    load_before = [round(x, 1) for x in os.getloadavg()]
    work = Path(tempfile.mkdtemp(prefix="rematch-bench-"))
    dedupe, dry_runs = [], []
    try:
        for _ in range(args.rounds):
            dedupe.append(
                timed([str(CLI), "dedupe", str(path), "--output", str(work / "c.csv")], work)
            )
            dry_runs.append(
                timed(
                    [
                        str(CLI),
                        "rematch",
                        "--rules",
                        str(RULES),
                        "--dry-run",
                        "--data-dir",
                        str(data_dir),
                        "--report",
                        str(work / "changes.csv"),
                    ],
                    work,
                )
            )
        changes = sum(1 for _ in (work / "changes.csv").open()) - 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(data_dir, ignore_errors=True)
        if imported["database"] == "postgresql":
            name = f"cr_import_{data_dir.name.rsplit('_', 1)[1]}"
            bench_import.pg_admin(args.pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    dedupe_median = statistics.median(r["seconds"] for r in dedupe)
    dry_median = statistics.median(r["seconds"] for r in dry_runs)
    result = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "database": imported["database"],
        "records": args.records,
        "import": imported,
        "dedupe": dedupe,
        "dry_run": dry_runs,
        "dedupe_median_s": dedupe_median,
        "dry_run_median_s": dry_median,
        "ratio": round(dry_median / dedupe_median, 2),
        "changes_reported": changes,
        "load_before": load_before,
        "load_after": [round(x, 1) for x in os.getloadavg()],
    }
    line = json.dumps(result)
    print(line)
    with RESULTS.open("a", encoding="utf-8") as fh:
        fh.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
