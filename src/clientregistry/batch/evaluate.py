"""Pairwise precision, recall and F1 of clusters against the truth.

A predicted pair is two records sharing a golden id; a true pair two records sharing an
entity id. Counted per cluster/entity intersection, so 100,000 records take a moment.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clientregistry.errors import InvalidRecord


@dataclass(frozen=True, slots=True)
class PairwiseScores:
    precision: float
    recall: float
    f1: float
    true_pairs: int
    predicted_pairs: int
    correct_pairs: int
    records: int
    missing_from_truth: int

    def to_json(self) -> dict[str, Any]:
        return {
            "precision": round(self.precision, 6),
            "recall": round(self.recall, 6),
            "f1": round(self.f1, 6),
            "true_pairs": self.true_pairs,
            "predicted_pairs": self.predicted_pairs,
            "correct_pairs": self.correct_pairs,
            "records": self.records,
            "missing_from_truth": self.missing_from_truth,
        }


def read_two_columns(path: Path, first: str, second: str) -> dict[str, str]:
    """``first`` -> ``second`` from a CSV with those header names."""
    try:
        fh = path.open(newline="", encoding="utf-8")
    except OSError as error:
        raise InvalidRecord(f"{path}: cannot read: {error.strerror}") from None
    with fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        for column in (first, second):
            if column not in header:
                raise InvalidRecord(
                    f"{path}: no column {column!r} (columns: {', '.join(header)})", line=1
                )
        out: dict[str, str] = {}
        for row in reader:
            key, value = row[first], row[second]
            if not key or not value:
                raise InvalidRecord(f"{path}: empty {first} or {second}", line=reader.line_num)
            out[key] = value
        return out


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def pairwise_scores(clusters: dict[str, str], truth: dict[str, str]) -> PairwiseScores:
    """Scores over the records present in both mappings."""
    common = [r for r in clusters if r in truth]
    predicted = Counter(clusters[r] for r in common)
    true = Counter(truth[r] for r in common)
    both = Counter((clusters[r], truth[r]) for r in common)
    predicted_pairs = sum(_pairs(n) for n in predicted.values())
    true_pairs = sum(_pairs(n) for n in true.values())
    correct = sum(_pairs(n) for n in both.values())
    precision = correct / predicted_pairs if predicted_pairs else 1.0
    recall = correct / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PairwiseScores(
        precision,
        recall,
        f1,
        true_pairs,
        predicted_pairs,
        correct,
        len(common),
        len(clusters) - len(common),
    )


def evaluate_files(clusters_csv: Path, truth_csv: Path) -> PairwiseScores:
    """Scores of a clusters file against a truth file; :class:`InvalidRecord` when the two
    share no record id (the wrong truth file, or ids written differently), since every
    figure would then be meaningless."""
    clusters = read_two_columns(clusters_csv, "patient_id", "golden_id")
    truth = read_two_columns(truth_csv, "patient_id", "entity_id")
    if clusters and truth and clusters.keys().isdisjoint(truth):
        sample_c = ", ".join(sorted(clusters)[:3])
        sample_t = ", ".join(sorted(truth)[:3])
        raise InvalidRecord(
            f"{truth_csv} shares no patient_id with {clusters_csv} ({len(clusters):,} records "
            f"such as {sample_c}; the truth has {len(truth):,} such as {sample_t}): "
            "is it the truth of this file?"
        )
    if not clusters:
        raise InvalidRecord(f"{clusters_csv}: no records")
    return pairwise_scores(clusters, truth)
