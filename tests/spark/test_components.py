"""Connected components on Spark agree with a union-find, on chains long enough to need
several rounds and on many small components."""

from __future__ import annotations

import itertools
import random

from pyspark.sql import SparkSession

from clientregistry.spark.components import connected_components


def union_find(edges: list[tuple[int, int]]) -> dict[int, int]:
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {node: find(node) for node in parent}


def test_components_match_union_find(spark: SparkSession) -> None:
    rng = random.Random(3)
    labels = list(range(1000, 1200))
    rng.shuffle(labels)
    chain = list(itertools.pairwise(labels))  # one path of 200 shuffled nodes
    small = [(rng.randrange(5000, 5300), rng.randrange(5000, 5300)) for _ in range(200)]
    loops = [(7, 7), (8, 9), (9, 8)]  # a self-loop alone names no component
    edges = chain + small + loops
    frame = spark.createDataFrame(edges, "src long, dst long")
    got = {row["node"]: row["component"] for row in connected_components(frame).collect()}
    expected = union_find([(a, b) for a, b in edges if a != b])
    assert got == expected
    assert got[labels[-1]] == 1000
