"""Numbering a DataFrame's rows 0, 1, 2, ... in their current order, without one partition.

``monotonically_increasing_id`` keeps the order (the partition index in the upper bits, the
row within the partition in the lower 33) but leaves gaps; one small job counts each
partition's rows and their running sum closes the gaps. Used for line numbers in the input
and for numbering golden records in the order of their first record.
"""

from __future__ import annotations

from itertools import accumulate

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

ROW_BITS = 33
"""Bits of ``monotonically_increasing_id`` that number rows within a partition."""


def with_order(frame: DataFrame, column: str) -> DataFrame:
    """``frame`` with ``column``: increasing in the frame's order, with gaps (cheap)."""
    return frame.withColumn(column, F.monotonically_increasing_id())


def with_row_numbers(frame: DataFrame, order: str, column: str) -> DataFrame:
    """``frame`` (with ``order`` made by :func:`with_order`) with ``column`` = 0, 1, 2, ...

    The frame is checkpointed first: its ``order`` values must be the same in the count and
    in the result, and a plan with a shuffle (a sort) may split its rows differently each
    time it runs.
    """
    frame = frame.localCheckpoint(eager=True)
    partition = F.shiftright(F.col(order), ROW_BITS)
    counts = sorted(
        (row[0], row[1]) for row in frame.groupBy(partition.alias("p")).count().collect()
    )
    starts = [0, *accumulate(count for _, count in counts)]
    offsets = frame.sparkSession.createDataFrame(
        [(p, start) for (p, _), start in zip(counts, starts, strict=False)],
        "p long, start long",
    )
    within = F.col(order).bitwiseAND((1 << ROW_BITS) - 1)
    numbered = frame.join(F.broadcast(offsets), partition == offsets["p"], "left")
    return numbered.withColumn(column, F.col("start") + within).drop("p", "start")
