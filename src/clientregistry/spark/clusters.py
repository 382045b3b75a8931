"""The single-machine clustering, replayed on the executors one group of records at a time.

:class:`~clientregistry.batch.dedupe.Deduplicator` takes records in input order and decides,
for each, which cluster it joins, which conflicts to join or keep apart and what goes to
review: a sequential process, since each decision depends on the clusters made before. But a
record only ever joins a cluster through an auto match (the strongest one, or a conflict
whose evidence holds together), so a cluster never reaches beyond the connected component of
the auto-match graph its records are in, and every decision about a record depends only on
the records of its component (its candidates' clusters, the pair scores among them). The
components are found by :mod:`clientregistry.spark.components`; here each partition's
components (sorted by component, then input order) are fed to one ``Deduplicator`` with
their scored candidates, exactly as the single-machine engine feeds records it scored
itself, and with the term counts it would hold at each record (those of the records before
it, for the cannot-link checks against a cluster's members). Its decisions — cluster,
conflicts joined or kept, review items — are the single-machine engine's by construction,
whatever rules it applies.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame

from clientregistry.batch.dedupe import Deduplicator
from clientregistry.matching.blocking import CandidateSet
from clientregistry.matching.matcher import PreparedRecord
from clientregistry.matching.scoring import PairScore
from clientregistry.spark.counts import CountsAt
from clientregistry.spark.spec import MatchSpec
from clientregistry.store.features_codec import decode_features

STAT_NAMES = ("records", "clusters", "auto_links", "merges")

REPLAY_SCHEMA = (
    "kind string, pos long, label long, linked boolean, patient_id string, other_id string, "
    "score double, review string, counts array<long>"
)
"""One row per record (``member``: its cluster's first record), per review item
(``review``) and per partition (``stats``: :data:`STAT_NAMES`)."""

_ARROW_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),
        ("pos", pa.int64()),
        ("label", pa.int64()),
        ("linked", pa.bool_()),
        ("patient_id", pa.string()),
        ("other_id", pa.string()),
        ("score", pa.float64()),
        ("review", pa.string()),
        ("counts", pa.list_(pa.int64())),
    ]
)

_NOTHING_FOUND = CandidateSet([], False, 0)


def replay(grouped: DataFrame, spec: MatchSpec) -> DataFrame:
    """Cluster the records of ``grouped`` (``component``, ``pos``, ``id``, ``features``,
    ``candidates``: array of (j, score, decision, rule_set, rank) within the component,
    ``totals`` and ``seen``: the term counts before the record, :mod:`~.counts`, for the
    values of its component's records)."""
    ordered = grouped.repartition("component").sortWithinPartitions("component", "pos")

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        matcher = spec.matcher()
        strength = matcher.strength
        counts = CountsAt(matcher.extractor)
        dedup = Deduplicator(matcher, term_counts=counts)
        local: dict[int, int] = {}
        positions: list[int] = []
        linked: list[bool] = []
        for batch in batches:
            for row in batch.to_pylist():
                scored = sorted(
                    (
                        (-strength(score), c["rank"], local[c["j"]], score)
                        for c in row["candidates"] or ()
                        for score in (PairScore(c["score"], c["decision"], c["rule_set"]),)
                    ),
                )
                prepared = PreparedRecord(
                    decode_features(row["features"]),
                    (),
                    _NOTHING_FOUND,
                    tuple((position, score) for _, _, position, score in scored),
                )
                local[row["pos"]] = len(positions)
                counts.at(row["totals"], row["seen"])  # as the single-machine engine's now
                result = dedup.add_prepared(row["id"], prepared)
                positions.append(row["pos"])
                linked.append(result.golden_id is not None)
        yield from _results(dedup, positions, linked)

    return ordered.mapInArrow(run, REPLAY_SCHEMA)


def _results(
    dedup: Deduplicator, positions: list[int], linked: list[bool]
) -> Iterator[pa.RecordBatch]:
    out: dict[str, list[Any]] = {name: [] for name in _ARROW_SCHEMA.names}

    def row(**values: Any) -> None:
        for name in _ARROW_SCHEMA.names:
            out[name].append(values.get(name))

    first: dict[str, int] = {}
    for (record_id, golden), pos, joined in zip(dedup.golden_ids(), positions, linked, strict=True):
        label = first.setdefault(golden, pos)  # records come in order: the first is the least
        row(kind="member", pos=pos, label=label, linked=joined, patient_id=record_id)
    pos_of = dict(zip(dedup.ids, positions, strict=True))
    for item in dedup.review:
        row(
            kind="review",
            pos=pos_of[item.record_id],
            patient_id=item.record_id,
            other_id=item.other_id,
            score=item.score,
            review=item.kind,
        )
    stats = dedup.stats
    row(kind="stats", counts=[getattr(stats, name) for name in STAT_NAMES])
    yield pa.RecordBatch.from_pydict(out, schema=_ARROW_SCHEMA)
