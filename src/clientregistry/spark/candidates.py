"""Blocking as a Spark join: the candidate pairs the single-machine engine would score.

Records sharing a blocking key (the keys :class:`~clientregistry.matching.blocking.Blocker`
derives from the rules) are joined; each record ``i`` is paired with the earlier records ``j``
(``j`` before ``i`` in input order, as the single-machine engine compares a record with those
before it). Like :class:`~clientregistry.matching.blocking.MemoryIndex`, at most
``candidate_limit`` candidates are kept per record, those sharing most keys first, ties in
the order the single-machine index meets them (by the record's first shared key, then input
order); a record whose candidates all come from one key keeps the latest ones, as the index
keeps the tail of one posting list. So the pairs, and the order that breaks ties between
equal scores, are the single-machine engine's.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

PAIR_COLUMNS = ("i", "j", "rank", "capped")


def candidate_pairs(records: DataFrame, limit: int) -> DataFrame:
    """(i, j, rank, capped) from ``records`` (``pos``, ``keys``): ``rank`` orders ``i``'s
    candidates as the single-machine index returns them; ``capped`` says the limit cut
    ``i``'s candidates short."""
    keys = records.select("pos", F.posexplode("keys").alias("k", "key"))
    left = keys.select(F.col("pos").alias("i"), "k", "key")
    right = keys.select(F.col("pos").alias("j"), "key")
    shared = (
        left.join(right, "key")
        .where(F.col("j") < F.col("i"))
        .groupBy("i", "j")
        .agg(F.count(F.lit(1)).alias("shared"), F.min("k").alias("first_key"))
    )
    order = Window.partitionBy("i").orderBy(F.desc("shared"), "first_key", "j")
    whole = order.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    ranked = shared.select(
        "i",
        "j",
        F.row_number().over(order).alias("rank"),
        F.count(F.lit(1)).over(whole).alias("considered"),
        F.max("shared").over(whole).alias("most"),
        F.min("first_key").over(whole).alias("low"),
        F.max("first_key").over(whole).alias("high"),
    )
    one_list = (F.col("most") == 1) & (F.col("low") == F.col("high"))
    kept = F.when(one_list, F.col("rank") > F.col("considered") - limit).otherwise(
        F.col("rank") <= limit
    )
    return ranked.where(kept).select(
        "i", "j", "rank", (F.col("considered") > limit).alias("capped")
    )
