"""What every executor needs to rebuild the matcher: the rules as JSON, and the options.

Compiled matchers (generated Python functions, C extensions) do not travel between
processes; the decision rules do, as the JSON they are written in. Each Python worker parses
them once and keeps the :class:`~clientregistry.matching.matcher.Matcher` for every task it
runs after.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from clientregistry.matching.matcher import Matcher
from clientregistry.matching.rules import DecisionRules, parse_rules
from clientregistry.matching.term_frequency import TermCounts


@dataclass(frozen=True, slots=True)
class MatchSpec:
    """Decision rules and matcher options, in a form that pickles."""

    rules_json: str
    record_id_systems: tuple[str, ...] = ()
    candidate_limit: int = 200
    block_limit: int | None = None
    """At most this many records before a record in each block are its candidates (the
    blocking join's bound, :func:`~clientregistry.spark.candidates.candidate_pairs`); None:
    all of them (:class:`~clientregistry.matching.blocking.MemoryIndex`'s whole-block
    choice)."""
    single_limit: int | None = None
    """With ``block_limit``: the selective choice of ``dedupe``, the registry and its
    re-match, at most this many records sharing one key
    (:func:`~clientregistry.matching.blocking.select_candidates`); None: every one."""

    @classmethod
    def of(
        cls,
        rules: DecisionRules,
        record_id_systems: Iterable[str] = (),
        candidate_limit: int = 200,
        block_limit: int | None = None,
        single_limit: int | None = None,
    ) -> MatchSpec:
        text = json.dumps(rules.to_json(), sort_keys=True)
        return cls(
            text, tuple(sorted(record_id_systems)), candidate_limit, block_limit, single_limit
        )

    def matcher(self) -> Matcher:
        """This process's matcher for these rules (built once)."""
        return _matcher(self)

    def term_slots(self) -> tuple[int, ...]:
        """The feature slots these rules weigh by term frequency (``TermCounts.slots``)."""
        return TermCounts(self.matcher().extractor).slots


@lru_cache(maxsize=4)
def _matcher(spec: MatchSpec) -> Matcher:
    rules = parse_rules(json.loads(spec.rules_json), source="<spark rules>")
    return Matcher(
        rules, record_id_systems=spec.record_id_systems, candidate_limit=spec.candidate_limit
    )
