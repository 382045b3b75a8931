"""The matcher: decision rules compiled once into extraction, blocking and scoring.

It is storage-agnostic: callers give it resources and the features of stored candidates; the
registry keeps them in a database, ``clientregistry dedupe`` in memory.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clientregistry.matching.blocking import DEFAULT_CANDIDATE_LIMIT, Blocker, CandidateSet
from clientregistry.matching.cannot_link import CannotLinks
from clientregistry.matching.classify import Candidate
from clientregistry.matching.comparison import TermFrequency, no_tf
from clientregistry.matching.features import FeatureExtractor, Features, SlotKey
from clientregistry.matching.rules import DecisionRules
from clientregistry.matching.scoring import PairScore, Scorer


@dataclass(frozen=True, slots=True)
class PreparedRecord:
    """A record's features and blocking keys, computed once.

    A process that keeps its own blocking index (``clientregistry dedupe``'s reader, see
    :mod:`clientregistry.batch.pipeline`) sends ``found`` (the candidates, as positions of
    earlier records) instead of keys, and ``scored`` (the candidates that are at least
    potential matches, best first, with their scores) when it has scored them too.
    """

    features: Features
    keys: tuple[str, ...]
    found: CandidateSet | None = None
    scored: tuple[tuple[int, PairScore], ...] | None = None


class Matcher:
    """Extraction, blocking keys and scoring for one set of decision rules."""

    def __init__(
        self,
        rules: DecisionRules,
        *,
        record_id_systems: Iterable[str] = (),
        candidate_limit: int = DEFAULT_CANDIDATE_LIMIT,
        layout: Iterable[SlotKey] = (),
    ) -> None:
        self.rules = rules
        self.candidate_limit = candidate_limit
        self.extractor = FeatureExtractor(rules, record_id_systems, layout)
        self.scorer = Scorer(self.extractor)
        self.blocker = Blocker(self.extractor)
        self.cannot_links = CannotLinks(self.scorer)

    def prepare(self, resource: Mapping[str, Any]) -> PreparedRecord:
        """Features and blocking keys of one resource."""
        features = self.extractor.extract(resource)
        return PreparedRecord(features, tuple(self.blocker.keys(features)))

    def strength(self, score: PairScore) -> float:
        """How far a score is above its rule set's auto threshold (orders candidates)."""
        return score.score - self.rules.rule_sets[score.rule_set].auto_threshold

    def likely_matches(
        self,
        features: Features,
        positions: Iterable[int],
        stored: Sequence[Features],
        tf: TermFrequency = no_tf,
    ) -> list[tuple[int, PairScore]]:
        """The records among ``positions`` (indexes into ``stored``) that are at least
        potential matches of ``features``, with their scores, best first: what
        :meth:`candidates` keeps, in the same order, for records held in a list (the hot
        loop of ``clientregistry dedupe``: no result object for the many that fail)."""
        compiled = self.scorer.compiled
        if len(compiled) != 1:
            likely = self.scorer.likely
            autos = [rs.auto_threshold for rs in self.rules.rule_sets]
            scored = [(j, likely(features, stored[j], tf)) for j in positions]
            kept = [(j, score) for j, score in scored if score is not None]
            kept.sort(key=lambda item: -(item[1].score - autos[item[1].rule_set]))
            return kept
        rs, function = compiled[0]
        potential, auto, index = rs.potential_threshold, rs.auto_threshold, rs.index
        found = []
        for j in positions:
            score = function(features, stored[j], tf)
            if score is not None and score >= potential:
                found.append((j, score))
        if len(found) > 1:
            found.sort(key=lambda item: -(item[1] - auto))
        return [
            (j, PairScore(score, "auto" if score >= auto else "potential", index))
            for j, score in found
        ]

    def candidates(
        self,
        features: Features,
        stored: Iterable[tuple[Hashable, Hashable, Features]],
        tf: TermFrequency = no_tf,
        *,
        keep_none: bool = False,
        exact: bool = False,
    ) -> list[Candidate]:
        """Score ``features`` against (record id, golden id, features) of stored records.

        By default only potential and auto matches come back. ``keep_none`` keeps the others
        too (their scores may be ``-inf`` where scoring stopped early); ``exact`` keeps them
        with full scores (slower: no early exit).
        """
        if exact:
            score = self.scorer.exact_score
        elif keep_none:
            score = self.scorer.score  # pairs below potential may carry -inf (not scored out)
        else:
            score = self.scorer.likely
        autos = [rs.auto_threshold for rs in self.rules.rule_sets]
        out = []
        for record_id, golden_id, other in stored:
            result = score(features, other, tf)
            if result is None:
                continue
            strength = result.score - autos[result.rule_set]
            out.append(Candidate(record_id, golden_id, result, strength))
        out.sort(key=lambda c: -c.strength)
        return out
