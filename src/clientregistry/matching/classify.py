"""Classification of one submission against its scored candidates, the OpenCR way.

1. Candidates known not to be this person (broken matches) are dropped.
2. The strongest auto match decides the golden record; on a tie, the golden record the record
   already had wins.
3. Auto matches under another golden record are conflicts, flagged for review.
4. Potential matches under the chosen golden record count as auto matches.
5. Without an auto match the record gets a golden record of its own (the caller decides
   whether that is a new one or the one it already had alone).
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Iterable
from dataclasses import dataclass, field

from clientregistry.matching.scoring import PairScore


@dataclass(frozen=True, slots=True)
class Candidate:
    """A stored record that scored against the submission."""

    record_id: Hashable
    golden_id: Hashable
    score: PairScore
    strength: float
    """Score above the deciding rule set's auto threshold; orders candidates."""


@dataclass(slots=True)
class Classification:
    """Where a submission belongs and what needs a person's eye."""

    golden_id: Hashable | None
    auto: list[Candidate] = field(default_factory=list)
    conflicts: list[Candidate] = field(default_factory=list)
    potential: list[Candidate] = field(default_factory=list)


def classify(
    candidates: Iterable[Candidate],
    *,
    current_golden: Hashable | None = None,
    broken: Collection[Hashable] = (),
) -> Classification:
    """Apply OpenCR's classification to scored candidates."""
    kept = [c for c in candidates if c.record_id not in broken and c.score.decision != "none"]
    autos = [c for c in kept if c.score.decision == "auto"]
    if not autos:
        potential = sorted(kept, key=lambda c: -c.strength)
        return Classification(None, potential=potential)
    top = max(c.strength for c in autos)
    leaders = [c for c in autos if c.strength == top]
    chosen = next((c for c in leaders if c.golden_id == current_golden), leaders[0]).golden_id
    result = Classification(chosen)
    for c in sorted(kept, key=lambda c: -c.strength):
        if c.golden_id == chosen:
            result.auto.append(c)
        elif c.score.decision == "auto":
            result.conflicts.append(c)
        else:
            result.potential.append(c)
    return result
