"""Scale to a million (issue #12): ``dedupe`` against Splink at 100,000 and 1,000,000 records.

``python bench/scale.py [--sets healthcare_100k healthcare_1m] [--steps ours splink blocking]
[--label after]``
takes each set from ``/work/bench-data`` (or ``bench/out``; built with ``bench/datasets.py``
when missing) and, under ``flock /tmp/bench.lock`` when the caller holds it:

* runs ``clientregistry dedupe`` as a subprocess: wall seconds, CPU seconds (user + system of
  the process and the children it waited for: its reader process), and the peak of the RSS
  summed over the whole process tree, sampled every 0.2 s from ``/proc``;
* runs Splink (``bench/splink_peer.py``, DuckDB) the same way, on the same file;
* scores both clusterings pairwise against the truth (precision, recall, F1);
* replays blocking alone in-process, exactly as the reader process does it
  (:class:`clientregistry.batch.pipeline.Reader`, candidate cap included): blocking recall (share
  of true pairs that were ever candidates) and candidate pairs scored per record.

Growth ratio = cost at the largest set / cost at the smallest (CPU seconds; wall seconds too).
Results go to ``bench/out/scale-LABEL.json`` and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
SHARED = Path("/work/bench-data")
sys.path.insert(0, str(HERE))

from clientregistry.batch.evaluate import evaluate_files, read_two_columns  # noqa: E402
from clientregistry.batch.pipeline import Reader  # noqa: E402
from clientregistry.batch.readers import SourceRecord, read_patients  # noqa: E402
from clientregistry.matching.matcher import Matcher  # noqa: E402
from clientregistry.matching.rules import default_rules  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
INTERVAL = 0.2


def dataset(name: str) -> tuple[Path, Path]:
    """The NDJSON and truth files of ``name``, built into ``bench/out`` if found nowhere."""
    for where in (SHARED, OUT):
        ndjson, truth = where / f"{name}.ndjson", where / f"{name}.truth.csv"
        if ndjson.exists() and truth.exists():
            return ndjson, truth
    subprocess.run([sys.executable, str(HERE / "datasets.py"), name, "--out", str(OUT)], check=True)
    return OUT / f"{name}.ndjson", OUT / f"{name}.truth.csv"


def _tree_rss(root: int) -> int:
    """Bytes resident in ``root`` and all its descendants now."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        parent[int(entry)] = int(fields[1])
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, ppid in parent.items():
            if ppid == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/statm", "rb") as fh:
                total += int(fh.read().split()[1]) * PAGE
        except OSError:
            continue
    return total


def run_sampled(cmd: list[str]) -> dict[str, Any]:
    """Run ``cmd``: wall and CPU seconds, peak summed RSS of its process tree (MB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            done.wait(INTERVAL)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out: list[bytes] = []
    err: list[bytes] = []
    readers = [
        threading.Thread(target=lambda: out.append(proc.stdout.read()) if proc.stdout else None),
        threading.Thread(target=lambda: err.append(proc.stderr.read()) if proc.stderr else None),
    ]
    for thread in readers:
        thread.start()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    for thread in readers:
        thread.join()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{b''.join(err).decode()[-3000:]}")
    return {
        "seconds": round(seconds, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_mb": round(peak / 2**20),
        "largest_process_mb": round(usage.ru_maxrss / 1024),
        "stdout": b"".join(out).decode(),
    }


def ours(name: str, ndjson: Path, truth: Path) -> dict[str, Any]:
    clusters = OUT / f"{name}.scale.clusters.csv"
    exe = str(Path(sys.executable).with_name("clientregistry"))
    run = run_sampled([exe, "dedupe", str(ndjson), "--output", str(clusters)])
    run.pop("stdout")
    return {**run, **evaluate_files(clusters, truth).to_json()}


def splink(name: str, ndjson: Path, truth: Path) -> dict[str, Any]:
    clusters = OUT / f"{name}.scale.splink.csv"
    peer = str(HERE / "splink_peer.py")
    run = run_sampled([sys.executable, peer, str(ndjson), "--output", str(clusters)])
    run.pop("stdout")
    return {**run, **evaluate_files(clusters, truth).to_json()}


def blocking(_: str, ndjson: Path, truth: Path) -> dict[str, Any]:
    """Blocking as the reader process does it: recall and candidates per record."""
    entity_of = read_two_columns(truth, "patient_id", "entity_id")
    reader = Reader(Matcher(default_rules()))
    gc.disable()  # as the reader process runs
    entities: list[str | None] = []
    records = candidates = capped = true_found = 0
    for record in read_patients(ndjson):
        if not isinstance(record, SourceRecord):
            continue
        done = reader.prepare(record.record_id, record.resource, False)
        if done is None:
            continue
        _, found, _ = done
        entity = entity_of.get(record.record_id)
        records += 1
        candidates += len(found.ids)
        capped += found.capped
        if entity is not None:
            true_found += sum(1 for j in found.ids if entities[j] == entity)
        entities.append(entity)
    sizes: dict[str, int] = {}
    for entity in entity_of.values():
        sizes[entity] = sizes.get(entity, 0) + 1
    true_pairs = sum(n * (n - 1) // 2 for n in sizes.values())
    gc.enable()
    return {
        "records": records,
        "blocking_recall": round(true_found / max(true_pairs, 1), 5),
        "candidate_pairs": candidates,
        "comparisons_per_record": round(candidates / max(records, 1), 2),
        "capped_queries": capped,
        "index_keys": len(reader.index),
    }


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["healthcare_100k", "healthcare_1m"])
    parser.add_argument(
        "--steps",
        nargs="+",
        choices=("ours", "splink", "blocking"),
        default=["ours", "splink", "blocking"],
        help="what to run for each set (default: all three)",
    )
    parser.add_argument("--label", default="run")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "label": args.label,
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": f"{os.uname().nodename} {os.uname().machine} {os.cpu_count()} cores",
        "sets": {},
    }
    for name in args.sets:
        ndjson, truth = dataset(name)
        row: dict[str, Any] = {"load_before": _load()}
        results["sets"][name] = row
        steps = {"ours": ours, "splink": splink, "blocking": blocking}
        for step in args.steps:
            row[step] = steps[step](name, ndjson, truth)
            row["load_after"] = _load()
            print(name, step, json.dumps(row[step]), flush=True)
            (OUT / f"scale-{args.label}.json").write_text(json.dumps(results, indent=2))
    print(table(results))
    return 0


def table(results: dict[str, Any]) -> str:
    """The Markdown rows of one run, and growth from the first set to the last."""
    lines = [
        "| set | engine | s | CPU s | peak MB (tree) | F1 | P | R | blocking recall "
        "| comparisons/record |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    sets = results["sets"]
    for name, row in sets.items():
        for engine in ("ours", "splink"):
            r = row.get(engine)
            if r is None or not isinstance(r, dict):
                continue
            b = row.get("blocking", {}) if engine == "ours" else {}
            lines.append(
                f"| {name} | {engine} {results['label'] if engine == 'ours' else ''} "
                f"| {r['seconds']} | {r['cpu_seconds']} | {r['peak_mb']} | {r['f1']:.4f} "
                f"| {r['precision']:.4f} | {r['recall']:.4f} | {b.get('blocking_recall', '-')} "
                f"| {b.get('comparisons_per_record', '-')} |"
            )
    names = list(sets)
    if len(names) > 1:
        small, large = sets[names[0]], sets[names[-1]]
        for engine in ("ours", "splink"):
            if engine in small and engine in large:
                cpu = large[engine]["cpu_seconds"] / small[engine]["cpu_seconds"]
                wall = large[engine]["seconds"] / small[engine]["seconds"]
                lines.append(f"\n{engine}: growth {cpu:.1f}x CPU, {wall:.1f}x wall")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
