"""Side by side: what following each request costs a submission.

``python bench/observability.py [--rounds 2] [--database sqlite] [--load 10000]
[--submit 3000] [--rate 150] [--baseline-ref main]`` runs ``bench/service.py`` (one fresh
registry per run, the same data, one open-loop phase) for three servers, in turn, round after
round, so that the machine's drift hits them alike:

* ``baseline`` — the code of ``--baseline-ref`` (``git archive`` into a temporary
  directory, first on the server's ``PYTHONPATH``): no request observer at all;
* ``off`` — this checkout with metrics and the request log off (the request id, its header
  and its audit column are always on);
* ``on`` — this checkout with metrics on a port of their own, the request log on and JSON
  logs (``CR_METRICS_PORT``, ``CR_SERVER_ACCESS_LOG=true``, ``CR_SERVER_LOG_FORMAT=json``).

It prints each run's p50/p90/p99 latency, throughput and the server's CPU milliseconds per
request (the steadiest measure of a cost: latency at a fixed offered rate mostly shows the
machine's load), then the medians per variant. Not a test; results: ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
COLUMNS = ("p50_ms", "p90_ms", "p99_ms", "requests_per_second", "server_cpu_ms_per_request")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _baseline_source(ref: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "src"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def _environments(baseline_src: Path) -> dict[str, dict[str, str]]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CR_", "PROMETHEUS_"))}
    return {
        "baseline": {**clean, "PYTHONPATH": str(baseline_src)},
        "off": clean,
        "on": {
            **clean,
            "CR_METRICS_PORT": str(_free_port()),
            "CR_SERVER_ACCESS_LOG": "true",
            "CR_SERVER_LOG_FORMAT": "json",
        },
    }


def _run(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    command = [sys.executable, str(HERE / "service.py"), "--database", args.database]
    command += ["--load", str(args.load), "--submit", str(args.submit)]
    command += ["--rate", str(args.rate), "--workers", str(args.workers)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"service.py failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--load", type=int, default=10_000)
    parser.add_argument("--submit", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=150.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--baseline-ref", default="main")
    args = parser.parse_args(argv)
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="cr_bench_baseline_") as tmp:
        environments = _environments(_baseline_source(args.baseline_ref, Path(tmp)))
        for round_number in range(1, args.rounds + 1):
            for variant, env in environments.items():
                result = _run(args, env)
                runs.setdefault(variant, []).append(result)
                figures = "  ".join(f"{c}={result.get(c)}" for c in COLUMNS)
                print(f"round {round_number} {variant:<8} {figures}", flush=True)
    print("medians:")
    summary = {}
    for variant, results in runs.items():
        summary[variant] = {c: statistics.median(r[c] for r in results) for c in COLUMNS}
        figures = "  ".join(f"{c}={summary[variant][c]}" for c in COLUMNS)
        print(f"  {variant:<8} {figures}")
    print(json.dumps({"benchmark": "observability", "args": vars(args), "medians": summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
