"""A re-match's dry run on Apache Spark (``clientregistry rematch --engine spark``).

The registry's records are written to Parquet (in the order the single-machine re-match
reads them, with their golden record, match status and the decisions people made), Spark
places every record under the new rules (:mod:`clientregistry.spark.rematch`) and the
driver compares where they went with the registry exactly as the single-machine dry run
does (:func:`~clientregistry.registry.rematch_plan.plan_changes`): same summary, same CSV of
changes. Only the matching moves to Spark; the comparison is one pass over one row per
record. Applying a plan stays with the single-machine re-match (it writes to the registry
in batches while it serves).

pyspark is an optional extra (``clientregistry[spark]``): it is imported only when asked for.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from clientregistry.batch.readers import SourceRecord
from clientregistry.matching.blocking import DEFAULT_BLOCK_LIMIT, DEFAULT_SINGLE_LIMIT
from clientregistry.registry.rematch_plan import Placed, RegistryRecords, Replay
from clientregistry.registry.rules_in_force import MatcherSpec
from clientregistry.store.enums import MatchStatus

PARQUET_ROWS = 20_000
"""Records per Parquet row group written (and per batch read from the database)."""


def replay_on_spark(
    url: str,
    spec: MatcherSpec,
    broken: dict[str, set[str]],
    resolved: set[frozenset[str]],
    *,
    master: str | None = None,
    block_limit: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> Replay:
    """Match every record of the registry at ``url`` again under ``spec``'s rules, on Spark
    (local mode, or the cluster at ``master``): the same :class:`Replay` result as
    :func:`~clientregistry.registry.rematch_plan.replay` gives, for
    :func:`~clientregistry.registry.rematch_plan.plan_changes`."""
    from pyspark.sql import SparkSession

    from clientregistry.spark.rematch import place_records
    from clientregistry.spark.session import start_session
    from clientregistry.spark.spec import MatchSpec

    match_spec = MatchSpec(
        json.dumps(spec.document, sort_keys=True),
        tuple(sorted(spec.record_id_systems)),
        spec.candidate_limit,
        DEFAULT_BLOCK_LIMIT if block_limit is None else block_limit,
        DEFAULT_SINGLE_LIMIT,
    )
    settled: dict[str, set[str]] = {}
    for pair in resolved:
        a, b = sorted(pair)
        settled.setdefault(a, set()).add(b)
        settled.setdefault(b, set()).add(a)
    with tempfile.TemporaryDirectory(prefix="clientregistry-rematch-spark-") as scratch:
        records_path = Path(scratch) / "records.parquet"
        states = write_records(url, records_path, broken, settled)
        ours = SparkSession.getActiveSession() is None  # else a caller's (a test's): kept
        spark = start_session(master, local_dir=str(Path(scratch) / "spark"))
        try:
            frame = spark.read.parquet(str(records_path))
            rows = place_records(frame, match_spec).toLocalIterator(prefetchPartitions=True)
            placed = _placed(rows, states)
        finally:
            if ours:
                spark.stop()
    done = Replay(spec.build(), broken, resolved)
    done.placed = placed
    done.ids = [p.record_id for p in placed]
    for position, (_, golden_before, by_person, _) in enumerate(states):
        if by_person and golden_before is not None:
            done._confirmed.setdefault(golden_before, position)
    if on_progress is not None:
        on_progress(len(placed))
    return done


State = tuple[int, str | None, bool, str]
"""A record's ``(version, golden record, placed by a person, match status)``."""


def write_records(
    url: str, path: Path, broken: dict[str, set[str]], settled: dict[str, set[str]]
) -> list[State]:
    """Every record of the registry at ``url`` to Parquet at ``path``, in the single-machine
    re-match's order (see :class:`~clientregistry.registry.rematch_plan.RegistryRecords`),
    read in one snapshot; their states, by position."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("position", pa.int64()),
            ("record_id", pa.string()),
            ("resource", pa.string()),
            ("version", pa.int64()),
            ("golden_before", pa.string()),
            ("placed", pa.bool_()),
            ("status_before", pa.string()),
            ("not_with", pa.list_(pa.string())),
            ("settled", pa.list_(pa.string())),
        ]
    )
    states: list[State] = []
    with pq.ParquetWriter(str(path), schema) as writer:
        columns: dict[str, list[Any]] = {name: [] for name in schema.names}

        def flush() -> None:
            if columns["position"]:
                writer.write_table(pa.table(columns, schema=schema))
                for values in columns.values():
                    values.clear()

        for record in RegistryRecords(url).read():
            if not isinstance(record, SourceRecord):  # (a stored record always reads)
                continue
            record_id = record.record_id
            version, golden, by_person, status = record.extra
            body = dict(record.resource)
            body["id"] = record_id  # the replay knows a record by its id in the registry
            columns["position"].append(len(states))
            columns["record_id"].append(record_id)
            columns["resource"].append(json.dumps(body, separators=(",", ":")))
            columns["version"].append(version)
            columns["golden_before"].append(golden)
            columns["placed"].append(by_person)
            columns["status_before"].append(status)
            columns["not_with"].append(sorted(broken.get(record_id, ())))
            columns["settled"].append(sorted(settled.get(record_id, ())))
            states.append((version, golden, by_person, status))
            if len(columns["position"]) >= PARQUET_ROWS:
                flush()
        flush()
    return states


def _placed(rows: Iterator[Any], states: list[State]) -> list[Placed]:
    """The records, by position, as the replay placed them."""
    found: list[Placed | None] = [None] * len(states)
    for row in rows:
        version, golden_before, _, status_before = states[row["pos"]]
        found[row["pos"]] = Placed(
            row["record_id"],
            version,
            golden_before,
            MatchStatus(status_before),
            row["cluster"],
            MatchStatus(row["status"]),
            row["score"],
            row["rule_set"],
            list(zip(row["issue_other"], row["issue_kind"], row["issue_score"], strict=True)),
        )
    missing = sum(1 for record in found if record is None)
    if missing:
        raise RuntimeError(f"Spark placed no record at {missing} positions")
    return [record for record in found if record is not None]
