"""Input files as Spark DataFrames of raw records, in input order.

NDJSON is read as lines (``spark.read.text``), CSV by Spark's CSV reader, Parquet by Spark's
Parquet reader: each on the executors, file splits in parallel. A Parquet file either holds
one FHIR Patient a row (a ``resource`` column of JSON text or a struct) or flat columns named
as in CSV (the same ``--column`` mapping). A FHIR Bundle (``.json``) is one document: the
driver reads it with the single-machine reader.

Every raw record gets ``_pos`` (increasing in input order; it orders the matching, as the
single-machine engine takes records in input order) and ``_line`` (the line, or for Parquet
the row, where a problem is reported). The records themselves are checked and turned into
Patients by :mod:`clientregistry.spark.prepare` with the single-machine reader's functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import orjson
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from clientregistry.batch.readers import CsvMapping, SourceRecord, read_json_document
from clientregistry.errors import InvalidRecord
from clientregistry.spark.numbering import with_order, with_row_numbers

META = ("_pos", "_line", "_entry")
"""Columns the reader adds; the rest are the record (``_text``, or CSV/Parquet columns)."""

JSON = "json"
"""Kind of source whose records are FHIR JSON text in ``_text``."""
COLUMNS = "columns"
"""Kind of source whose records are flat columns mapped to a Patient (CSV, flat Parquet)."""


@dataclass
class Source:
    """Raw records of one input, and the problems found while reading it on the driver."""

    frame: DataFrame
    kind: str
    mapping: CsvMapping
    errors: list[tuple[int, InvalidRecord]] = field(default_factory=list)
    """(position, problem) found by the driver (a Bundle's entries)."""


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() == ".parquet" or path.is_dir()


def read_source(spark: SparkSession, path: Path, mapping: CsvMapping | None = None) -> Source:
    """The raw records of ``path`` by its suffix: ``.csv``, ``.json`` (a Bundle),
    ``.parquet`` (a file or a directory of part files), else NDJSON."""
    mapping = mapping or CsvMapping()
    suffix = path.suffix.lower()
    if is_parquet(path):
        return _parquet(spark, path, mapping)
    if suffix == ".csv":
        return _csv(spark, path, mapping)
    if suffix == ".json":
        return _bundle(spark, path, mapping)
    lines = with_order(spark.read.text(str(path)), "_pos")
    lines = with_row_numbers(lines, "_pos", "_row")
    frame = lines.select(
        "_pos",
        (F.col("_row") + 1).alias("_line"),
        F.lit(None).cast("long").alias("_entry"),
        F.col("value").alias("_text"),
    )
    return Source(frame, JSON, mapping)


def _csv(spark: SparkSession, path: Path, mapping: CsvMapping) -> Source:
    reader = spark.read.option("header", True).option("ignoreLeadingWhiteSpace", True)
    rows = reader.option("inferSchema", False).csv(str(path))
    if mapping.id not in rows.columns:
        raise InvalidRecord(
            f"no column {mapping.id!r} for the record id; columns are {', '.join(rows.columns)}",
            line=1,
        )
    numbered = with_row_numbers(with_order(rows, "_pos"), "_pos", "_row")
    columns = [F.col(f"`{name}`") for name in rows.columns if name not in (*META, "_row")]
    frame = numbered.select(
        "_pos",
        (F.col("_row") + 2).alias("_line"),  # the header is line 1
        F.lit(None).cast("long").alias("_entry"),
        *columns,
    )
    return Source(frame, COLUMNS, mapping)


def _parquet(spark: SparkSession, path: Path, mapping: CsvMapping) -> Source:
    rows = spark.read.parquet(str(path))
    numbered = with_row_numbers(with_order(rows, "_pos"), "_pos", "_row")
    meta: list[Column | str] = [
        "_pos",
        (F.col("_row") + 1).alias("_line"),
        F.lit(None).cast("long").alias("_entry"),
    ]
    if "resource" in rows.columns:
        resource = F.col("resource")
        if not isinstance(rows.schema["resource"].dataType, StringType):
            resource = F.to_json(resource)  # FHIR as nested structs
        return Source(numbered.select(*meta, resource.alias("_text")), JSON, mapping)
    if mapping.id not in rows.columns:
        raise InvalidRecord(
            f"no column 'resource' (FHIR JSON) and no column {mapping.id!r} for the record id; "
            f"columns are {', '.join(rows.columns)}",
            line=1,
        )
    columns = [
        F.col(f"`{name}`").cast("string").alias(name)
        for name in rows.columns
        if name not in (*META, "_row")
    ]
    return Source(numbered.select(*meta, *columns), COLUMNS, mapping)


def _bundle(spark: SparkSession, path: Path, mapping: CsvMapping) -> Source:
    rows = []
    errors = []
    for position, result in enumerate(read_json_document(path)):
        if isinstance(result, SourceRecord):
            text = orjson.dumps(result.resource).decode()
            rows.append((position, result.line, result.entry, text))
        else:
            errors.append((position, result))
    frame = spark.createDataFrame(rows, "_pos long, _line long, _entry long, _text string")
    return Source(frame, JSON, mapping, errors)
