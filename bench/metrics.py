"""Pairwise precision / recall / F1 of a clustering against a ground truth.

A predicted pair is any two records sharing a ``golden_id`` in the clusters CSV
(``patient_id,golden_id``); a true pair is any two sharing an ``entity_id`` in the truth CSV
(``patient_id,entity_id``). Counts come from cluster sizes and the sizes of the
(golden, entity) intersections, so nothing is enumerated pair by pair.

Records in the truth but absent from the clusters count as singletons; records in the clusters
but not in the truth are ignored (both are reported). With no predicted (true) pairs precision
(recall) is 1.0.

``python bench/metrics.py CLUSTERS.csv TRUTH.csv`` prints the scores as JSON.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path


def read_mapping(path: str | Path, key: str, value: str) -> dict[str, str]:
    """Read a two-column CSV with a header into ``{key: value}``."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        if key not in fields or value not in fields:
            raise ValueError(f"{path}: expected columns {key},{value}, found {fields}")
        return {row[key]: row[value] for row in reader}


def _pairs(sizes: Iterable[int]) -> int:
    return sum(n * (n - 1) // 2 for n in sizes)


def pairwise_scores(clusters_csv: str | Path, truth_csv: str | Path) -> dict[str, float | int]:
    """Pairwise precision, recall and F1 of ``clusters_csv`` against ``truth_csv``."""
    golden = read_mapping(clusters_csv, "patient_id", "golden_id")
    truth = read_mapping(truth_csv, "patient_id", "entity_id")
    missing = [pid for pid in truth if pid not in golden]
    extra = sum(1 for pid in golden if pid not in truth)
    # Absent records become singletons under a key no real golden_id can collide with.
    assigned = {pid: ("g", golden[pid]) if pid in golden else ("m", pid) for pid in truth}

    predicted = _pairs(Counter(assigned.values()).values())
    true = _pairs(Counter(truth.values()).values())
    correct = _pairs(Counter((assigned[pid], ent) for pid, ent in truth.items()).values())

    precision = correct / predicted if predicted else 1.0
    recall = correct / true if true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "true_pairs": true,
        "predicted_pairs": predicted,
        "correct_pairs": correct,
        "records": len(truth),
        "missing_records": len(missing),
        "extra_records": extra,
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python bench/metrics.py CLUSTERS.csv TRUTH.csv", file=sys.stderr)
        return 2
    print(json.dumps(pairwise_scores(args[0], args[1]), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
