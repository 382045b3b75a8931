"""Blocking as a Spark join gives each record the candidates the in-memory index gives it:
the same records, in the same order, cut at the same limit."""

from __future__ import annotations

import random

from pyspark.sql import SparkSession

from clientregistry.matching.blocking import MemoryIndex
from clientregistry.spark.candidates import candidate_pairs


def test_candidates_match_the_memory_index_with_its_cap(spark: SparkSession) -> None:
    rng = random.Random(7)
    vocabulary = [f"k{n}" for n in range(12)]
    records = []
    for pos in range(300):
        size = rng.choice([0, 1, 1, 1, 2, 3, 4])
        keys = rng.sample(vocabulary, size)
        if pos % 50 == 0:
            keys = ["crowded"]  # one key only, shared by many: the one-list cap
        records.append((pos * 10, keys))  # positions order records; gaps are allowed
    limit = 5
    index = MemoryIndex()
    expected = {}
    for pos, keys in records:
        found = index.find_then_add(pos, keys, limit)
        if found.ids:
            expected[pos] = (found.ids, found.capped)
    assert any(capped for _, capped in expected.values())

    frame = spark.createDataFrame(records, "pos long, keys array<string>")
    got: dict[int, tuple[list[int], bool]] = {}
    for row in candidate_pairs(frame, limit).orderBy("i", "rank").collect():
        ids, capped = got.setdefault(row["i"], ([], row["capped"]))
        ids.append(row["j"])
        assert capped == row["capped"]
    assert got == expected
