"""Term counts in input order: what the single-machine engine knows when it scores a record.

The single-machine engine scores record ``i`` (and checks it against the members of a
cluster, :mod:`clientregistry.matching.cannot_link`) with the term counts of the records
before it, :class:`~clientregistry.matching.term_frequency.TermCounts`: for a slot, the
records before ``i`` holding a value (none used until 50 are counted) and those holding the
value asked about. The Spark engine computes exactly those numbers, so it scores every pair
as the single-machine engine does and its clusters are the same by construction:

* **totals** (:func:`with_totals`): for each record and term-frequency slot, the records
  before it holding a value: a running sum in input order, partition by partition, with
  each partition's offset from one small job (no single partition holds every record);
* **counts** (:func:`counts_before`): for each question "how many records before ``t`` hold
  ``value`` in slot ``n``", a running count over the records holding that value, ordered by
  position, with the questions in between (a window per value; a common value's window is as
  long as the records holding it).

Which questions are asked is the caller's business: the values of a record and of its
candidates for scoring, the values of the records of its component for the clustering.
:class:`CountsAt` answers them on the executors, through ``TermCounts``' own ``tf``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from clientregistry.matching.features import Features
from clientregistry.matching.term_frequency import TermCounts
from clientregistry.spark.numbering import ROW_BITS, with_order

SEEN_TYPE = "array<struct<n:int,value:string,count:long>>"
"""``seen``: the answers for one record: slot index ``n`` (in ``TermCounts.slots``),
value, records before it holding the value."""


def _present(value: Column) -> Column:
    return value.isNotNull() & (value != "")


def with_totals(records: DataFrame, width: int) -> DataFrame:
    """``records`` (``pos``, ``tf``: the values of the ``width`` term-frequency slots) with
    ``totals``: for each slot, the records before this one (by ``pos``) holding a value."""
    if width == 0:
        return records.withColumn("totals", F.array().cast("array<long>"))
    flags = [F.when(_present(F.col("tf")[n]), 1).otherwise(0).alias(f"_f{n}") for n in range(width)]
    frame = with_order(records.select("pos", *flags).orderBy("pos"), "_o")
    frame = frame.localCheckpoint(eager=True)  # the same _o in the sums and below
    part = F.shiftright(F.col("_o"), ROW_BITS)
    sums = sorted(
        frame.groupBy(part.alias("_p"))
        .agg(*(F.sum(f"_f{n}").alias(f"_s{n}") for n in range(width)))
        .collect()
    )
    offsets: list[tuple[Any, ...]] = []
    running = [0] * width
    for row in sums:
        offsets.append((row["_p"], *running))
        running = [r + row[f"_s{n}"] for n, r in enumerate(running)]
    names = ", ".join(f"_b{n} long" for n in range(width))
    starts = frame.sparkSession.createDataFrame(offsets, f"_p long, {names}")
    before = Window.partitionBy("_p").orderBy("_o").rowsBetween(Window.unboundedPreceding, -1)
    totals = (
        frame.withColumn("_p", part)
        .join(F.broadcast(starts), "_p")
        .select(
            "pos",
            F.array(
                *(
                    (F.col(f"_b{n}") + F.coalesce(F.sum(f"_f{n}").over(before), F.lit(0)))
                    for n in range(width)
                )
            )
            .cast("array<long>")
            .alias("totals"),
        )
    )
    return records.join(totals, "pos")


def value_questions(frame: DataFrame, at: str, values: str) -> DataFrame:
    """Questions (``t``, ``n``, ``value``): the values in ``frame[values]`` (an array of the
    term-frequency slots' values), asked as of the record at position ``frame[at]``."""
    exploded = frame.select(F.col(at).alias("t"), F.posexplode(values).alias("n", "value"))
    return exploded.where(_present(F.col("value")))


def counts_before(records: DataFrame, questions: DataFrame) -> DataFrame:
    """(``t``, ``seen``: :data:`SEEN_TYPE`): for each question of ``questions`` (``t``,
    ``n``, ``value``), the records of ``records`` (``pos``, ``tf``) before position ``t``
    holding ``value`` in slot ``n``."""
    held = value_questions(records, "pos", "tf").select(
        "n", "value", F.col("t").alias("pos"), F.lit(1).alias("kind")
    )
    asked = (
        questions.select("n", "value", F.col("t").alias("pos"))
        .distinct()
        .withColumn("kind", F.lit(0))
    )
    # at the same position a question comes first: a record is not counted before itself
    order = (
        Window.partitionBy("n", "value")
        .orderBy("pos", "kind")
        .rowsBetween(Window.unboundedPreceding, Window.currentRow)
    )
    answered = held.unionByName(asked).withColumn("count", F.sum("kind").over(order))
    return (
        answered.where(F.col("kind") == 0)
        .groupBy(F.col("pos").alias("t"))
        .agg(F.collect_list(F.struct("n", "value", "count")).alias("seen"))
    )


def component_counts(records: DataFrame, components: DataFrame) -> DataFrame:
    """(``t``, ``seen``): for each record of a component, the records before it holding each
    value of its component's records up to it — every count the clustering can ask for when
    it checks the record against members of the clusters it matches (all in its component)."""
    members = records.join(components, records["pos"] == components["node"]).select(
        "component", "pos", "tf"
    )
    later = members.select("component", F.col("pos").alias("t"))
    asked = value_questions(
        later.join(members, "component").where(F.col("pos") <= F.col("t")), "t", "tf"
    )
    return counts_before(records, asked)


class CountsAt(TermCounts):
    """Term counts as of one record (:meth:`at`), for the scorer and the ``Deduplicator``:
    ``tf`` is :class:`TermCounts`' own, over the counts the record's row carries."""

    def at(self, totals: Sequence[int], seen: Iterable[Mapping[str, Any]] | None) -> None:
        slots = self.slots
        counts: dict[int, Counter[str]] = {slot: Counter() for slot in slots}
        for item in seen or ():
            counts[slots[item["n"]]][item["value"]] = item["count"]
        self._counts = counts
        self._totals = dict(zip(slots, totals, strict=True))

    def add(self, features: Features, times: int = 1) -> None:
        raise TypeError("counts as of one record are not added to")
