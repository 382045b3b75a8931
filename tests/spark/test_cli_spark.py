"""``clientregistry dedupe --engine spark``: the same files, messages and summary as the
single-machine path, from NDJSON, CSV and Parquet, to CSV or Parquet."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession
from typer.testing import CliRunner, Result

from clientregistry.cli import app

runner = CliRunner()


def run(*args: object) -> Result:
    return runner.invoke(app, [str(a) for a in args])


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def summary(result: Result) -> str:
    """The summary's counts, without the speed (which differs) and rich's line breaks."""
    text = re.sub(r"\s+", " ", result.stderr)
    found = re.search(r"[\d,]+ records, .*?joined clusters\)", text)
    assert found is not None, result.output
    return found.group(0)


def both(input_path: Path, tmp_path: Path, *extra: object) -> tuple[Result, Result]:
    local = run("dedupe", input_path, "-o", tmp_path / "local.csv", *extra)
    spark = run("dedupe", input_path, "-o", tmp_path / "spark.csv", "--engine", "spark", *extra)
    return local, spark


def test_febrl1_same_files_and_summary(spark: SparkSession, febrl1: Path, tmp_path: Path) -> None:
    local, on_spark = both(febrl1, tmp_path)
    assert local.exit_code == 0, local.output
    assert on_spark.exit_code == 0, on_spark.output
    assert summary(on_spark) == summary(local)
    assert summary(on_spark).startswith("1,000 records, 504 clusters")  # 500 people
    clusters = read_rows(tmp_path / "spark.csv")
    assert clusters == read_rows(tmp_path / "local.csv")  # same ids, in input order
    assert clusters[0] == ["patient_id", "golden_id"]
    potential = read_rows(tmp_path / "spark.potential.csv")
    assert potential[0] == ["patient_id", "other_id", "score"]
    local_pairs = {tuple(row[:2]) for row in read_rows(tmp_path / "local.potential.csv")}
    assert {tuple(row[:2]) for row in potential} == local_pairs


def test_a_block_limit_past_the_largest_block_changes_nothing(
    spark: SparkSession, febrl1: Path, tmp_path: Path
) -> None:
    """FEBRL1's blocks hold a few records: bounding the join at 50 a block keeps every pair,
    so the clusters are still the single machine's."""
    local = run("dedupe", febrl1, "-o", tmp_path / "local.csv")
    bounded = run(
        "dedupe", febrl1, "-o", tmp_path / "bounded.csv", "--engine", "spark", "--block-limit", 50
    )
    assert bounded.exit_code == 0, bounded.output
    assert summary(bounded) == summary(local)
    assert read_rows(tmp_path / "bounded.csv") == read_rows(tmp_path / "local.csv")


BAD_NDJSON = [
    {
        "resourceType": "Patient",
        "id": "a1",
        "name": [{"family": "Nakato", "given": ["Aisha"]}],
        "birthDate": "1984-01-12",
    },
    "",
    "{not json",
    {"resourceType": "Observation", "id": "o1"},
    {"resourceType": "Patient", "name": [{"family": "Okello"}]},
    {"resourceType": "Patient", "id": "a2", "birthDate": "1984-02-30"},
    {"resourceType": "Patient", "id": "a1", "name": [{"family": "Nakato"}]},
    {
        "resourceType": "Patient",
        "id": "a3",
        "name": [{"family": "Nakato", "given": ["Aisha"]}],
        "birthDate": "1984-01-12",
    },
]


def write_ndjson(path: Path, lines: list[Any]) -> Path:
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def test_bad_records_are_skipped_and_listed_as_the_single_machine_path_does(
    spark: SparkSession, tmp_path: Path
) -> None:
    source = write_ndjson(tmp_path / "bad.ndjson", BAD_NDJSON)
    local, on_spark = both(source, tmp_path)
    assert on_spark.exit_code == 0, on_spark.output
    skipped = read_rows(tmp_path / "spark.skipped.csv")
    assert skipped == read_rows(tmp_path / "local.skipped.csv")
    assert [row[0] for row in skipped[1:]] == ["3", "4", "5", "6", "7"]
    assert "duplicate Patient id 'a1'" in skipped[-1][2]
    assert read_rows(tmp_path / "spark.csv") == read_rows(tmp_path / "local.csv")
    assert summary(on_spark) == summary(local)


def test_on_error_stop_stops_at_the_first_bad_line(spark: SparkSession, tmp_path: Path) -> None:
    source = write_ndjson(tmp_path / "bad.ndjson", BAD_NDJSON)
    local, on_spark = both(source, tmp_path, "--on-error", "stop")
    assert local.exit_code == on_spark.exit_code == 1
    assert isinstance(on_spark.exception, SystemExit)
    message = re.sub(r"\s+", "", on_spark.stderr)
    assert "bad.ndjson:3:notJSON" in message
    assert not (tmp_path / "spark.csv").exists()


CSV_ROWS = [
    ["rec_id", "sex", "date_of_birth", "given_name", "surname", "phone_number", "uganda_nin"],
    ["r1", "f", "1984-01-12", "Aisha", "Nakato", "0772410233", "CM123"],
    ["r2", "f", "19840112", "Aisha", "Nakatto", "0772410233", "CM123"],
    ["r3", "x", "1984-01-12", "Aisha", "Nakato", "", ""],
    ["r4", "m", "1990-13-01", "Brian", "Okello", "", ""],
    ["", "m", "1990-01-01", "Brian", "Okello", "", ""],
    ["r6", "m", "1990-01-01", "Brian", "Okello", "0701000000", ""],
]


def test_csv_and_parquet_in_parquet_out(spark: SparkSession, tmp_path: Path) -> None:
    source = tmp_path / "people.csv"
    with source.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(CSV_ROWS)
    _local, on_spark = both(source, tmp_path)
    assert on_spark.exit_code == 0, on_spark.output
    assert read_rows(tmp_path / "spark.csv") == read_rows(tmp_path / "local.csv")
    assert read_rows(tmp_path / "spark.skipped.csv") == read_rows(tmp_path / "local.skipped.csv")
    expected = read_rows(tmp_path / "local.csv")[1:]
    assert len({golden for _, golden in expected}) == 2  # r1 + r2, r6 alone

    # the same rows as a Parquet file (flat columns, the CSV mapping), clusters to Parquet
    header, *rows = CSV_ROWS
    table = pa.table({name: [row[n] or None for row in rows] for n, name in enumerate(header)})
    parquet_in = tmp_path / "people.parquet"
    pq.write_table(table, parquet_in)
    out = tmp_path / "clusters.parquet"
    result = run("dedupe", parquet_in, "-o", out, "--engine", "spark")
    assert result.exit_code == 0, result.output
    written = pq.read_table(out).to_pylist()
    assert [[r["patient_id"], r["golden_id"]] for r in written] == expected
    assert pq.read_table(tmp_path / "clusters.potential.parquet").column_names == [
        "patient_id",
        "other_id",
        "score",
    ]
    skipped = read_rows(tmp_path / "clusters.skipped.csv")
    assert [row[2] for row in skipped[1:]] == [
        row[2] for row in read_rows(tmp_path / "local.skipped.csv")[1:]
    ]


def test_parquet_of_fhir_resources(spark: SparkSession, febrl1: Path, tmp_path: Path) -> None:
    lines = febrl1.read_text(encoding="utf-8").splitlines()
    parquet_in = tmp_path / "febrl1.parquet"
    pq.write_table(pa.table({"resource": lines}), parquet_in, row_group_size=250)
    local = run("dedupe", febrl1, "-o", tmp_path / "local.csv")
    result = run("dedupe", parquet_in, "-o", tmp_path / "spark.csv", "--engine", "spark")
    assert result.exit_code == 0, result.output
    assert read_rows(tmp_path / "spark.csv") == read_rows(tmp_path / "local.csv")
    assert summary(result) == summary(local)


def test_refusals(spark: SparkSession, febrl1: Path, tmp_path: Path) -> None:
    train = run("dedupe", febrl1, "-o", tmp_path / "c.csv", "--engine", "spark", "--train")
    assert train.exit_code == 2
    assert "--train is not available with --engine spark" in re.sub(r"\s+", " ", train.stderr)
    not_parquet = tmp_path / "not.parquet"
    not_parquet.write_text("hello", encoding="utf-8")
    bad = run("dedupe", not_parquet, "-o", tmp_path / "c.csv", "--engine", "spark")
    assert bad.exit_code == 1, bad.output
    assert isinstance(bad.exception, SystemExit)
    assert "Traceback" not in bad.output
    assert "error:" in bad.stderr
    missing = run("dedupe", tmp_path / "nope.ndjson", "-o", tmp_path / "c.csv", "--engine", "spark")
    assert missing.exit_code == 2
    assert not (tmp_path / "c.csv").exists()


@pytest.mark.parametrize("column", ["rec_id"])
def test_csv_without_its_id_column(spark: SparkSession, tmp_path: Path, column: str) -> None:
    source = tmp_path / "no-id.csv"
    source.write_text("given_name,surname\nAisha,Nakato\n", encoding="utf-8")
    result = run("dedupe", source, "-o", tmp_path / "c.csv", "--engine", "spark")
    assert result.exit_code == 1, result.output
    assert f"no column {column!r} for the record id" in re.sub(r"\s+", " ", result.stderr)
