"""Blocking as a Spark join gives each record the candidates the in-memory index gives it:
the same records, in the same order, cut at the same limit."""

from __future__ import annotations

import random

import pytest
from pyspark.sql import DataFrame, SparkSession

from clientregistry.matching.blocking import MemoryIndex, PositionIndex
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


def _records(seed: int) -> list[tuple[int, list[str]]]:
    rng = random.Random(seed)
    vocabulary = [f"k{n}" for n in range(6)]  # few keys: blocks of dozens of records
    records = []
    for pos in range(240):
        keys = rng.sample(vocabulary, rng.choice([0, 1, 2, 3]))
        if pos % 40 == 0:
            keys = ["crowded"]
        records.append((pos * 10, keys))
    return records


Choice = dict[int, tuple[list[int], bool]]


def _newest_before(records: list[tuple[int, list[str]]], block_limit: int, limit: int) -> Choice:
    """What the in-memory index gives each record when each block holds only the
    ``block_limit`` records just before it: the reference for ``block_limit``."""
    expected: Choice = {}
    for n, (pos, keys) in enumerate(records):
        index = MemoryIndex()
        newest = {key: [p for p, ks in records[:n] if key in ks][-block_limit:] for key in keys}
        for earlier, earlier_keys in records[:n]:
            index.add(earlier, [k for k in earlier_keys if earlier in newest.get(k, ())])
        found = index.candidates(keys, limit)
        if found.ids:
            expected[pos] = (found.ids, found.capped)
    return expected


def _got(
    frame: DataFrame, limit: int, block_limit: int | None, single_limit: int | None = None
) -> Choice:
    got: Choice = {}
    pairs = candidate_pairs(frame, limit, block_limit, single_limit)
    for row in pairs.orderBy("i", "rank").collect():
        ids, capped = got.setdefault(row["i"], ([], row["capped"]))
        ids.append(row["j"])
        assert capped == row["capped"]
    return got


def test_a_block_limit_pairs_a_record_with_the_newest_of_each_block(spark: SparkSession) -> None:
    """The bounded join (for tens of millions of records) is the index's choice over blocks
    cut to the ``block_limit`` records before each record: exact, not approximately so."""
    records = _records(11)
    frame = spark.createDataFrame(records, "pos long, keys array<string>")
    for block_limit, limit in ((1, 200), (7, 200), (7, 4), (30, 10)):
        expected = _newest_before(records, block_limit, limit)
        assert _got(frame, limit, block_limit) == expected, (block_limit, limit)
    # blocks here reach dozens of records: a small limit must change the choice ...
    assert _got(frame, 200, 7) != _got(frame, 200, None)
    # ... and one past the largest block must not
    assert _got(frame, 5, 1000) == _got(frame, 5, None)


def test_the_selective_choice_is_dedupes_and_the_registrys(spark: SparkSession) -> None:
    """With a single limit the join chooses as ``PositionIndex`` does (``dedupe``, the
    registry's candidates query and its re-match): few records sharing one key, from the
    smallest blocks, newest first; exact, ties included."""
    records = _records(12)
    frame = spark.createDataFrame(records, "pos long, keys array<string>")
    capped = set()
    for block_limit, single_limit, limit in ((7, 3, 200), (30, 8, 200), (7, 2, 4), (1, 1, 3)):
        index = PositionIndex(single_limit=single_limit, block_limit=block_limit)
        expected: Choice = {}
        for pos, keys in records:
            found = index.find_then_add(pos, keys, limit)
            if found.ids:
                expected[pos] = (found.ids, found.capped)
        capped |= {limit for _, cut in expected.values() if cut}
        got = _got(frame, limit, block_limit, single_limit)
        assert got == expected, (block_limit, single_limit, limit)
    assert 4 in capped  # the limit cut some records' candidates
    with pytest.raises(ValueError):
        candidate_pairs(frame, 5, None, 3)
