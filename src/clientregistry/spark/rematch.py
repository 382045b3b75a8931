"""A registry's re-match on Spark: where each record would go under new rules.

The registry's records come in as a DataFrame (``position``, ``record_id``, ``resource``
and their state: ``version``, ``golden_before``, ``placed``, ``status_before``, the human
decisions ``not_with`` and ``settled``), in the order the single-machine re-match reads
them (records people placed first, then the others, each in id order). The steps are the
Spark engine's (:mod:`clientregistry.spark.engine`): features and blocking keys, candidate
pairs by a join on the keys, scoring with the term counts of the records before each
record (:mod:`clientregistry.spark.counts`), as the single-machine replay counts them.

Then each record is placed by :class:`~clientregistry.registry.rematch_plan.Replay`, the
single-machine re-match's own code, run on the executors over groups of records that no
decision crosses: connected components of a graph whose edges are the auto-match pairs,
the pairs known not to be one person (a break keeps two records apart, so both must be in
the same group for that to be seen) and the records people placed in one golden record
(they stay together). A record only joins a person through an auto match or a person's
decision, so no person reaches beyond its group; a potential match with a record of
another group changes nothing but the record's review items and status, and is added to
them after the group's replay, as the replay would have (unless the pair is broken or
resolved).

The replay checks a record against the members of the persons it matches (cannot-links)
with the counts of the records before it, which each record's row carries for the values of
its group's records. So the plan is the single-machine dry run's, change for change.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from clientregistry.batch.pipeline import Prepared
from clientregistry.batch.readers import CsvMapping
from clientregistry.matching.blocking import CandidateSet
from clientregistry.matching.matcher import PreparedRecord
from clientregistry.matching.scoring import PairScore
from clientregistry.registry.rematch_plan import Placed, Replay
from clientregistry.spark.candidates import candidate_pairs
from clientregistry.spark.components import connected_components
from clientregistry.spark.counts import CountsAt, component_counts, with_totals
from clientregistry.spark.engine import _KEEP
from clientregistry.spark.prepare import prepare
from clientregistry.spark.scoring import score_pairs
from clientregistry.spark.sources import JSON, Source
from clientregistry.spark.spec import MatchSpec
from clientregistry.store.enums import IssueKind, MatchStatus
from clientregistry.store.features_codec import decode_features

PLACED_SCHEMA = pa.schema(
    [
        ("pos", pa.int64()),
        ("record_id", pa.string()),
        ("cluster", pa.int64()),
        ("status", pa.string()),
        ("score", pa.float64()),
        ("rule_set", pa.string()),
        ("issue_other", pa.list_(pa.string())),
        ("issue_kind", pa.list_(pa.string())),
        ("issue_score", pa.list_(pa.float64())),
    ]
)
"""One row per record: where the replay put it, its status, and the review items it opens."""

_SPARK_SCHEMA = (
    "pos long, record_id string, cluster long, status string, score double, rule_set string, "
    "issue_other array<string>, issue_kind array<string>, issue_score array<double>"
)
_NOTHING_FOUND = CandidateSet([], False, 0)


def place_records(records: DataFrame, spec: MatchSpec) -> DataFrame:
    """Where each record of ``records`` (see the module notes) goes under ``spec``'s rules:
    rows of :data:`PLACED_SCHEMA`, ``cluster`` the position of the person's first record."""
    frame = records.select(
        F.col("position").cast("long").alias("_pos"),
        F.lit(None).cast("long").alias("_line"),
        F.lit(None).cast("long").alias("_entry"),
        F.col("resource").alias("_text"),
    )
    prepared = prepare(Source(frame, JSON, CsvMapping()), spec)
    found = prepared.where(F.col("error").isNull()).select(
        F.col("_pos").alias("pos"), "id", "features", "keys", "tf"
    )
    found = with_totals(found, len(spec.term_slots())).persist(_KEEP)
    pairs = candidate_pairs(found, spec.candidate_limit, spec.block_limit, spec.single_limit)
    likely = score_pairs(pairs, found, spec).persist(_KEEP)

    state = records.select(
        F.col("position").cast("long").alias("pos"),
        "version",
        "golden_before",
        "placed",
        "status_before",
        "not_with",
        "settled",
    )
    edges = (
        likely.where(F.col("decision") == "auto")
        .select(F.col("i").alias("src"), F.col("j").alias("dst"))
        .unionByName(_broken_edges(records))
        .unionByName(_placed_edges(records))
    )
    components = connected_components(edges)
    component = (
        found.select("pos")
        .join(components, F.col("pos") == F.col("node"), "left")
        .select("pos", F.coalesce("component", "pos").alias("component"))
        .persist(_KEEP)
    )
    ci = component.select(F.col("pos").alias("i"), F.col("component").alias("ci"))
    cj = component.select(F.col("pos").alias("j"), F.col("component").alias("cj"))
    scored = likely.join(ci, "i").join(cj, "j")
    within = (
        scored.where(F.col("ci") == F.col("cj"))
        .groupBy("i")
        .agg(
            F.collect_list(F.struct("j", "score", "decision", "rule_set", "rank")).alias(
                "candidates"
            )
        )
    )
    ids = found.select(F.col("pos").alias("j"), F.col("id").alias("other_id"))
    across = (
        scored.where((F.col("ci") != F.col("cj")) & (F.col("decision") != "none"))
        .join(ids, "j")
        .groupBy("i")
        .agg(F.collect_list(F.struct("other_id", "score")).alias("across"))
    )
    seen = component_counts(found, component.withColumnRenamed("pos", "node"))
    grouped = (
        found.select("pos", "id", "features", "totals")
        .join(component, "pos")
        .join(seen.withColumnRenamed("t", "pos"), "pos", "left")
        .join(state, "pos")
        .join(within, F.col("pos") == within["i"], "left")
        .drop("i")
        .join(across, F.col("pos") == across["i"], "left")
        .drop("i")
    )
    ordered = grouped.repartition("component").sortWithinPartitions("component", "pos")

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        yield from _replay(batches, spec)

    return ordered.mapInArrow(run, _SPARK_SCHEMA)


def _broken_edges(records: DataFrame) -> DataFrame:
    """Pairs known not to be one person, as edges between their positions."""
    mine = records.select(
        F.col("position").cast("long").alias("src"), F.explode("not_with").alias("other")
    )
    theirs = records.select(F.col("position").cast("long").alias("dst"), F.col("record_id"))
    return mine.join(theirs, mine["other"] == theirs["record_id"]).select("src", "dst")


def _placed_edges(records: DataFrame) -> DataFrame:
    """Records people placed in one golden record: each to the first of them."""
    placed = records.where(F.col("placed") & F.col("golden_before").isNotNull()).select(
        F.col("position").cast("long").alias("src"), "golden_before"
    )
    heads = placed.groupBy("golden_before").agg(F.min("src").alias("dst"))
    return placed.join(heads, "golden_before").select("src", "dst")


def _replay(batches: Iterator[pa.RecordBatch], spec: MatchSpec) -> Iterator[pa.RecordBatch]:
    """The single-machine replay over one partition's groups, records in position order."""
    matcher = spec.matcher()
    strength = matcher.strength
    broken: dict[str, set[str]] = {}
    resolved: set[frozenset[str]] = set()
    counts = CountsAt(matcher.extractor)
    done = Replay(matcher, broken, resolved, term_counts=counts)
    positions: list[int] = []
    local: dict[int, int] = {}
    for batch in batches:
        for row in batch.to_pylist():
            record_id = row["id"]
            not_with = set(row["not_with"] or ())
            if not_with:
                broken[record_id] = not_with
            for other in row["settled"] or ():
                resolved.add(frozenset((record_id, other)))
            scored = sorted(
                (-strength(score), c["rank"], local[c["j"]], score)
                for c in row["candidates"] or ()
                for score in (PairScore(c["score"], c["decision"], c["rule_set"]),)
            )
            prepared = PreparedRecord(
                decode_features(row["features"]),
                (),
                _NOTHING_FOUND,
                tuple((position, score) for _, _, position, score in scored),
            )
            extra = (row["version"], row["golden_before"], row["placed"], row["status_before"])
            local[row["pos"]] = len(positions)
            positions.append(row["pos"])
            counts.at(row["totals"], row["seen"])  # the single-machine replay's, at this record
            done.add(Prepared(record_id, None, None, prepared, extra))
            _add_across(done.placed[-1], row["across"] or [], not_with, resolved)
    yield _batch(done.placed, positions)


def _add_across(
    placed: Placed,
    across: list[dict[str, Any]],
    not_with: set[str],
    resolved: set[frozenset[str]],
) -> None:
    """Potential matches with records of other groups: review items, as the replay opens
    them (strongest first after the group's own; broken and resolved pairs left out)."""
    record_id = placed.record_id
    items = [
        (c["other_id"], IssueKind.POTENTIAL.value, c["score"])
        for c in sorted(across, key=lambda c: -c["score"])
        if c["other_id"] not in not_with and frozenset((record_id, c["other_id"])) not in resolved
    ]
    if not items:
        return
    placed.issues.extend(items)
    if placed.status in (MatchStatus.AUTO, MatchStatus.NONE):
        placed.status = MatchStatus.POTENTIAL


def _batch(placed: list[Placed], positions: list[int]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "pos": positions,
            "record_id": [p.record_id for p in placed],
            "cluster": [positions[p.cluster] for p in placed],
            "status": [p.status.value for p in placed],
            "score": [p.score for p in placed],
            "rule_set": [p.rule_set for p in placed],
            "issue_other": [[i[0] for i in p.issues] for p in placed],
            "issue_kind": [[i[1] for i in p.issues] for p in placed],
            "issue_score": [[float(i[2]) for i in p.issues] for p in placed],
        },
        schema=PLACED_SCHEMA,
    )
