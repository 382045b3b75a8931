"""Match grades and 0..1 scores for ``Patient/$match`` (FHIR R4, PDQm ITI-119): pure functions.

A rule-set score becomes a **grade** (the ``match-grade`` extension) by the rule set's own
thresholds, so that ``$match`` agrees with what submitting the same Patient would do:

==================  ==============================================================
grade               when
==================  ==============================================================
``certain``         score ≥ auto threshold (submitting would auto-link)
``probable``        upper half of [potential, auto): potential + (auto − potential)/2 ≤ score
``possible``        lower half of [potential, auto)
``certainly-not``   known not to be the person (see :func:`person_grade`)
(no grade)          below the potential threshold: not a match, not returned
==================  ==============================================================

and a **probability** in 0..1 (``Bundle.entry.search.score``) by a monotone map:

* probabilistic rule sets (OpenCR's scale: 100 + Σ log10 m/u) — the score above 100 is a
  log10 likelihood ratio; the rule set's potential threshold is taken as the point where a
  match is as likely as not, so ``p = 1 / (1 + 10^-(score − potential))``. With the default
  thresholds (103/105) the auto threshold maps to 0.990, the probable/possible boundary (104)
  to 0.909, the potential threshold to 0.5, a score of 100 to 0.001;
* deterministic rule sets — ``score / max_score`` (the share of the reachable weight),
  clamped to 0..1.

Scores of different rule sets are not comparable as numbers; the grade is, so results are
ordered by grade first (:func:`order_key`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Final, Literal

from clientregistry.matching.rules import RuleSet

Grade = Literal["certain", "probable", "possible", "certainly-not"]
GRADES: Final[tuple[Grade, ...]] = ("certain", "probable", "possible", "certainly-not")
GRADE_RANK: Final[dict[Grade, int]] = {
    "certain": 3,
    "probable": 2,
    "possible": 1,
    "certainly-not": 0,
}
MATCH_GRADE_EXTENSION: Final = "http://hl7.org/fhir/StructureDefinition/match-grade"

_MAX_EXPONENT = 300.0  # 10**300 still fits a float


def probable_threshold(rule_set: RuleSet) -> float:
    """The boundary between ``possible`` and ``probable``: the middle of [potential, auto)."""
    return (rule_set.potential_threshold + rule_set.auto_threshold) / 2.0


def score_grade(score: float, rule_set: RuleSet) -> Grade | None:
    """The grade of one rule-set score; None below the potential threshold (no match)."""
    if score >= rule_set.auto_threshold:
        return "certain"
    if score >= rule_set.potential_threshold:
        return "probable" if score >= probable_threshold(rule_set) else "possible"
    return None


def probability(score: float, rule_set: RuleSet) -> float:
    """The 0..1 score of a rule-set score (monotone in ``score``; see the module docstring)."""
    if math.isnan(score):
        return 0.0
    if rule_set.probabilistic:
        exponent = min(max(score - rule_set.potential_threshold, -_MAX_EXPONENT), _MAX_EXPONENT)
        return 1.0 / (1.0 + math.pow(10.0, -exponent))
    top = rule_set.max_score()
    if top <= 0.0:
        return 1.0 if score >= rule_set.auto_threshold else 0.0
    return min(max(score / top, 0.0), 1.0)


def identifier_systems(items: Iterable[str]) -> set[str]:
    """The systems of ``"system|value"`` items (as features hold identifiers)."""
    return {item.rsplit("|", 1)[0] for item in items}


def identifiers_conflict(a: frozenset[str], b: frozenset[str]) -> bool:
    """True when two identifier sets (``"system|value"``) share a system but no identifier:
    the same national-id system with a different number, say."""
    if not a or not b or a & b:
        return False
    return bool(identifier_systems(a) & identifier_systems(b))


def person_grade(
    best: Grade | None, *, known_non_match: bool = False, conflicting_identifier: bool = False
) -> Grade | None:
    """The grade of one person (golden record) from the grade of its best-scoring record.

    ``certainly-not`` when the person is *known* not to be the input: a broken match recorded
    against the input's own stored record (``known_non_match``, overriding any score), or no
    record of the person reaching the potential threshold while the input and the person
    hold different identifiers in one system (``conflicting_identifier``). None: not a match.
    """
    if known_non_match:
        return "certainly-not"
    if best is None and conflicting_identifier:
        return "certainly-not"
    return best


def order_key(grade: Grade, score: float) -> tuple[int, float]:
    """Sort key putting the most likely first: by grade, then by 0..1 score (negate both)."""
    return (-GRADE_RANK[grade], -score)


def match_grade_extension(grade: Grade) -> dict[str, Any]:
    """The ``Bundle.entry.search.extension`` carrying a grade."""
    return {"url": MATCH_GRADE_EXTENSION, "valueCode": grade}


def only_certain(grades: list[Grade]) -> int | None:
    """``onlyCertainMatches=true``: the index of the one certain match, or None unless
    exactly one result is certain (several certain people cannot be confirmed as one)."""
    certain = [i for i, g in enumerate(grades) if g == "certain"]
    return certain[0] if len(certain) == 1 else None
