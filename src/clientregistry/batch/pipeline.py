"""Reading, preparing and blocking records in a second process while the first one matches.

Parsing JSON, evaluating FHIRPaths, deriving blocking keys and finding candidates need nothing
but the records before; only classification needs the clusters made so far. So a worker
process reads the file, extracts each record's features, finds its candidates in its own
blocking index (positions of earlier records) and sends records in chunks through a pipe;
the main process scores and classifies them as they come: two cores, one input order.

Scoring a record needs only its features, its candidates' features and the term counts of the
records before it, all of which the worker holds too. So when the main process is behind (more
than :data:`BACKLOG` chunks sent that it has not taken yet, counted in shared memory) the worker
scores the next chunk itself and sends the scored candidates: the work balances itself between
the two cores, and the result is the same whoever scored a record (same code, same inputs, same
term counts).
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from clientregistry.batch.packed import PackedFeatures
from clientregistry.batch.readers import CsvMapping, ReadResult, read_patients
from clientregistry.errors import InvalidRecord
from clientregistry.matching.blocking import (
    DEFAULT_CANDIDATE_LIMIT,
    CandidateSet,
    MemoryIndex,
    PositionIndex,
)
from clientregistry.matching.features import Features
from clientregistry.matching.matcher import Matcher, PreparedRecord
from clientregistry.matching.rules import default_rules, load_rules
from clientregistry.matching.scoring import PairScore
from clientregistry.matching.term_frequency import TermCounts

CHUNK = 250
"""Records per message between the processes."""

PIPE_BYTES = 1 << 20
"""The pipe between the processes holds this much (about 20 chunks) before the worker waits."""

BACKLOG = 2
"""Chunks the main process may have waiting before the worker scores the next one itself."""


class RecordSource(Protocol):
    """Records to read other than from a file (a registry's records, for a re-match):
    picklable, read in the worker process."""

    def read(self) -> Iterator[ReadResult]: ...


@dataclass(frozen=True, slots=True)
class Prepared:
    """A record read and prepared by the worker."""

    record_id: str
    line: int | None
    entry: int | None
    prepared: PreparedRecord
    extra: Any = None
    """:attr:`~clientregistry.batch.readers.SourceRecord.extra` of the record read."""

    @property
    def where(self) -> str:
        return f"Bundle.entry[{self.entry}]" if self.entry is not None else f"line {self.line}"


ScoredTuple = tuple[int, float, str, int]
"""(candidate position, score, decision, rule set): a scored candidate as sent."""


class Reader:
    """The worker's side: features, blocking and (on demand) scoring, in input order.

    Records are numbered as the main process will number them: a record whose id was seen
    before is sent as a duplicate (the main process reports it) and gets no position.
    """

    def __init__(self, matcher: Matcher, *, selective: bool = True) -> None:
        """``selective``: choose candidates as ``dedupe`` and the registry do
        (:class:`PositionIndex`: few records sharing just one key); otherwise every record
        sharing a key (:class:`MemoryIndex`: most shared keys first, to the candidate
        limit)."""
        self.matcher = matcher
        self.index: PositionIndex | MemoryIndex = PositionIndex() if selective else MemoryIndex()
        self.term_counts = TermCounts(matcher.extractor)
        self.counted = 0
        """Records in ``term_counts`` (counted when a record is scored here, not before)."""
        self.features = PackedFeatures(matcher.extractor)
        self.seen: set[str] = set()

    def prepare(
        self, record_id: str, resource: dict[str, Any], score: bool
    ) -> tuple[Features, CandidateSet, tuple[ScoredTuple, ...] | None] | None:
        """Features, candidates and, if ``score``, the scored candidates of the next record;
        ``None`` for a duplicate id."""
        if record_id in self.seen:
            return None
        self.seen.add(record_id)
        matcher = self.matcher
        features = matcher.extractor.extract(resource)
        keys = matcher.blocker.keys(features)
        position = len(self.features)
        found = self.index.find_then_add(position, keys, matcher.candidate_limit)
        scored = None
        if score:
            stored = self.features
            counts = self.term_counts
            for j in range(self.counted, len(stored)):
                counts.add(stored[j])
            self.counted = len(stored)
            scored = tuple(
                (j, score.score, score.decision, score.rule_set)
                for j, score in matcher.likely_matches(features, found.ids, stored, counts.tf)
            )
        self.features.append(features)
        return features, found, scored


def _widen(connection: Any) -> None:
    """Let the pipe hold several chunks (Linux; elsewhere the worker waits sooner)."""
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
    if setsize is None:
        return
    with contextlib.suppress(OSError):  # above the system's limit: keep the default size
        fcntl.fcntl(connection.fileno(), setsize, PIPE_BYTES)


def _worker(
    path: str | RecordSource,
    mapping: CsvMapping,
    rules_path: str | None,
    systems: Sequence[str],
    candidate_limit: int,
    connection: Any,
    taken: Any,
    backlog: int,
) -> None:
    """Read, prepare and send every record of ``path``; ``taken`` counts the chunks the main
    process has taken so far. Chunks are sent from this thread (a queue's feeder thread would
    wait for the interpreter lock behind the busy one)."""
    try:
        gc.disable()  # no reference cycles are made here; collections only cost time
        _widen(connection)
        rules = default_rules() if rules_path is None else load_rules(rules_path)
        matcher = Matcher(rules, record_id_systems=systems, candidate_limit=candidate_limit)
        reader = Reader(matcher)
        batch: list[tuple[Any, ...]] = []
        sent = 0
        score = False
        records = read_patients(Path(path), mapping) if isinstance(path, str) else path.read()
        for result in records:
            if isinstance(result, InvalidRecord):
                batch.append(("error", result.message, result.line, result.record_id))
            else:
                done = reader.prepare(result.record_id, result.resource, score)
                if done is None:
                    batch.append(("dup", result.record_id, result.line, result.entry))
                else:
                    features, found, scored = done
                    batch.append(
                        (
                            "ok",
                            result.record_id,
                            result.line,
                            result.entry,
                            features,
                            found.ids,
                            found.capped,
                            found.considered,
                            scored,
                            result.extra,
                        )
                    )
            if len(batch) >= CHUNK:
                connection.send(batch)
                batch = []
                sent += 1
                score = sent - taken.value > backlog  # the main process is behind
        connection.send(batch)
        connection.send(None)
    except BaseException as error:  # report, never hang the reader
        with contextlib.suppress(OSError):  # unless the main process has gone
            connection.send(("failed", f"{type(error).__name__}: {error}"))
    finally:
        connection.close()


def _prepared(item: tuple[Any, ...]) -> Prepared:
    """A worker's message about one record, as the main process uses it."""
    if item[0] == "dup":  # the main process knows the id and says so
        _, record_id, line, entry = item
        return Prepared(record_id, line, entry, PreparedRecord((), (), CandidateSet([], False, 0)))
    _, record_id, line, entry, features, ids, capped, considered, scored, extra = item
    if scored is not None:
        scored = tuple(
            (j, PairScore(score, decision, rule_set)) for j, score, decision, rule_set in scored
        )
    found = CandidateSet(ids, capped, considered)
    return Prepared(record_id, line, entry, PreparedRecord(features, (), found, scored), extra)


def prepare_in_background(
    path: Path | RecordSource,
    mapping: CsvMapping,
    rules_path: Path | None,
    record_id_systems: Sequence[str],
    candidate_limit: int = DEFAULT_CANDIDATE_LIMIT,
    *,
    backlog: int = BACKLOG,
) -> Iterator[Prepared | InvalidRecord]:
    """Records of ``path`` (a file, or a :class:`RecordSource`) in input order, prepared
    (and found, perhaps scored) by a worker process. Feed them to one
    :class:`~clientregistry.batch.dedupe.Deduplicator` (or one matching loop), in order,
    every one (a record the deduplicator refuses must be a duplicate id).

    ``backlog`` is :data:`BACKLOG`; tests set it to -1 (the worker scores everything) or to
    a large number (the main process scores everything).

    Records get ``dedupe``'s candidates (:class:`Reader` ``selective``), which are those the
    registry itself chooses (a re-match's records).
    """
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    taken = context.Value("q", 0, lock=False)  # chunks the main process has taken
    process = context.Process(
        target=_worker,
        args=(
            str(path) if isinstance(path, Path) else path,
            mapping,
            None if rules_path is None else str(rules_path),
            list(record_id_systems),
            candidate_limit,
            sender,
            taken,
            backlog,
        ),
        daemon=True,
    )
    process.start()
    sender.close()  # the worker's now: if it dies, receiving fails instead of waiting
    try:
        while True:
            try:
                batch = receiver.recv()
            except EOFError:
                raise RuntimeError(f"reading {path} failed: the reader process stopped") from None
            if batch is None:
                break
            taken.value += 1
            if isinstance(batch, tuple) and batch and batch[0] == "failed":
                raise RuntimeError(f"reading {path} failed: {batch[1]}")
            for item in batch:
                if item[0] == "error":
                    yield InvalidRecord(item[1], line=item[2], record_id=item[3])
                else:
                    yield _prepared(item)
    finally:
        receiver.close()  # a worker still sending gets an error and stops
        process.join(timeout=5)
        if process.is_alive():
            process.terminate()
