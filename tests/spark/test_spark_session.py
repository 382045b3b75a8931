"""Local mode's driver memory: a default from the machine's memory, or the operator's own."""

from __future__ import annotations

import re

import pytest

from clientregistry.spark.session import local_driver_memory


def test_the_default_is_a_quarter_of_the_memory_within_1_and_16_gb() -> None:
    chosen = local_driver_memory({})
    assert chosen is not None and re.fullmatch(r"\d+g", chosen), chosen
    assert 1 <= int(chosen[:-1]) <= 16


@pytest.mark.parametrize(
    "environ",
    [
        {"SPARK_DRIVER_MEMORY": "12g"},
        {"PYSPARK_SUBMIT_ARGS": "--driver-memory 12g pyspark-shell"},
    ],
)
def test_an_operator_s_own_setting_is_left_to_spark(environ: dict[str, str]) -> None:
    """Setting spark.driver.memory would override the operator's SPARK_DRIVER_MEMORY or
    --driver-memory (a --conf wins over both), so the default is not set then."""
    assert local_driver_memory(environ) is None


def test_a_blank_setting_is_no_setting() -> None:
    assert local_driver_memory({"SPARK_DRIVER_MEMORY": " "}) is not None
