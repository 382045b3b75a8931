"""``clientregistry dedupe --engine spark``: a file in, clusters and review items out.

What the command line calls: starts Spark (local mode, or ``--spark-master``), reads the
input, runs :func:`~clientregistry.spark.engine.dedupe_source` and writes the same files as
the single-machine path: clusters (``patient_id,golden_id`` in input order) and potential
matches and conflicts beside them, as CSV, or as Parquet when OUTPUT ends in ``.parquet``
(a directory of part files, as Spark writes it).
"""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from clientregistry.batch.dedupe import DedupeStats, potential_path_for
from clientregistry.batch.readers import CsvMapping
from clientregistry.errors import InvalidRecord
from clientregistry.matching.blocking import DEFAULT_BLOCK_LIMIT, DEFAULT_SINGLE_LIMIT
from clientregistry.matching.matcher import Matcher
from clientregistry.matching.rules import DecisionRules
from clientregistry.spark.engine import SparkClusters, dedupe_source
from clientregistry.spark.session import start_session
from clientregistry.spark.sources import is_parquet, read_source
from clientregistry.spark.spec import MatchSpec


@dataclass
class SparkRun:
    """What the command prints: the same summary as the single-machine path."""

    stats: DedupeStats
    matcher: Matcher
    potential_path: Path
    skipped: list[InvalidRecord] = field(default_factory=list)


def dedupe_on_spark(
    input_path: Path,
    output: Path,
    rules: DecisionRules,
    *,
    record_id_systems: Sequence[str],
    candidate_limit: int,
    mapping: CsvMapping,
    master: str | None,
    stop_on_error: bool,
    block_limit: int | None = None,
) -> SparkRun:
    """Deduplicate ``input_path`` on Spark and write ``output`` and its siblings.

    Raises :class:`InvalidRecord` for the first bad record with ``stop_on_error``, or when
    the input as a whole cannot be read (a CSV without its id column).

    Candidates are chosen as ``dedupe`` chooses them (the newest ``block_limit`` records of
    each block, default 100, and at most 8 sharing a single key), so the clusters are
    ``dedupe``'s, record for record.
    """
    spec = MatchSpec.of(
        rules,
        record_id_systems,
        candidate_limit,
        DEFAULT_BLOCK_LIMIT if block_limit is None else block_limit,
        DEFAULT_SINGLE_LIMIT,
    )
    with tempfile.TemporaryDirectory(prefix="clientregistry-spark-") as scratch:
        ours = SparkSession.getActiveSession() is None  # else a caller's (a test's): kept
        spark = start_session(master, local_dir=scratch)
        try:
            source = read_source(spark, input_path, mapping)
            clusters = dedupe_source(source, spec, stop_on_error=stop_on_error)
            potential_path = write_clusters(clusters, output)
            skipped = [
                InvalidRecord(row["message"], line=row["line"], record_id=row["patient_id"])
                for row in clusters.errors.orderBy("pos").toLocalIterator()
            ]
            clusters.stats.skipped = len(skipped)
            clusters.release()
        finally:
            if ours:
                spark.stop()
    return SparkRun(clusters.stats, spec.matcher(), potential_path, skipped)


def write_clusters(clusters: SparkClusters, output: Path) -> Path:
    """Write the clusters to ``output`` and review items beside it; return the latter's path."""
    members = clusters.members.orderBy("pos").select("patient_id", "golden_id")
    review = clusters.review.orderBy("pos", "kind", F.desc("score"), "other_id").select(
        "patient_id", "other_id", F.round("score", 4).alias("score")
    )
    potential_path = potential_path_for(output)
    if is_parquet(output):
        members.write.mode("overwrite").parquet(str(output))
        review.write.mode("overwrite").parquet(str(potential_path))
        return potential_path
    output.parent.mkdir(parents=True, exist_ok=True)
    _write_csv(output, ["patient_id", "golden_id"], _rows(members))
    scores = ((row[0], row[1], f"{row[2]:.4f}") for row in _rows(review))
    _write_csv(potential_path, ["patient_id", "other_id", "score"], scores)
    return potential_path


def _rows(frame: DataFrame) -> Iterator[tuple[Any, ...]]:
    """The frame's rows, streamed to the driver a partition at a time."""
    for row in frame.toLocalIterator(prefetchPartitions=True):
        yield tuple(row)


def _write_csv(path: Path, header: list[str], rows: Iterator[tuple[Any, ...]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
