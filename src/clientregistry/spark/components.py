"""Connected components of a graph held as a DataFrame of edges, on Spark.

The alternating large-star / small-star algorithm of Kiveris et al., "Connected Components
in MapReduce and Beyond" (SoCC 2014), as GraphFrames runs it: each round rewires every node's
neighbourhood towards its smallest neighbour, until every component is a star around its
smallest node. It needs O(log n) rounds (two or three on the graphs matching makes, whose
components are people), each a few joins and aggregations; no node's edges are ever gathered
on one machine, and lineage is cut after every round.
"""

from __future__ import annotations

import logging

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

log = logging.getLogger(__name__)

MAX_ROUNDS = 64


def _normalised(edges: DataFrame) -> DataFrame:
    """Undirected edges as (src, dst) with src > dst, no loops, no repeats."""
    return (
        edges.select(F.greatest("src", "dst").alias("src"), F.least("src", "dst").alias("dst"))
        .where(F.col("src") != F.col("dst"))
        .distinct()
    )


def _large_star(edges: DataFrame) -> DataFrame:
    """Every node's larger neighbours are linked to its smallest neighbour (or itself)."""
    both = edges.union(edges.select(F.col("dst").alias("src"), F.col("src").alias("dst")))
    smallest = both.groupBy("src").agg(F.min("dst").alias("m"))
    smallest = smallest.select("src", F.least("m", "src").alias("m"))
    out = both.join(smallest, "src").where(F.col("dst") > F.col("src"))
    return _normalised(out.select(F.col("dst").alias("src"), F.col("m").alias("dst")))


def _small_star(edges: DataFrame) -> DataFrame:
    """Every node and its smaller neighbours are linked to the smallest of them."""
    smallest = edges.groupBy("src").agg(F.min("dst").alias("m"))
    spokes = edges.join(smallest, "src").select(F.col("dst").alias("src"), F.col("m").alias("dst"))
    hub = smallest.select("src", F.col("m").alias("dst"))
    return _normalised(spokes.union(hub))


def _stars(edges: DataFrame) -> bool:
    """Whether every component is a star: each node points at one hub, no hub points on."""
    forked = edges.groupBy("src").count().where(F.col("count") > 1).limit(1).count()
    hubs = edges.select(F.col("dst").alias("node"))
    chained = hubs.intersect(edges.select(F.col("src").alias("node"))).limit(1).count()
    return forked == 0 and chained == 0


def connected_components(edges: DataFrame, *, checkpoint: bool = True) -> DataFrame:
    """(node, component) for every node of ``edges`` (``src``, ``dst``: longs); a component
    is named by its smallest node. Nodes without edges are not listed."""
    current = _normalised(edges).persist(StorageLevel.MEMORY_AND_DISK)
    previous: tuple[int, int | None] | None = None
    for round_number in range(1, MAX_ROUNDS + 1):
        following = _large_star(_small_star(current))
        if checkpoint:
            following = following.localCheckpoint(eager=True)
        else:
            following = following.persist(StorageLevel.MEMORY_AND_DISK)
        summary = following.agg(F.count(F.lit(1)), F.sum("dst")).first()
        state = (summary[0], summary[1]) if summary is not None else (0, None)
        current.unpersist()
        current = following
        log.info("connected components: round %d, %d edges", round_number, state[0])
        if state == previous and _stars(current):
            break
        previous = state
    else:
        raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds")
    nodes = current.select(F.col("src").alias("node"), F.col("dst").alias("component"))
    roots = current.select(F.col("dst").alias("node"), F.col("dst").alias("component"))
    return nodes.union(roots).distinct()
