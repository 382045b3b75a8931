"""Scoring candidate pairs on the executors with the single-machine scorer.

A record's candidates come together in one row (with their features) and are scored by
:meth:`~clientregistry.matching.scoring.Scorer.likely` (the compiled rule sets) over Arrow
batches, with the term counts the single-machine engine would hold when it scores the
record: those of the records before it (:mod:`clientregistry.spark.counts`). Only pairs that
are at least potential matches come out: the edges the clustering works on.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from clientregistry.spark.counts import CountsAt, counts_before, value_questions
from clientregistry.spark.spec import MatchSpec
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


def score_pairs(pairs: DataFrame, records: DataFrame, spec: MatchSpec) -> DataFrame:
    """The pairs of ``pairs`` (i, j, rank) that are at least potential matches, scored;
    ``records``: ``pos``, ``features``, ``tf``, ``totals`` (:func:`~.counts.with_totals`)."""
    right = records.select(F.col("pos").alias("j"), F.col("features").alias("fj"), "tf")
    joined = pairs.select("i", "j", "rank").join(right, "j")
    asked = value_questions(joined, "i", "tf").unionByName(value_questions(records, "pos", "tf"))
    seen = counts_before(records, asked)
    grouped = (
        joined.groupBy("i")
        .agg(F.collect_list(F.struct("j", "rank", "fj")).alias("candidates"))
        .join(records.select(F.col("pos").alias("i"), F.col("features").alias("fi"), "totals"), "i")
        .join(seen.withColumnRenamed("t", "i"), "i", "left")
    )

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        matcher = spec.matcher()
        likely = matcher.scorer.likely
        counts = CountsAt(matcher.extractor)
        tf = counts.tf
        decoded: dict[str, Any] = {}
        for batch in batches:
            out: dict[str, list[Any]] = {name: [] for name in _ARROW_SCHEMA.names}
            for row in batch.to_pylist():
                i = row["i"]
                a = decode_features(row["fi"])
                counts.at(row["totals"], row["seen"])
                for candidate in row["candidates"]:
                    fj = candidate["fj"]
                    b = decoded.get(fj)
                    if b is None:
                        b = decoded[fj] = decode_features(fj)
                    score = likely(a, b, tf)
                    if score is None:
                        continue
                    out["i"].append(i)
                    out["j"].append(candidate["j"])
                    out["rank"].append(candidate["rank"])
                    out["score"].append(score.score)
                    out["decision"].append(score.decision)
                    out["rule_set"].append(score.rule_set)
            if len(decoded) > 50_000:
                decoded.clear()
            yield pa.RecordBatch.from_pydict(out, schema=_ARROW_SCHEMA)

    return grouped.mapInArrow(run, SCORED_SCHEMA)
