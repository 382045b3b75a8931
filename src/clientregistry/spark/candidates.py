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

That join makes every pair of a block: n²/2 rows for a block of n records. Blocks of keys
with a coarse part (a postal code, a birth month) grow with the file (the largest was 58
records at 100,000 records and 596 at 1,000,000; docs/scale.md), so past some millions the
join outgrows any cluster. ``block_limit`` bounds it: each record is then paired, in each
block, only with the ``block_limit`` records just before it in input order (the newest, as
``dedupe``'s :class:`~clientregistry.matching.blocking.PositionIndex` reads a block), at most
``2 × block_limit`` join rows a record and key. Candidates shared through a larger block are
then found only among those newest records, so the choice differs from the whole-block one
where blocks are larger than the limit, and only there.

``single_limit`` (with ``block_limit``) makes the selective choice of ``dedupe``'s
:class:`~clientregistry.matching.blocking.PositionIndex`, which the registry and its
re-match make too (:func:`~clientregistry.matching.blocking.select_candidates`): the records
sharing two or more keys (among the newest ``block_limit`` of each block) first, as above, then
at most ``single_limit`` sharing one key, from the smallest blocks first (ties in key order),
each block newest first.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

PAIR_COLUMNS = ("i", "j", "rank", "capped")


def candidate_pairs(
    records: DataFrame,
    limit: int,
    block_limit: int | None = None,
    single_limit: int | None = None,
) -> DataFrame:
    """(i, j, rank, capped) from ``records`` (``pos``, ``keys``): ``rank`` orders ``i``'s
    candidates as the single-machine index returns them; ``capped`` says the limit cut
    ``i``'s candidates short. With ``block_limit``, ``j`` is one of the ``block_limit``
    records before ``i`` in a block they share; with ``single_limit`` too, the choice is the
    selective one (see the module's docstring)."""
    keys = records.select("pos", F.posexplode("keys").alias("k", "key"))
    if single_limit is not None:
        if block_limit is None or single_limit < 1:
            raise ValueError("a single limit (at least 1) needs a block limit")
        return _selected(_newest_of_blocks(keys, block_limit), limit, single_limit)
    joined = _whole_blocks(keys) if block_limit is None else _newest_of_blocks(keys, block_limit)
    shared = joined.groupBy("i", "j").agg(
        F.count(F.lit(1)).alias("shared"), F.min("k").alias("first_key")
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


def _selected(joined: DataFrame, limit: int, single_limit: int) -> DataFrame:
    """The selective choice among ``joined``'s (i, k, j, size) rows (``size``: the records
    before ``i`` in the block of its ``k``-th key), ordered as
    :func:`~clientregistry.matching.blocking.select_candidates` orders them."""
    shared = joined.groupBy("i", "j").agg(
        F.count(F.lit(1)).alias("shared"),
        F.min("k").alias("first_key"),
        F.min("size").alias("size"),
    )
    multi = F.col("shared") > 1
    order = Window.partitionBy("i").orderBy(
        F.desc("shared"),
        F.when(multi, F.lit(0)).otherwise(F.col("size")),  # one key: the smallest blocks first
        "first_key",
        F.when(multi, F.col("j")).asc_nulls_last(),  # several keys: oldest first
        F.desc("j"),  # one key: newest first
    )
    whole = Window.partitionBy("i").rowsBetween(
        Window.unboundedPreceding, Window.unboundedFollowing
    )
    ranked = shared.select(
        "i",
        "j",
        F.row_number().over(order).alias("rank"),
        F.sum(multi.cast("long")).over(whole).alias("multi"),
        F.count(F.lit(1)).over(whole).alias("considered"),
    )
    rank, several = F.col("rank"), F.col("multi")
    singles_taken = F.when(
        several < limit, F.least(F.col("considered") - several, F.lit(single_limit))
    )
    chosen = several + F.coalesce(singles_taken, F.lit(0))
    taken = (rank <= several) | ((several < limit) & (rank <= several + single_limit))
    return ranked.where(taken & (rank <= limit)).select(
        "i", "j", "rank", (chosen > limit).alias("capped")
    )


def _whole_blocks(keys: DataFrame) -> DataFrame:
    """(i, k, j): every earlier record ``j`` sharing ``i``'s ``k``-th key."""
    left = keys.select(F.col("pos").alias("i"), "k", "key")
    right = keys.select(F.col("pos").alias("j"), "key")
    return left.join(right, "key").where(F.col("j") < F.col("i")).select("i", "k", "j")


def _newest_of_blocks(keys: DataFrame, block_limit: int) -> DataFrame:
    """(i, k, j, size): the at most ``block_limit`` records just before ``i`` in the block of
    its ``k``-th key, which holds ``size`` records before ``i`` (counted as far as
    ``block_limit + 1``, as the registry reads a block). Each record's place in its
    block (``r``, in input order) puts it in a bucket of ``block_limit`` places; the records
    wanted lie in ``i``'s bucket or the one before, so the join is on (key, bucket) and each
    right-hand record is offered to its own bucket and the next: at most ``2 × block_limit``
    rows a record and key, whatever the block's size."""
    if block_limit < 1:
        raise ValueError(f"block_limit must be at least 1, not {block_limit}")
    place = F.row_number().over(Window.partitionBy("key").orderBy("pos"))
    placed = keys.select("pos", "k", "key", place.alias("r")).withColumn(
        "bucket", F.floor((F.col("r") - 1) / block_limit)
    )
    left = placed.select(F.col("pos").alias("i"), "k", "key", F.col("r").alias("ri"), "bucket")
    right = placed.select(
        F.col("pos").alias("j"),
        "key",
        F.col("r").alias("rj"),
        F.explode(F.array(F.col("bucket"), F.col("bucket") + 1)).alias("bucket"),
    )
    near = (F.col("rj") < F.col("ri")) & (F.col("rj") >= F.col("ri") - block_limit)
    return (
        left.join(right, ["key", "bucket"])
        .where(near)
        .select("i", "k", "j", F.least(F.col("ri") - 1, F.lit(block_limit + 1)).alias("size"))
    )
