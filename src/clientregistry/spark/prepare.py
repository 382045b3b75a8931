"""Raw records to features and blocking keys, on the executors, a batch of rows at a time.

The single-machine reader's functions check each record and make it a Patient
(:func:`~clientregistry.batch.readers.ndjson_record`,
:func:`~clientregistry.batch.readers.check_patient`,
:func:`~clientregistry.batch.readers.csv_patient`); the matcher extracts its features and
derives its blocking keys. A record that cannot be used comes out with ``error`` set, saying
why, as the single-machine path says it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pyarrow as pa
from pyspark.sql import DataFrame

from clientregistry.batch.readers import (
    CsvMapping,
    ReadResult,
    check_patient,
    csv_patient,
    ndjson_record,
)
from clientregistry.errors import InvalidRecord
from clientregistry.spark.sources import COLUMNS, META, Source
from clientregistry.spark.spec import MatchSpec
from clientregistry.store.features_codec import encode_features

PREPARED_SCHEMA = (
    "_pos long, _line long, _entry long, id string, features string, keys array<string>, "
    "tf array<string>, error string"
)
"""``tf`` holds the record's values of the term-frequency slots (``TermCounts.slots``)."""


def prepare(source: Source, spec: MatchSpec) -> DataFrame:
    """Features, blocking keys and term-frequency values of every record of ``source``."""
    kind, mapping = source.kind, source.mapping

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        matcher = spec.matcher()
        slots = spec.term_slots()
        extract, keys_of = matcher.extractor.extract, matcher.blocker.keys
        for batch in batches:
            out: dict[str, list[Any]] = {name: [] for name in _NAMES}
            for row in batch.to_pylist():
                result = _read(row, kind, mapping)
                if result is None:
                    continue
                out["_pos"].append(row["_pos"])
                out["_line"].append(row["_line"])
                out["_entry"].append(row["_entry"])
                if isinstance(result, InvalidRecord):
                    out["id"].append(result.record_id)
                    out["features"].append(None)
                    out["keys"].append(None)
                    out["tf"].append(None)
                    out["error"].append(result.message)
                    continue
                features = extract(result.resource)
                out["id"].append(result.record_id)
                out["features"].append(encode_features(features))
                out["keys"].append(keys_of(features))
                out["tf"].append([features[slot] for slot in slots])
                out["error"].append(None)
            yield pa.RecordBatch.from_pydict(out, schema=_ARROW_SCHEMA)

    return source.frame.mapInArrow(run, PREPARED_SCHEMA)


_ARROW_SCHEMA = pa.schema(
    [
        ("_pos", pa.int64()),
        ("_line", pa.int64()),
        ("_entry", pa.int64()),
        ("id", pa.string()),
        ("features", pa.string()),
        ("keys", pa.list_(pa.string())),
        ("tf", pa.list_(pa.string())),
        ("error", pa.string()),
    ]
)
_NAMES = _ARROW_SCHEMA.names


def _read(row: dict[str, Any], kind: str, mapping: CsvMapping) -> ReadResult | None:
    """One raw row as a checked Patient, a problem, or ``None`` (a blank line)."""
    line, entry = row["_line"], row["_entry"]
    if kind == COLUMNS:
        cells = {name: value for name, value in row.items() if name not in META}
        try:
            return csv_patient(cells, mapping, line)
        except InvalidRecord as error:
            return error
    text = row["_text"]
    if text is None or not text.strip():
        return None
    if entry is None:
        return ndjson_record(text, line)
    try:  # a Bundle's entry, checked by the driver already
        return check_patient(orjson.loads(text), line, entry)
    except InvalidRecord as error:
        return error
