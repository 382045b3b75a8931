"""The Spark engine against the single-machine engine, on the same files and rules.

The two engines must give the same clusters, golden ids, review items and counts, record
for record: the Spark engine replays the single-machine decisions, with the term counts the
single-machine engine holds at each record (those of the records before it), it does not
approximate them. The pairwise F1 between the two clusterings is then 1.0 (the issue asks
at least 0.995).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from pyspark.sql import SparkSession

from clientregistry.batch.dedupe import Deduplicator
from clientregistry.batch.evaluate import pairwise_scores
from clientregistry.batch.readers import SourceRecord, read_patients
from clientregistry.config import DEFAULT_RECORD_ID_SYSTEMS
from clientregistry.matching.blocking import DEFAULT_BLOCK_LIMIT, DEFAULT_SINGLE_LIMIT
from clientregistry.matching.matcher import Matcher
from clientregistry.matching.rules import default_rules
from clientregistry.matching.term_frequency import TermCounts
from clientregistry.spark.engine import dedupe_source, link_records
from clientregistry.spark.sources import read_source
from clientregistry.spark.spec import MatchSpec

SPEC = MatchSpec.of(
    default_rules(), DEFAULT_RECORD_ID_SYSTEMS, 200, DEFAULT_BLOCK_LIMIT, DEFAULT_SINGLE_LIMIT
)
"""As ``dedupe --engine spark`` runs: ``dedupe``'s selective choice of candidates."""
WHOLE_BLOCKS = MatchSpec.of(default_rules(), DEFAULT_RECORD_ID_SYSTEMS, 200)
"""Every record of a block a candidate (``MemoryIndex``'s choice)."""


@dataclass
class Outcome:
    golden: list[tuple[str, str]]
    review: set[tuple[str, str, float, str]]
    stats: dict[str, Any]


def single_machine(path: Path, *, whole_file_counts: bool, selective: bool = True) -> Outcome:
    """The single-machine engine; by default with ``dedupe``'s (and the registry's) choice of
    candidates (``PositionIndex``), without ``selective`` every record of a block
    (``MemoryIndex``)."""
    matcher = Matcher(default_rules(), record_id_systems=DEFAULT_RECORD_ID_SYSTEMS)
    records = [r for r in read_patients(path) if isinstance(r, SourceRecord)]
    counts = None
    if whole_file_counts:
        counts = TermCounts(matcher.extractor)
        for record in records:
            counts.add(matcher.extractor.extract(record.resource))
    dedup = Deduplicator(matcher, term_counts=counts, selective=selective)
    for record in records:
        dedup.add(record.record_id, record.resource, record.line)
    review = {(r.record_id, r.other_id, round(r.score, 9), r.kind) for r in dedup.review}
    return Outcome(dedup.golden_ids(), review, dedup.stats.to_json())


def on_spark(spark: SparkSession, path: Path, spec: MatchSpec = SPEC) -> Outcome:
    clusters = dedupe_source(read_source(spark, path), spec)
    members = clusters.members.orderBy("pos").collect()
    review = {
        (r["patient_id"], r["other_id"], round(r["score"], 9), r["kind"])
        for r in clusters.review.collect()
    }
    stats = clusters.stats.to_json()
    clusters.release()
    return Outcome([(r["patient_id"], r["golden_id"]) for r in members], review, stats)


COUNTED = ("records", "clusters", "auto_links", "potential_matches", "conflicts", "merges")


def assert_same(spark_run: Outcome, local: Outcome) -> None:
    assert spark_run.golden == local.golden
    assert spark_run.review == local.review
    for name in (*COUNTED, "candidate_pairs", "capped_queries"):
        assert spark_run.stats[name] == local.stats[name], name


def f1(a: Outcome, b: Outcome) -> float:
    return pairwise_scores(dict(a.golden), dict(b.golden)).f1


@pytest.fixture(scope="module")
def febrl1_spark(spark: SparkSession, febrl1: Path) -> Outcome:
    return on_spark(spark, febrl1)


@pytest.fixture(scope="module")
def synthetic_spark(spark: SparkSession, synthetic: Path) -> Outcome:
    return on_spark(spark, synthetic)


def test_febrl1_same_clusters_as_single_machine(febrl1_spark: Outcome, febrl1: Path) -> None:
    local = single_machine(febrl1, whole_file_counts=False)
    assert local.stats["auto_links"] > 400  # FEBRL1: 500 people, 1,000 records
    assert_same(febrl1_spark, local)


def test_febrl1_agrees_with_the_single_machine_path(febrl1_spark: Outcome, febrl1: Path) -> None:
    local = single_machine(febrl1, whole_file_counts=False)
    assert f1(febrl1_spark, local) >= 0.995
    for name in COUNTED:  # on FEBRL1 no pair is near enough a threshold to move
        assert febrl1_spark.stats[name] == local.stats[name], name


def test_conflicts_joined_and_kept_as_the_single_machine_engine_does(
    synthetic_spark: Outcome, synthetic: Path
) -> None:
    local = single_machine(synthetic, whole_file_counts=False)
    # households and twins: records auto-matching two clusters, joined or kept apart
    assert local.stats["merges"] > 0
    assert local.stats["conflicts"] > 0
    assert_same(synthetic_spark, local)


def test_synthetic_agrees_with_the_single_machine_path(
    synthetic_spark: Outcome, synthetic: Path
) -> None:
    local = single_machine(synthetic, whole_file_counts=False)
    assert f1(synthetic_spark, local) == 1.0


GIVEN = [
    "Aisha",
    "Brian",
    "Carol",
    "David",
    "Esther",
    "Faith",
    "Grace",
    "Henry",
    "Irene",
    "James",
    "Kevin",
    "Lydia",
    "Moses",
    "Naomi",
]


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A crowded name: 28 people called Nakato, all born on 1 January of different years,
    so each shares one blocking key (family name and birth day) with all those before it."""
    lines = [
        orjson.dumps(
            {
                "resourceType": "Patient",
                "id": f"n{n}",
                "name": [{"family": "Nakato", "given": [GIVEN[n % len(GIVEN)]]}],
                "gender": "female" if n % 2 else "male",
                "birthDate": f"{1950 + n}-01-01",
            }
        )
        for n in range(28)
    ]
    path = tmp_path_factory.mktemp("crowded") / "crowded.ndjson"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_a_crowded_block_gives_dedupes_candidates_not_the_whole_block(
    spark: SparkSession, crowded: Path
) -> None:
    """Where more than 8 records share one key with a record, ``dedupe`` scores the newest 8
    of them; the Spark engine chooses the same ones, pair for pair."""
    selective = single_machine(crowded, whole_file_counts=False)
    whole = single_machine(crowded, whole_file_counts=False, selective=False)
    assert whole.stats["candidate_pairs"] > selective.stats["candidate_pairs"]
    assert_same(on_spark(spark, crowded), selective)


def test_whole_blocks_reproduce_the_whole_block_choice(
    spark: SparkSession, synthetic: Path
) -> None:
    """Without limits the join pairs every record of a block, as ``MemoryIndex`` does."""
    assert_same(
        on_spark(spark, synthetic, WHOLE_BLOCKS),
        single_machine(synthetic, whole_file_counts=False, selective=False),
    )


def test_term_counts_are_those_of_the_records_before(
    synthetic_spark: Outcome, synthetic: Path
) -> None:
    """Whole-file counts (what Spark used before, as Splink does) make other clusters here:
    the agreement above is the in-order counts', not a set too easy to tell apart."""
    whole = single_machine(synthetic, whole_file_counts=True)
    assert whole.golden != synthetic_spark.golden


def test_link_records_clusters_a_dataframe_of_resources(
    spark: SparkSession, febrl1: Path, febrl1_spark: Outcome
) -> None:
    lines = febrl1.read_bytes().splitlines()
    rows = [(n, orjson.loads(line)["id"], line.decode()) for n, line in enumerate(lines)]
    frame = spark.createDataFrame(rows, "position long, id string, resource string")
    clusters = link_records(frame.orderBy("id"), SPEC)  # positions, not the frame, order
    golden = [(r["patient_id"], r["golden_id"]) for r in clusters.members.orderBy("pos").collect()]
    pairs = clusters.pairs.count()
    clusters.release()
    assert golden == febrl1_spark.golden
    assert pairs == febrl1_spark.stats["auto_links"] + febrl1_spark.stats["potential_matches"]
