"""The matching benchmark: accuracy, blocking recall, speed and memory, side by side with Splink.

``python bench/run_all.py [--sets febrl1 ... compound_10k] [--no-splink] [--train]`` builds
any missing data set (``bench/datasets.py``: FEBRL 1-4, OpenCR's CSV, the synthetic set, the
census and register, the typo-heavy healthcare and the compound-name sets), then for each:

* runs ``clientregistry dedupe`` as a separate process (timed end to end, peak RSS from the
  kernel) and scores the clusters with ``clientregistry evaluate``'s pairwise metrics;
* measures blocking recall (share of true pairs ever compared) in-process;
* runs Splink (DuckDB) on the same file and fields in a fresh process (``bench/splink_peer.py``).

Results go to ``bench/out/results.json`` and a Markdown table on stdout, to be copied into
``bench/RESULTS.md`` with a note of the machine. Not a test: run it on demand (``make bench``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
sys.path.insert(0, str(HERE))

from clientregistry.batch.dedupe import Deduplicator  # noqa: E402
from clientregistry.batch.evaluate import evaluate_files, read_two_columns  # noqa: E402
from clientregistry.batch.readers import SourceRecord, read_patients  # noqa: E402
from clientregistry.matching.matcher import Matcher  # noqa: E402
from clientregistry.matching.rules import default_rules  # noqa: E402

DEFAULT_SETS = (
    "febrl1",
    "febrl2",
    "febrl3",
    "febrl4",
    "opencr",
    "synthetic_100k",
    "census_register",
    "healthcare_10k",
    "compound_10k",
)


def ensure_dataset(name: str) -> tuple[Path, Path]:
    ndjson, truth = OUT / f"{name}.ndjson", OUT / f"{name}.truth.csv"
    if not ndjson.exists() or not truth.exists():
        args = [sys.executable, str(HERE / "datasets.py")]
        if name.startswith("synthetic_"):
            size = name.removeprefix("synthetic_").replace("k", "000")
            args += ["synthetic", "--n", size]
        else:
            args.append(name)
        subprocess.run(args, check=True)
    return ndjson, truth


def run_timed(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd``; return (wall seconds, peak RSS in MB) of that process alone."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{stderr}")
    return seconds, usage.ru_maxrss / 1024


def ours(name: str, ndjson: Path, truth: Path, train: bool) -> dict[str, Any]:
    clusters = OUT / f"{name}.clusters.csv"
    cmd = [str(Path(sys.executable).with_name("clientregistry")), "dedupe", str(ndjson)]
    cmd += ["--output", str(clusters)]
    if train:
        cmd.append("--train")
    seconds, peak = run_timed(cmd)
    scores = evaluate_files(clusters, truth)
    return {
        "seconds": round(seconds, 2),
        "records_per_second": round(scores.records / seconds, 1),
        "peak_rss_mb": round(peak, 1),
        **scores.to_json(),
    }


def blocking_recall(ndjson: Path, truth: Path) -> dict[str, Any]:
    entity_of = read_two_columns(truth, "patient_id", "entity_id")
    dedup = Deduplicator(Matcher(default_rules()), entity_of=entity_of)
    for record in read_patients(ndjson):
        if isinstance(record, SourceRecord):
            dedup.add(record.record_id, record.resource)
    sizes: dict[str, int] = {}
    for entity in entity_of.values():
        sizes[entity] = sizes.get(entity, 0) + 1
    true_pairs = sum(n * (n - 1) // 2 for n in sizes.values())
    return {
        "blocking_recall": round(dedup.stats.true_pairs_compared / max(true_pairs, 1), 5),
        "candidate_pairs": dedup.stats.candidate_pairs,
        "capped_queries": dedup.stats.capped_queries,
    }


def splink(name: str, ndjson: Path, truth: Path) -> dict[str, Any]:
    from splink_peer import run_splink_subprocess

    result = run_splink_subprocess(ndjson, OUT / f"{name}.splink.csv", "--truth", str(truth))
    scores = result.get("scores", {})
    return {
        "seconds": result["seconds"],
        "peak_rss_mb": result["peak_rss_mb"],
        "precision": scores.get("precision"),
        "recall": scores.get("recall"),
        "f1": scores.get("f1"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=list(DEFAULT_SETS))
    parser.add_argument("--no-splink", action="store_true")
    parser.add_argument("--train", action="store_true", help="also run dedupe --train")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
        "python": platform.python_version(),
        "sets": {},
    }
    for name in args.sets:
        ndjson, truth = ensure_dataset(name)
        row: dict[str, Any] = {"ours": ours(name, ndjson, truth, train=False)}
        if args.train:
            row["ours_trained"] = ours(name, ndjson, truth, train=True)
        row["blocking"] = blocking_recall(ndjson, truth)
        if not args.no_splink:
            row["splink"] = splink(name, ndjson, truth)
        results["sets"][name] = row
        print(json.dumps({name: row}), flush=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(
        "\n| set | F1 | precision | recall | --train F1 (P / R) | blocking recall | s | rec/s |"
        " peak MB | Splink F1 | Splink s | Splink MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, row in results["sets"].items():
        o, b, s = row["ours"], row["blocking"], row.get("splink", {})
        t = row.get("ours_trained")
        trained = "-" if t is None else f"{t['f1']:.4f} ({t['precision']:.4f} / {t['recall']:.4f})"
        print(
            f"| {name} | {o['f1']:.4f} | {o['precision']:.4f} | {o['recall']:.4f} | {trained} | "
            f"{b['blocking_recall']:.4f} | {o['seconds']} | {o['records_per_second']:,.0f} | "
            f"{o['peak_rss_mb']} | {s.get('f1', '-')} | {s.get('seconds', '-')} | "
            f"{s.get('peak_rss_mb', '-')} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
