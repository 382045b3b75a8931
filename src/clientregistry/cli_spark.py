"""``clientregistry dedupe --engine spark``: the command line's side of the Spark engine.

pyspark is an optional extra (``clientregistry[spark]``): it is imported only here, when
asked for, and its absence, a bad input or a Spark that cannot start end in one clear
message and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from clientregistry import cli_common
from clientregistry.batch.readers import CsvMapping
from clientregistry.errors import InvalidRecord
from clientregistry.matching.rules import DecisionRules
from clientregistry.spark.session import SparkUnavailable, require_pyspark

if TYPE_CHECKING:
    from clientregistry.spark.run import SparkRun

err = cli_common.err


def _fail(message: str, code: int) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


def _reason(error: Exception) -> str:
    """The first line of what went wrong, from the JVM's exception where there is one."""
    java = getattr(error, "java_exception", None)
    text = str(java.toString()) if java is not None else str(error)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def dedupe_with_spark(
    input_path: Path,
    output: Path,
    rules: DecisionRules,
    record_id_systems: Sequence[str],
    candidate_limit: int,
    mapping: CsvMapping,
    master: str | None,
    train: bool,
    *,
    stop: bool,
    block_limit: int | None = None,
) -> SparkRun:
    """Run ``dedupe`` on Spark; exit with a message on any problem."""
    if train:
        raise _fail(
            "--train is not available with --engine spark: estimate m and u with "
            "`clientregistry train INPUT --output trained.json`, then pass --rules trained.json",
            2,
        )
    try:
        require_pyspark()
    except SparkUnavailable as error:
        raise _fail(str(error), 2) from None
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    from clientregistry.spark.run import dedupe_on_spark

    try:
        return dedupe_on_spark(
            input_path,
            output,
            rules,
            record_id_systems=record_id_systems,
            candidate_limit=candidate_limit,
            mapping=mapping,
            master=master,
            stop_on_error=stop,
            block_limit=block_limit,
        )
    except InvalidRecord as error:
        line = f":{error.line}" if error.line is not None else ""
        raise _fail(f"{input_path}{line}: {error.message}", 1) from None
    except SparkUnavailable as error:
        raise _fail(str(error), 2) from None
    except (PySparkException, Py4JJavaError) as error:  # an unreadable file (not Parquet)
        raise _fail(f"{input_path}: Spark could not read it: {_reason(error)}", 1) from None
    except OSError as error:
        raise _fail(f"{output}: {error}", 1) from None
