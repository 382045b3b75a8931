"""Reading and preparing records in a second process while the first one matches.

Parsing JSON, evaluating FHIRPaths and deriving blocking keys take about half of a dedupe
run and need nothing from the records before; matching must see records in order. So a worker
process reads the file and sends prepared records (features and keys) in chunks through a
bounded queue, and the main process matches them as they come: two cores, one input order.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clientregistry.batch.readers import CsvMapping, read_patients
from clientregistry.errors import InvalidRecord
from clientregistry.matching.features import Features
from clientregistry.matching.matcher import Matcher, PreparedRecord
from clientregistry.matching.rules import default_rules, load_rules

CHUNK = 1000
"""Records per message between the processes."""


@dataclass(frozen=True, slots=True)
class Prepared:
    """A record read and prepared by the worker."""

    record_id: str
    line: int | None
    entry: int | None
    prepared: PreparedRecord

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.entry}]" if self.entry is not None else f"line {self.line}"


def _worker(
    path: str,
    mapping: CsvMapping,
    rules_path: str | None,
    systems: Sequence[str],
    queue: Any,
) -> None:
    try:
        rules = default_rules() if rules_path is None else load_rules(rules_path)
        matcher = Matcher(rules, record_id_systems=systems)
        extract = matcher.extractor.extract
        keys = matcher.blocker.keys
        batch: list[tuple[Any, ...]] = []
        for result in read_patients(Path(path), mapping):
            if isinstance(result, InvalidRecord):
                batch.append(("error", result.message, result.line, result.record_id))
            else:
                features: Features = extract(result.resource)
                batch.append(
                    ("ok", result.record_id, result.line, result.entry, features, keys(features))
                )
            if len(batch) >= CHUNK:
                queue.put(batch)
                batch = []
        queue.put(batch)
        queue.put(None)
    except BaseException as error:  # report, never hang the reader
        queue.put(("failed", f"{type(error).__name__}: {error}"))


def prepare_in_background(
    path: Path,
    mapping: CsvMapping,
    rules_path: Path | None,
    record_id_systems: Sequence[str],
) -> Iterator[Prepared | InvalidRecord]:
    """Records of ``path`` in input order, prepared by a worker process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue(maxsize=32)
    process = context.Process(
        target=_worker,
        args=(
            str(path),
            mapping,
            None if rules_path is None else str(rules_path),
            list(record_id_systems),
            queue,
        ),
        daemon=True,
    )
    process.start()
    try:
        while True:
            batch = queue.get()
            if batch is None:
                break
            if isinstance(batch, tuple) and batch and batch[0] == "failed":
                raise RuntimeError(f"reading {path} failed: {batch[1]}")
            for item in batch:
                if item[0] == "error":
                    yield InvalidRecord(item[1], line=item[2], record_id=item[3])
                else:
                    _, record_id, line, entry, features, keys = item
                    yield Prepared(record_id, line, entry, PreparedRecord(features, tuple(keys)))
    finally:
        process.join(timeout=5)
        if process.is_alive():
            process.terminate()
