"""The term counts Spark computes per record are those the single-machine engine holds then:
``TermCounts`` fed the records before it, in input order (50-value warm-up included)."""

from __future__ import annotations

import random

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from clientregistry.config import DEFAULT_RECORD_ID_SYSTEMS
from clientregistry.matching.rules import default_rules
from clientregistry.matching.term_frequency import TermCounts
from clientregistry.spark.counts import CountsAt, counts_before, with_totals
from clientregistry.spark.spec import MatchSpec

SPEC = MatchSpec.of(default_rules(), DEFAULT_RECORD_ID_SYSTEMS, 200)


def test_counts_before_each_record_are_the_single_machine_counts(spark: SparkSession) -> None:
    extractor = SPEC.matcher().extractor
    slots = TermCounts(extractor).slots
    assert len(slots) >= 2  # the default rules weigh names by frequency
    rng = random.Random(7)
    names = ["smith", "okello", "nakato", "", None]
    rows = []
    for pos in range(0, 400, 2):  # gaps, as records set aside leave them
        rows.append((pos, [rng.choice(names) for _ in slots]))
    frame = spark.createDataFrame(rows, "pos long, tf array<string>").repartition(3, "pos")
    records = with_totals(frame, len(slots))
    # a question about every value at every record, as the clustering may ask
    every = records.select(F.col("pos").alias("t")).crossJoin(
        records.select(F.posexplode("tf").alias("n", "value")).distinct()
    )
    answers = {
        row["t"]: row["seen"]
        for row in counts_before(records, every.where(F.col("value") != "")).collect()
    }
    totals = {row["pos"]: row["totals"] for row in records.collect()}

    expected = TermCounts(extractor)
    at = CountsAt(extractor)
    warmed = False
    for pos, values in rows:
        at.at(totals[pos], answers.get(pos))
        for slot in slots:
            for value in ("smith", "okello", "nakato", "unseen"):
                assert at.tf(slot, value) == expected.tf(slot, value), (pos, slot, value)
        warmed = warmed or expected.tf(slots[0], "smith") is not None
        features: list[str | None] = [None] * (max(slots) + 1)
        for slot, value in zip(slots, values, strict=True):
            features[slot] = value
        expected.add(tuple(features))
    assert warmed  # past the 50-value warm-up, so counts were compared, not only None
