"""The Spark engine: records in, clusters and review items out, as the single-machine engine.

1. **Prepare** (:mod:`~clientregistry.spark.prepare`): features and blocking keys per record;
   bad records and repeated ids are set aside with the single-machine messages.
2. **Block** (:mod:`~clientregistry.spark.candidates`): a join on the blocking keys gives
   each record its earlier candidates, capped and ordered as the single-machine index does.
3. **Score** (:mod:`~clientregistry.spark.scoring`): the single-machine scorer over Arrow
   batches, with the term counts of the records before each record (as the single-machine
   engine counts them, :mod:`~clientregistry.spark.counts`); pairs below potential are
   dropped.
4. **Components** (:mod:`~clientregistry.spark.components`): connected components of the
   auto-match pairs, distributed.
5. **Cluster** (:mod:`~clientregistry.spark.clusters`): each component's records replayed in
   input order through :class:`~clientregistry.batch.dedupe.Deduplicator` (its cannot-link,
   conflict and review rules); a record on no auto-match pair is a cluster of its own.

Term frequencies are the single-machine engine's too: it scores a record with the counts of
the records before it (what a registry receiving records one at a time knows), and so does
this engine (:mod:`~clientregistry.spark.counts`), for the scores of candidate pairs and for
the cannot-link checks of the clustering. So the two engines give the same clusters, golden
ids and review items (the tests hold them to it, record for record).

:func:`link_records` is the entry point for anything that holds records as a DataFrame
(``rematch --engine spark``); :func:`dedupe_source` serves ``dedupe --engine spark``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from clientregistry.batch.dedupe import DedupeStats
from clientregistry.batch.readers import CsvMapping
from clientregistry.errors import InvalidRecord
from clientregistry.spark.candidates import candidate_pairs
from clientregistry.spark.clusters import STAT_NAMES, replay
from clientregistry.spark.components import connected_components
from clientregistry.spark.counts import component_counts, with_totals
from clientregistry.spark.numbering import with_order, with_row_numbers
from clientregistry.spark.prepare import prepare
from clientregistry.spark.scoring import score_pairs
from clientregistry.spark.sources import JSON, Source
from clientregistry.spark.spec import MatchSpec

log = logging.getLogger(__name__)

_KEEP = StorageLevel.MEMORY_AND_DISK


@dataclass
class SparkClusters:
    """What a run found, as DataFrames (computed once, kept until :meth:`release`)."""

    members: DataFrame
    """``pos``, ``patient_id``, ``golden_id``: one row per record, golden ids numbered in
    the order of their first record (``golden-1``, ...), as the single-machine engine does."""
    review: DataFrame
    """``pos`` (of the record), ``patient_id``, ``other_id``, ``score``, ``kind``
    (``potential`` or ``conflict``)."""
    pairs: DataFrame
    """``i``, ``j`` (positions), ``score``, ``decision``: every pair at least a potential match."""
    errors: DataFrame
    """``pos``, ``line``, ``entry``, ``patient_id``, ``message``: records set aside."""
    stats: DedupeStats
    stages: dict[str, float]
    """Seconds per step (Spark runs a step's work when its result is first needed)."""
    frames: tuple[DataFrame, ...] = ()

    def release(self) -> None:
        for frame in self.frames:
            frame.unpersist()


def dedupe_source(source: Source, spec: MatchSpec, *, stop_on_error: bool = False) -> SparkClusters:
    """Deduplicate the records of an input file (see :mod:`clientregistry.spark.sources`).

    With ``stop_on_error`` the first record set aside (in input order) raises
    :class:`InvalidRecord` before any matching, as the single-machine path stops there.
    """
    started = time.perf_counter()
    prepared = prepare(source, spec).persist(_KEEP)
    if source.errors:
        spark = source.frame.sparkSession
        rows = [
            (pos, error.line, None, error.record_id, None, None, None, error.message)
            for pos, error in source.errors
        ]
        prepared = prepared.unionByName(spark.createDataFrame(rows, prepared.schema))
    records, errors = _set_aside(prepared)
    if stop_on_error:
        row = errors.orderBy("pos").first()
        if row is not None:
            raise InvalidRecord(row["message"], line=row["line"], record_id=row["patient_id"])
    return _cluster(records, errors, spec, started, prepared)


def link_records(records: DataFrame, spec: MatchSpec) -> SparkClusters:
    """Cluster Patients held in a DataFrame: ``resource`` (FHIR JSON text), taken in the
    frame's order (or by a ``position`` column when there is one). The plug-in point for
    re-matching a registry on Spark: its records in, clusters and pairs out."""
    started = time.perf_counter()
    if "position" in records.columns:
        ordered = records.select(F.col("position").cast("long").alias("_pos"), "resource")
    else:
        ordered = with_order(records.select("resource"), "_pos")
    frame = ordered.select(
        "_pos",
        F.lit(None).cast("long").alias("_line"),
        F.lit(None).cast("long").alias("_entry"),
        F.col("resource").alias("_text"),
    )
    prepared = prepare(Source(frame, JSON, CsvMapping()), spec).persist(_KEEP)
    records, errors = _set_aside(prepared)
    return _cluster(records, errors, spec, started, prepared)


def _set_aside(prepared: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(records to match, records set aside): a repeated id is set aside after its first."""
    clean = prepared.where(F.col("error").isNull())
    first = Window.partitionBy("id").orderBy("_pos")
    clean = clean.withColumn("_nth", F.row_number().over(first))
    records = (
        clean.where(F.col("_nth") == 1)
        .select(F.col("_pos").alias("pos"), "id", "features", "keys", "tf")
        .persist(_KEEP)
    )
    message = F.format_string("duplicate Patient id '%s'", "id")
    where = F.format_string("Bundle.entry[%d]: ", "_entry")
    repeated = clean.where(F.col("_nth") > 1).select(
        "_pos",
        "_line",
        "_entry",
        "id",
        F.when(F.col("_entry").isNull(), message).otherwise(F.concat(where, message)),
    )
    errors = (
        prepared.where(F.col("error").isNotNull())
        .select("_pos", "_line", "_entry", "id", "error")
        .union(repeated)
        .toDF("pos", "line", "entry", "patient_id", "message")
    )
    return records, errors


def _cluster(
    records: DataFrame, errors: DataFrame, spec: MatchSpec, started: float, prepared: DataFrame
) -> SparkClusters:
    stats = DedupeStats(started=started)
    stages: dict[str, float] = {}
    lap = _laps(stages, started)
    stats.records = records.count()
    lap("read and prepare")
    width = len(spec.term_slots())
    unjoined, records = records, with_totals(records, width).persist(_KEEP)
    records.count()
    unjoined.unpersist()
    lap("term counts")

    pairs = candidate_pairs(
        records, spec.candidate_limit, spec.block_limit, spec.single_limit
    ).persist(_KEEP)
    summary = pairs.agg(
        F.count(F.lit(1)), F.countDistinct(F.when(F.col("capped"), F.col("i")))
    ).first()
    stats.candidate_pairs, stats.capped_queries = (summary[0], summary[1]) if summary else (0, 0)
    lap("blocking join")
    likely = score_pairs(pairs, records, spec).persist(_KEEP)
    likely.count()
    pairs.unpersist()
    lap("scoring")

    autos = likely.where(F.col("decision") == "auto").select(
        F.col("i").alias("src"), F.col("j").alias("dst")
    )
    components = connected_components(autos).persist(_KEEP)
    lap("connected components")
    comp_i = components.select(F.col("node").alias("i"), F.col("component").alias("ci"))
    comp_j = components.select(F.col("node").alias("j"), F.col("component").alias("cj"))
    placed = likely.join(comp_i, "i", "left").join(comp_j, "j", "left")
    within = F.col("ci").isNotNull() & F.col("ci").eqNullSafe(F.col("cj"))  # never null
    candidates = (
        placed.where(within)
        .groupBy("i")
        .agg(
            F.collect_list(F.struct("j", "score", "decision", "rule_set", "rank")).alias(
                "candidates"
            )
        )
    )
    seen = component_counts(records, components)
    grouped = (
        records.join(components, records["pos"] == components["node"])
        .join(candidates, records["pos"] == candidates["i"], "left")
        .join(seen, records["pos"] == seen["t"], "left")
        .select("component", "pos", "id", "features", "candidates", "totals", "seen")
    )
    replayed = replay(grouped, spec).persist(_KEEP)
    totals = dict.fromkeys(STAT_NAMES, 0)
    for row in replayed.where(F.col("kind") == "stats").select("counts").collect():
        for name, value in zip(STAT_NAMES, row["counts"], strict=True):
            totals[name] += value
    lap("clustering")

    ids = records.select("pos", "id")
    across = (  # potential matches between components: no cluster decision depends on them
        placed.where(~within)
        .join(ids.withColumnRenamed("pos", "i").withColumnRenamed("id", "patient_id"), "i")
        .join(ids.withColumnRenamed("pos", "j").withColumnRenamed("id", "other_id"), "j")
        .select(
            F.col("i").alias("pos"),
            "patient_id",
            "other_id",
            "score",
            F.lit("potential").alias("kind"),
        )
    )
    review = (
        replayed.where(F.col("kind") == "review")
        .select("pos", "patient_id", "other_id", "score", F.col("review").alias("kind"))
        .unionByName(across)
        .persist(_KEEP)
    )
    kinds = {row["kind"]: row["count"] for row in review.groupBy("kind").count().collect()}
    lap("review items")

    labels = replayed.where(F.col("kind") == "member").select("pos", "label")
    labelled = ids.join(labels, "pos", "left").select(
        "pos",
        F.col("id").alias("patient_id"),
        F.coalesce(F.col("label"), F.col("pos")).alias("label"),
    )
    firsts = with_order(labelled.select("label").distinct().orderBy("label"), "_order")
    numbered = with_row_numbers(firsts, "_order", "n").select(
        "label", F.format_string("golden-%d", F.col("n") + 1).alias("golden_id")
    )
    members = labelled.join(numbered, "label").select("pos", "patient_id", "golden_id")
    members = members.persist(_KEEP)
    members.count()
    lap("golden ids")

    stats.clusters = (stats.records - totals["records"]) + totals["clusters"]
    stats.auto_links = totals["auto_links"]
    stats.potential_matches = kinds.get("potential", 0)
    stats.conflicts = kinds.get("conflict", 0)
    stats.merges = totals["merges"]
    stats.finished = time.perf_counter()
    log.info("spark engine: %s", json.dumps(stats.to_json()))
    log.info("spark engine stages (s): %s", json.dumps(stages))
    return SparkClusters(
        members,
        review,
        likely.select("i", "j", "score", "decision"),
        errors,
        stats,
        stages,
        (prepared, records, likely, components, replayed, review, members),
    )


def _laps(stages: dict[str, float], started: float) -> Callable[[str], None]:
    """A function that records the seconds since the last call (or ``started``) as a stage."""
    last = [started]

    def lap(name: str) -> None:
        now = time.perf_counter()
        stages[name] = round(now - last[0], 2)
        last[0] = now

    return lap
