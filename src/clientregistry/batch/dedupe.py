"""Deduplicating a file of Patients in memory, exactly as the registry would receive them.

Records are taken in input order; each is matched against the records before it, classified
the OpenCR way and given a golden record (a cluster). Potential matches do not join a cluster;
they are kept for review.

A conflict (the record also auto-matches a record of another cluster) is where a file differs
from the registry. The registry keeps the two golden records apart until a person decides; a
file has nobody to decide, and its clusters are read as the answer. So, by default, the two
clusters are joined when the evidence holds together: the conflicting record is itself at
least a potential match of one of the chosen cluster's matching records (three records that
pairwise look like one person). Otherwise, for instance a record that matches one twin on
names and the other on birth date and address, the conflict is kept for review as before.
``merge_conflicts=False`` keeps every conflict apart, as the registry does.

Clusters do not chain (:mod:`clientregistry.matching.cannot_link`): a record joins a cluster
only if its members do not reject it (a different value of a unique identifier system with
one of them, or no match with most of them); otherwise it tries the next cluster it
auto-matches, and stays apart (its auto matches kept for review as conflicts) when none
accepts it. Two clusters are joined only when no member of one is rejected by the other.
``cannot_links=False`` turns the check off (the earlier behaviour, for comparison).
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clientregistry.batch.packed import PackedFeatures
from clientregistry.errors import InvalidRecord
from clientregistry.matching.blocking import MemoryIndex, PositionIndex
from clientregistry.matching.cannot_link import MAX_MEMBERS, CannotLinks, consistent
from clientregistry.matching.classify import Candidate, Classification, classify
from clientregistry.matching.features import Features
from clientregistry.matching.matcher import Matcher, PreparedRecord
from clientregistry.matching.scoring import PairScore
from clientregistry.matching.term_frequency import TermCounts

log = logging.getLogger(__name__)


@dataclass(slots=True)
class DedupeStats:
    """What a run did, for the summary line and the benchmark."""

    records: int = 0
    skipped: int = 0
    clusters: int = 0
    auto_links: int = 0
    potential_matches: int = 0
    conflicts: int = 0
    merges: int = 0
    cannot_links: int = 0
    """Records kept apart because they contradict a member of every cluster they matched."""
    candidate_pairs: int = 0
    capped_queries: int = 0
    true_pairs_compared: int = 0
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None

    @property
    def seconds(self) -> float:
        return (self.finished or time.perf_counter()) - self.started

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "skipped": self.skipped,
            "clusters": self.clusters,
            "auto_links": self.auto_links,
            "potential_matches": self.potential_matches,
            "conflicts": self.conflicts,
            "merges": self.merges,
            "cannot_links": self.cannot_links,
            "candidate_pairs": self.candidate_pairs,
            "capped_queries": self.capped_queries,
            "seconds": round(self.seconds, 3),
            "records_per_second": round(self.records_per_second, 1),
        }


@dataclass(frozen=True, slots=True)
class ReviewItem:
    """A pair a person should look at: a potential match or a conflict."""

    record_id: str
    other_id: str
    score: float
    kind: str


class Deduplicator:
    """Holds the records seen so far: features, blocking index, term counts, clusters."""

    def __init__(
        self,
        matcher: Matcher,
        *,
        entity_of: Mapping[str, str] | None = None,
        merge_conflicts: bool = True,
        term_counts: TermCounts | None = None,
        cannot_links: bool | CannotLinks = True,
        selective: bool = True,
    ):
        """``selective``: choose candidates as ``dedupe`` and the registry do
        (:class:`PositionIndex`: few records sharing just one key); otherwise every record
        sharing a key (:class:`MemoryIndex`), which is what the Spark engine's ``dedupe``
        reproduces by default."""
        self.matcher = matcher
        self.index: PositionIndex | MemoryIndex = PositionIndex() if selective else MemoryIndex()
        self._term_counts = TermCounts(matcher.extractor) if term_counts is None else term_counts
        self._fixed_counts = term_counts is not None
        """Counts given by the caller (a whole file's, as the Spark engine computes them) are
        used as they are; by default each record is counted once the records after it are
        scored, so a record is scored with the counts of the records before it."""
        self._counted = 0
        """Records in ``_term_counts``: they are counted when a record is scored here (records
        scored by the reader of :mod:`clientregistry.batch.pipeline` need no counts)."""
        self.ids: list[str] = []
        self.features = PackedFeatures(matcher.extractor)
        self.cluster: list[int] = []
        self._positions: dict[str, int] = {}
        self.review: list[ReviewItem] = []
        self.stats = DedupeStats()
        self._entity_of = entity_of
        self._warned_cap = False
        self._auto_thresholds = [rs.auto_threshold for rs in matcher.rules.rule_sets]
        self.merge_conflicts = merge_conflicts
        self._parent: dict[int, int] = {}
        """Clusters merged into another (union-find over golden positions; see
        :meth:`_root`); empty unless ``merge_conflicts`` joined some."""
        self._cannot: CannotLinks | None
        if isinstance(cannot_links, CannotLinks):
            self._cannot = cannot_links
        else:
            self._cannot = CannotLinks(matcher.scorer) if cannot_links else None
        self._members: dict[int, list[int]] = {}
        """Positions of each cluster's records, by root (kept for the cannot-link check)."""

    @property
    def term_counts(self) -> TermCounts:
        """Value counts of the records added so far."""
        self._count_terms()
        return self._term_counts

    def _count_terms(self) -> None:
        features = self.features
        if self._counted < len(features) and not self._fixed_counts:
            add = self._term_counts.add
            for j in range(self._counted, len(features)):
                add(features[j])
            self._counted = len(features)

    def add(
        self, record_id: str, resource: Mapping[str, Any], line: int | None = None
    ) -> Classification:
        """Match one record against those before it and place it in a cluster."""
        self.check_new(record_id, line)
        return self.add_prepared(record_id, self.matcher.prepare(resource))

    def check_new(self, record_id: str, line: int | None = None) -> None:
        """Raise :class:`InvalidRecord` if ``record_id`` was seen before."""
        if record_id in self._positions:
            raise InvalidRecord(
                f"duplicate Patient id {record_id!r}", line=line, record_id=record_id
            )

    def add_prepared(self, record_id: str, prepared: PreparedRecord) -> Classification:
        """:meth:`add` for a record whose features and keys are already computed.

        A record that comes with its candidates (``prepared.found``, found by the process
        that read it) is not added to this deduplicator's own blocking index: feed one
        deduplicator either way, not both. With ``prepared.scored`` its candidates are not
        scored again either.
        """
        self.check_new(record_id)
        matcher = self.matcher
        found = prepared.found
        if found is None:
            found = self.index.candidates(prepared.keys, matcher.candidate_limit)
        if found.capped:
            self.stats.capped_queries += 1
            if not self._warned_cap:
                log.warning(
                    "record %s has %d candidates; only the %d sharing most blocking keys are "
                    "scored (further capped queries are counted, not logged)",
                    record_id,
                    found.considered,
                    matcher.candidate_limit,
                )
                self._warned_cap = True
        features = self.features
        cluster = self.cluster
        self.stats.candidate_pairs += len(found.ids)
        if self._entity_of is not None:
            entity = self._entity_of.get(record_id)
            if entity is not None:
                self.stats.true_pairs_compared += sum(
                    1 for j in found.ids if self._entity_of.get(self.ids[j]) == entity
                )
        likely: Sequence[tuple[int, PairScore]]
        if prepared.scored is None:
            self._count_terms()
            likely = matcher.likely_matches(
                prepared.features, found.ids, features, self._term_counts.tf
            )
        else:  # scored by the reader (batch.pipeline)
            likely = prepared.scored
        autos = self._auto_thresholds
        root = self._root if self._parent else _same
        scored = [
            Candidate(j, root(cluster[j]), score, score.score - autos[score.rule_set])
            for j, score in likely
        ]
        result = classify(scored) if scored else Classification(None)
        if self._cannot is not None and result.golden_id is not None:
            new = prepared.features
            result = consistent(result, lambda golden, _: self._accepts(int(golden), new))  # type: ignore[call-overload]
            if result.golden_id is None:
                self.stats.cannot_links += 1
        position = len(self.ids)
        if result.golden_id is None:
            golden = position
            self.stats.clusters += 1
        else:
            golden = int(result.golden_id)  # type: ignore[call-overload]
            self.stats.auto_links += 1
        conflicts = result.conflicts
        if conflicts and self.merge_conflicts:
            kept = []
            for item in conflicts:
                j = int(item.record_id)  # type: ignore[call-overload]
                other_root = self._root(cluster[j])
                if other_root == golden:
                    continue
                if self._supported(j, result.auto) and self._compatible(
                    other_root, golden, prepared.features
                ):
                    self._parent[other_root] = golden
                    if self._cannot is not None:
                        moved = self._members.pop(other_root, [])
                        self._members.setdefault(golden, []).extend(moved)
                    self.stats.merges += 1
                    self.stats.clusters -= 1
                else:
                    kept.append(item)
            conflicts = kept
        for kind, items in (("potential", result.potential), ("conflict", conflicts)):
            for item in items:
                other = self.ids[int(item.record_id)]  # type: ignore[call-overload]
                self.review.append(ReviewItem(record_id, other, item.score.score, kind))
        self.stats.potential_matches += len(result.potential)
        self.stats.conflicts += len(conflicts)
        self.ids.append(record_id)
        features.append(prepared.features)
        cluster.append(golden)
        if self._cannot is not None:
            self._members.setdefault(golden, []).append(position)
        self._positions[record_id] = position
        if prepared.keys:
            self.index.add(position, prepared.keys)
        self.stats.records += 1
        return result

    def _supported(self, j: int, chosen: Sequence[Candidate]) -> bool:
        """Whether record ``j`` (a conflict) is at least a potential match of one of the
        records through which the new record joined its cluster."""
        features = self.features
        self._count_terms()
        tf = self._term_counts.tf
        likely = self.matcher.scorer.likely
        return any(
            likely(features[j], features[int(c.record_id)], tf) is not None  # type: ignore[call-overload]
            for c in chosen
        )

    def _accepts(self, golden: int, features: Features) -> bool:
        """Whether a record with ``features`` may join cluster ``golden`` (a root)."""
        assert self._cannot is not None
        members = self._members.get(golden, ())
        stored = self.features
        self._count_terms()
        return not self._cannot.rejects(
            features, (stored[j] for j in members), self._term_counts.tf
        )

    def _compatible(self, one: int, other: int, features: Features) -> bool:
        """Whether clusters ``one`` and ``other`` (roots; ``other`` about to take a record
        with ``features``) may be joined: no member of one contradicts one of the other."""
        if self._cannot is None:
            return True
        stored = self.features
        mine = [stored[j] for j in self._members.get(one, ())[:MAX_MEMBERS]]
        theirs = [features, *(stored[j] for j in self._members.get(other, ()))]
        self._count_terms()
        tf = self._term_counts.tf
        return not any(self._cannot.rejects(f, theirs, tf) for f in mine)

    def _root(self, golden: int) -> int:
        parent = self._parent
        root = golden
        while root in parent:
            root = parent[root]
        while golden != root:  # path compression
            parent[golden], golden = root, parent[golden]
        return root

    def golden_ids(self) -> list[tuple[str, str]]:
        """(patient id, golden id) for every record; golden ids number clusters as created."""
        names: dict[int, str] = {}
        out = []
        root = self._root if self._parent else _same
        for record_id, golden in zip(self.ids, self.cluster, strict=True):
            golden = root(golden)
            name = names.get(golden)
            if name is None:
                name = names[golden] = f"golden-{len(names) + 1}"
            out.append((record_id, name))
        return out

    def write(self, output: Path) -> Path:
        """Write ``output`` (clusters) and its ``.potential.csv`` sibling; return the latter."""
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["patient_id", "golden_id"])
            writer.writerows(self.golden_ids())
        potential_path = potential_path_for(output)
        with potential_path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["patient_id", "other_id", "score"])
            for item in self.review:
                writer.writerow([item.record_id, item.other_id, f"{item.score:.4f}"])
        return potential_path


def _same(golden: int) -> int:
    return golden


def potential_path_for(output: Path) -> Path:
    """``CLUSTERS.csv`` -> ``CLUSTERS.potential.csv``."""
    return output.with_name(f"{output.stem}.potential{output.suffix or '.csv'}")
