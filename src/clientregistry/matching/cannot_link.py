"""Cannot-links: which records may never share a golden record, so that clusters do not chain.

Matching compares a new record with its candidates one pair at a time; a golden record is what
those pairs chain into. Without a check, a record that matches the last member of a person
joins it even when it clearly is not the first member (twenty "Sam Seedling<n>" born on
twenty days of one month, each a match of the one before). So a record joins a golden record
if its members do not contradict it (:meth:`CannotLinks.rejects`):

* **a different value of a unique identifier system** with any member: both hold an
  identifier of a system one person holds one value of (a national id, a social security
  number), no value in common, and every pair of values more than one edit apart (a typo is
  not a contradiction). Which systems are unique is declared in the rules, on the
  ``shared-identifier`` field: ``"uniqueSystems": "default"`` (the patterns of
  :data:`~clientregistry.matching.rules.DEFAULT_UNIQUE_SYSTEMS`) or a list; without it no
  identifier makes a cannot-link. It is not on in the default rules: in data whose numbers
  are typed like any other field (FEBRL replaces the number wholesale in ~6% of a person's
  pairs) it keeps a person's records apart (measured in ``bench/RESULTS.md``);
* **no match with most members**: a score below the potential-match threshold (the decision
  ``none``, or a pair the rule sets' filters block) with more than half of them. One such
  member is not enough: records of one person typed with many errors often score below the
  threshold with one another (measured: on FEBRL3 and the generated healthcare sets most
  records that one "none" would have kept apart belonged to the person; see
  ``bench/RESULTS.md``), while a chain of relatives or look-alikes drifts away from most of
  the records it chained through.

:func:`consistent` re-reads a classification with that check: the strongest golden record
whose members the record does not contradict wins, and auto matches left elsewhere are
conflicts (the registry queues them for review; ``dedupe`` keeps them apart). Only the first
:data:`MAX_MEMBERS` members of a golden record are checked, so the cost stays bounded.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

from clientregistry.matching.classify import Candidate, Classification
from clientregistry.matching.comparison import (
    TermFrequency,
    identifiers_contradict,
    no_tf,
    unique_system_test,
)
from clientregistry.matching.features import Features
from clientregistry.matching.scoring import Scorer

MAX_MEMBERS = 50
"""Members of a golden record a joining record is checked against (the others are trusted)."""


@dataclass(frozen=True, slots=True)
class _IdentifierSlot:
    slot: int
    unique: Callable[[str], bool]


class CannotLinks:
    """The contradiction test for one scorer's rules."""

    def __init__(self, scorer: Scorer, *, no_match_share: float = 0.5) -> None:
        """``no_match_share``: a record is rejected when more than this share of the members
        are no match of it (0: any one; 1: never for scores, identifiers only)."""
        self.scorer = scorer
        self.no_match_share = no_match_share
        extractor = scorer.extractor
        slots: dict[int, _IdentifierSlot] = {}
        for rs in scorer.rules.rule_sets:
            for f in rs.fields:
                if f.is_identifier_set:
                    slot = extractor.slot(f)
                    patterns = f.unique_systems
                    if not patterns:  # no system declared unique: no identifier cannot-links
                        continue
                    slots.setdefault(slot, _IdentifierSlot(slot, unique_system_test(patterns)))
        self._identifiers = tuple(slots.values())

    def identifiers_differ(self, a: Features, b: Features) -> bool:
        """Whether ``a`` and ``b`` hold clearly different values of a unique system."""
        for item in self._identifiers:
            x, y = a[item.slot], b[item.slot]
            if x and y and identifiers_contradict(x, y, item.unique):
                return True
        return False

    def contradicts(self, a: Features, b: Features, tf: TermFrequency = no_tf) -> bool:
        """Whether ``a`` and ``b`` may never share a golden record."""
        if self.identifiers_differ(a, b):
            return True
        return self.scorer.likely(a, b, tf) is None

    def rejects(
        self, features: Features, members: Iterable[Features], tf: TermFrequency = no_tf
    ) -> bool:
        """Whether a record with ``features`` may not join a golden record of ``members``
        (the first :data:`MAX_MEMBERS` of them are checked): one of them holds a different
        value of a unique identifier system, or more than ``no_match_share`` of them are no
        match of it."""
        checked = no_match = 0
        likely = self.scorer.likely
        for other in members:
            if checked >= MAX_MEMBERS:
                break
            checked += 1
            if self.identifiers_differ(features, other):
                return True
            if likely(features, other, tf) is None:
                no_match += 1
        return no_match > self.no_match_share * checked


def consistent(
    result: Classification, allowed: Callable[[Hashable, list[Candidate]], bool]
) -> Classification:
    """``result`` with its golden record chosen among those ``allowed`` (golden id, the
    candidates of it) accepts, strongest first; auto matches of the others become conflicts,
    and a record no golden record accepts gets none (it stands alone, its auto matches all
    conflicts). A result without a golden record is returned as it is."""
    if result.golden_id is None:
        return result
    by_golden: dict[Hashable, list[Candidate]] = {}
    for c in (*result.auto, *result.conflicts, *result.potential):
        by_golden.setdefault(c.golden_id, []).append(c)
    order = [result.golden_id]
    for c in result.conflicts:  # auto matches elsewhere, strongest first
        if c.golden_id not in order:
            order.append(c.golden_id)
    chosen: Hashable | None = None
    for golden in order:
        if allowed(golden, by_golden[golden]):
            chosen = golden
            break
    if chosen == result.golden_id:
        return result
    out = Classification(chosen)
    for c in sorted(by_golden_items(by_golden), key=lambda c: -c.strength):
        if chosen is not None and c.golden_id == chosen:
            out.auto.append(c)
        elif c.score.decision == "auto":
            out.conflicts.append(c)
        else:
            out.potential.append(c)
    return out


def by_golden_items(by_golden: dict[Hashable, list[Candidate]]) -> list[Candidate]:
    return [c for items in by_golden.values() for c in items]
