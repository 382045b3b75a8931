"""Scoring candidate pairs on the executors with the single-machine scorer.

Pairs come in Arrow batches; each is scored by
:meth:`~clientregistry.matching.scoring.Scorer.likely` (the compiled rule sets), with term
frequencies from the whole input (broadcast once). Only pairs that are at least potential
matches come out: the edges the clustering works on.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from clientregistry.matching.term_frequency import TermCounts
from clientregistry.spark.spec import CountsBySlot, MatchSpec
from clientregistry.store.features_codec import decode_features

SCORED_SCHEMA = "i long, j long, rank long, score double, decision string, rule_set int"

_ARROW_SCHEMA = pa.schema(
    [
        ("i", pa.int64()),
        ("j", pa.int64()),
        ("rank", pa.int64()),
        ("score", pa.float64()),
        ("decision", pa.string()),
        ("rule_set", pa.int32()),
    ]
)


def count_terms(records: DataFrame, spec: MatchSpec) -> dict[int, dict[str, int]]:
    """slot -> value -> records holding it, over ``records`` (``tf`` as prepared)."""
    slots = spec.term_counts({}).slots
    if not slots:
        return {}
    values = records.select(F.posexplode("tf").alias("n", "value")).where(F.col("value") != "")
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    for row in values.groupBy("n", "value").count().collect():
        counts[slots[row["n"]]][row["value"]] = row["count"]
    return dict(counts)


@dataclass(frozen=True)
class SharedCounts:
    """A run's term counts, broadcast to the executors, and a name for this run's copy."""

    token: str
    broadcast: Any
    """``pyspark.Broadcast`` of the :data:`CountsBySlot`."""

    @classmethod
    def share(cls, spark: SparkSession, counts: CountsBySlot) -> SharedCounts:
        return cls(uuid.uuid4().hex, spark.sparkContext.broadcast(counts))


_term_counts: dict[str, TermCounts] = {}
"""This worker's term counts, by run (built once per worker and run)."""


def term_counts_of(spec: MatchSpec, counts: SharedCounts) -> TermCounts:
    found = _term_counts.get(counts.token)
    if found is None:
        _term_counts.clear()
        found = _term_counts[counts.token] = spec.term_counts(counts.broadcast.value)
    return found


def score_pairs(
    pairs: DataFrame, records: DataFrame, spec: MatchSpec, counts: SharedCounts
) -> DataFrame:
    """The pairs of ``pairs`` (i, j, rank) that are at least potential matches, scored."""
    left = records.select(F.col("pos").alias("i"), F.col("features").alias("fi"))
    right = records.select(F.col("pos").alias("j"), F.col("features").alias("fj"))
    joined = pairs.select("i", "j", "rank").join(left, "i").join(right, "j")

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        likely = spec.matcher().scorer.likely
        tf = term_counts_of(spec, counts).tf
        decoded: dict[str, Any] = {}
        for batch in batches:
            out: dict[str, list[Any]] = {name: [] for name in _ARROW_SCHEMA.names}
            columns = [batch.column(name).to_pylist() for name in ("i", "j", "rank", "fi", "fj")]
            for i, j, rank, fi, fj in zip(*columns, strict=True):
                a = decoded.get(fi)
                if a is None:
                    a = decoded[fi] = decode_features(fi)
                b = decoded.get(fj)
                if b is None:
                    b = decoded[fj] = decode_features(fj)
                score = likely(a, b, tf)
                if score is None:
                    continue
                out["i"].append(i)
                out["j"].append(j)
                out["rank"].append(rank)
                out["score"].append(score.score)
                out["decision"].append(score.decision)
                out["rule_set"].append(score.rule_set)
            if len(decoded) > 50_000:
                decoded.clear()
            yield pa.RecordBatch.from_pydict(out, schema=_ARROW_SCHEMA)

    return joined.mapInArrow(run, SCORED_SCHEMA)
