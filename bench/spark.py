"""The Spark engine against the single-machine engine and Splink on Spark, in local mode.

``flock /tmp/bench.lock python bench/spark.py --n 100000 --n 1000000`` builds the synthetic
sets with ``bench/datasets.py`` (if missing) and, for each size, runs in fresh processes:

* ``local`` - ``clientregistry dedupe IN -o C.csv`` (the single-machine engine);
* ``spark`` - ``clientregistry dedupe IN -o C.csv --engine spark`` (``local[*]``);
* ``splink-spark`` - Splink with its Spark backend, configured as ``bench/splink_peer.py``
  configures it on DuckDB (same comparisons, blocking rules and training).

Each run's wall-clock seconds (process start to clusters written, JVM start included), its
peak memory (the largest sum of the resident memory of the process and all its descendants,
sampled every 0.2 s from /proc: the JVM and Spark's Python workers included) and pairwise
F1 against the truth. The Spark engine's clusters are also scored against the single-machine
engine's (pairwise F1 between the two engines). ``--blocks`` adds what docs/scale.md
extrapolates from: the blocking keys' sizes and the pairs the blocking join makes.

Spark's driver memory in local mode is set by ``PYSPARK_SUBMIT_ARGS`` (``--driver-memory``,
default here 8g); results go to ``bench/out/spark-bench.jsonl`` and are printed as a table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "bench"))


# --------------------------------------------------------------------------- measuring


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    except OSError:
        return 0


def tree_rss_mb(root: int) -> float:
    """Resident memory of ``root`` and every process below it, in MB."""
    tree = _children()
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += _rss_kb(pid)
        todo.extend(tree.get(pid, ()))
    return total / 1024


def measured(command: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``command``; its seconds, peak memory of its process tree, exit status, output."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "1000", **(env or {})},  # rich: no wrapped lines
    )
    peak = 0.0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss_mb(process.pid))
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    done.set()
    sampler.join()
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "peak_mb": round(peak),
        "status": process.returncode,
        "stdout": stdout,
        "stderr": stderr,
    }


# --------------------------------------------------------------------------- data


def dataset(n: int) -> tuple[Path, Path]:
    import datasets

    name = datasets.synthetic_name(n)
    ndjson, truth = OUT / f"{name}.ndjson", OUT / f"{name}.truth.csv"
    if not ndjson.exists():
        subprocess.run(
            [sys.executable, str(REPO / "bench" / "datasets.py"), "synthetic", "--n", str(n)],
            check=True,
        )
    return ndjson, truth


def block_sizes(ndjson: Path) -> dict[str, Any]:
    """Blocking keys of the default rules over a file: how many, how large, the pairs the
    join on them makes (each pair of records sharing a key, once per key)."""
    from clientregistry.config import DEFAULT_RECORD_ID_SYSTEMS
    from clientregistry.matching.matcher import Matcher
    from clientregistry.matching.rules import default_rules

    matcher = Matcher(default_rules(), record_id_systems=DEFAULT_RECORD_ID_SYSTEMS)
    sizes: Counter[str] = Counter()
    records = 0
    with ndjson.open("rb") as fh:
        for line in fh:
            if line.strip():
                sizes.update(matcher.prepare(orjson.loads(line)).keys)
                records += 1
    counts = sorted(sizes.values(), reverse=True)
    join_pairs = sum(n * (n - 1) // 2 for n in counts)
    return {
        "records": records,
        "keys": len(counts),
        "keys_per_record": round(sum(counts) / records, 2),
        "largest_blocks": counts[:5],
        "blocks_over_1000": sum(1 for n in counts if n > 1000),
        "join_pairs": join_pairs,
        "join_pairs_per_record": round(join_pairs / records, 2),
    }


# --------------------------------------------------------------------------- runs


def scores(clusters: Path, truth: Path) -> dict[str, Any]:
    from clientregistry.batch.evaluate import evaluate_files

    return evaluate_files(clusters, truth).to_json()


def agreement(a: Path, b: Path) -> dict[str, Any]:
    from clientregistry.batch.evaluate import pairwise_scores, read_two_columns

    first = read_two_columns(a, "patient_id", "golden_id")
    second = read_two_columns(b, "patient_id", "golden_id")
    result = pairwise_scores(first, second)
    members: list[dict[str, frozenset[str]]] = []
    for clusters in (first, second):
        by_golden: dict[str, set[str]] = {}
        for record, golden in clusters.items():
            by_golden.setdefault(golden, set()).add(record)
        members.append({r: frozenset(by_golden[g]) for r, g in clusters.items()})
    moved = sum(1 for record, cluster in members[0].items() if cluster != members[1].get(record))
    return {
        "f1": round(result.f1, 6),
        "pairs_only_in_first": result.predicted_pairs - result.correct_pairs,
        "pairs_only_in_second": result.true_pairs - result.correct_pairs,
        "records_in_differing_clusters": moved,
    }


def run_engine(
    engine: str, ndjson: Path, truth: Path, memory: str, block_limit: int | None = None
) -> dict[str, Any]:
    bounded = f"-b{block_limit}" if engine == "spark" and block_limit else ""
    clusters = OUT / f"{ndjson.stem}.{engine}{bounded}.csv"
    command = [str(BIN / "clientregistry"), "dedupe", str(ndjson), "-o", str(clusters)]
    env = {}
    if engine == "spark":
        command += ["--engine", "spark", "--verbose"]  # the log has the stages' seconds
        if block_limit:
            command += ["--block-limit", str(block_limit)]
        env["PYSPARK_SUBMIT_ARGS"] = f"--driver-memory {memory} pyspark-shell"
    result = measured(command, env)
    result["tool"] = engine + (f" --block-limit {block_limit}" if bounded else "")
    log = result.pop("stderr")
    stages = re.search(r"spark engine stages \(s\): (\{.*?\})", " ".join(log.split()))
    if stages is not None:
        result["stages"] = json.loads(stages.group(1))
    summary = re.search(r"[\d,]+ records, .*?records/s \([\d.]+ s\)", " ".join(log.split()))
    result["summary"] = summary.group(0) if summary else " ".join(log.split())[-400:]
    result.pop("stdout")
    if result["status"] == 0:
        result["scores"] = scores(clusters, truth)
    result["clusters_csv"] = str(clusters)
    return result


def run_splink_spark_subprocess(ndjson: Path, truth: Path, memory: str) -> dict[str, Any]:
    clusters = OUT / f"{ndjson.stem}.splink-spark.csv"
    command = [sys.executable, __file__, "--splink-one", str(ndjson), str(clusters)]
    env = {"PYSPARK_SUBMIT_ARGS": f"--driver-memory {memory} pyspark-shell"}
    result = measured(command, env)
    result["tool"] = "splink-spark"
    if result["status"] == 0:
        result.update(json.loads(result.pop("stdout")))
        result["scores"] = scores(clusters, truth)
    else:
        result.pop("stdout")
    return result


def run_splink_spark(ndjson: Path, output: Path) -> dict[str, Any]:
    """Splink on Spark with ``bench/splink_peer.py``'s model (run in its own process)."""
    import logging

    import splink
    import splink.comparison_library as cl
    from splink import Linker, SparkAPI, block_on
    from splink.backends.spark import similarity_jar_location
    from splink_peer import (
        COLUMNS,
        DETERMINISTIC_BLOCKS,
        DETERMINISTIC_RECALL,
        EM_BLOCKS,
        MIN_FILLED,
        build_settings,
        load_frame,
    )

    from clientregistry.spark.session import start_session

    started = time.perf_counter()
    spark = start_session(
        None, app_name="splink", config={"spark.jars": similarity_jar_location()}
    )  # Splink's jaro-winkler and friends are JVM functions in its jar
    spark.sparkContext.setCheckpointDir(str(OUT / "splink-checkpoints"))
    frame = load_frame(ndjson)
    available = {c for c in COLUMNS[1:] if frame[c].notna().mean() >= MIN_FILLED}
    rows = spark.createDataFrame(frame.astype(object).where(frame.notna(), None))
    db_api = SparkAPI(spark_session=spark)
    table = db_api.register(rows, dataset_display_name=re.sub(r"\W", "_", ndjson.stem))
    settings = build_settings(available)
    settings.comparisons = [  # Spark's date patterns are Java's, not strftime's
        cl.DateOfBirthComparison("birth_date", input_is_string=True, datetime_format="yyyy-MM-dd")
        if isinstance(c, cl.DateOfBirthComparison)
        else c
        for c in settings.comparisons
    ]
    linker = Linker(table, settings, log_level=logging.WARNING)
    deterministic = [block_on(*c) for c in DETERMINISTIC_BLOCKS if available.issuperset(c)]
    linker.training.estimate_probability_two_random_records_match(
        deterministic, recall=DETERMINISTIC_RECALL
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=42)
    for cols in EM_BLOCKS:
        if available.issuperset(cols):
            linker.training.estimate_parameters_using_expectation_maximisation(block_on(*cols))
    predictions = linker.inference.predict(threshold_match_probability=0.9)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
        predictions, threshold_match_probability=0.9
    )
    out = clusters.as_spark_dataframe().select("unique_id", "cluster_id").toPandas()
    out.columns = ["patient_id", "golden_id"]
    out.to_csv(output, index=False)
    spark.stop()
    return {
        "version": f"splink {splink.__version__} (spark)",
        "records": len(frame),
        "inner_seconds": round(time.perf_counter() - started, 1),
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| records | engine | s | peak MB (all processes) | F1 | precision | recall |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s = r.get("scores") or {}
        lines.append(
            f"| {r['records']:,} | {r['tool']} | {r['seconds']} | {r['peak_mb']:,} | "
            f"{s.get('f1', 'failed')} | {s.get('precision', '')} | {s.get('recall', '')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, action="append", help="synthetic sizes (repeatable)")
    parser.add_argument(
        "--engines", default="local,spark,splink-spark", help="comma-separated engines to run"
    )
    parser.add_argument("--memory", default="8g", help="Spark driver memory (local mode)")
    parser.add_argument("--blocks", action="store_true", help="also measure blocking keys")
    parser.add_argument(
        "--block-limit", type=int, help="the Spark engine's --block-limit (default: none)"
    )
    parser.add_argument("--splink-one", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.splink_one:
        print(json.dumps(run_splink_spark(*args.splink_one)))
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    results = []
    for n in args.n or [100_000]:
        ndjson, truth = dataset(n)
        by_engine = {}
        for engine in args.engines.split(","):
            if engine == "splink-spark":
                result = run_splink_spark_subprocess(ndjson, truth, args.memory)
            else:
                result = run_engine(engine, ndjson, truth, args.memory, args.block_limit)
            result["records"] = n
            by_engine[engine] = result
            print(json.dumps(result), flush=True)
            results.append(result)
        if "local" in by_engine and "spark" in by_engine:
            both = agreement(
                Path(by_engine["spark"]["clusters_csv"]), Path(by_engine["local"]["clusters_csv"])
            )
            print(json.dumps({"records": n, "spark_vs_local": both}), flush=True)
            results[-1 if results[-1]["tool"] == "spark" else -2]["spark_vs_local"] = both
        if args.blocks:
            blocks = block_sizes(ndjson)
            print(json.dumps({"records": n, "blocks": blocks}), flush=True)
            results[-1]["blocks"] = blocks
    with (OUT / "spark-bench.jsonl").open("a", encoding="utf-8") as fh:
        for result in results:
            fh.write(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), **result}) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
