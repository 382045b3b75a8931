"""Rule sets compiled into closures for the hot path of scoring.

:class:`~clientregistry.matching.scoring.Scorer` explains pairs with a readable interpreter;
this module turns the same rules into per-field closures with constants bound, fields ordered
by weight, and an early exit once a pair can no longer reach the potential-match threshold.
Both must agree exactly on every pair that reaches the threshold (tests hold them to it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clientregistry.matching.features import FeatureExtractor, Features
from clientregistry.matching.rules import BASE_SCORE, Field, Level, RuleSet
from clientregistry.matching.rules import max_contribution as _max_contribution
from clientregistry.matching.scoring import (
    TermFrequency,
    _identifier_agreement,
    _null_contribution,
    _swapped,
    tf_weight,
)

FieldScore = Callable[[Any, Any, TermFrequency], float]
CrossScore = Callable[[Any, Any, TermFrequency, Features, Features], float]
RuleSetScore = Callable[[Features, Features, TermFrequency], float | None]

PRUNED = float("-inf")
"""Returned when a pair cannot reach the potential-match threshold (its score is not needed)."""


def _tf_level(level: Level, slot: int) -> Callable[[Any, Any, TermFrequency], float]:
    weight = level.weight

    def score(a: Any, b: Any, tf: TermFrequency) -> float:
        freq_a = tf(slot, a)
        freq_b = freq_a if a == b else tf(slot, b)
        if freq_a is None and freq_b is None:
            return weight
        return tf_weight(level, max(x for x in (freq_a, freq_b) if x is not None))

    return score


def _probabilistic_field(f: Field, slot: int, other_slot: int | None) -> CrossScore:
    else_weight = f.else_weight
    if f.comparator is None:  # shared-identifier
        agree = f.levels[0]
        agree_weight = agree.weight

        def identifiers(a: Any, b: Any, tf: TermFrequency, fa: Features, fb: Features) -> float:
            agreement = _identifier_agreement(a, b)
            if agreement is None:
                return 0.0
            return agree_weight if agreement else else_weight

        return identifiers
    steps: list[tuple[Any, bool, float, Any]] = []
    for level in f.levels:
        comparator = level.comparator
        assert comparator is not None
        weight: Any = _tf_level(level, slot) if level.term_frequency else level.weight
        if level.swapped_with is not None:
            steps.append((("swap", level, other_slot), False, 1.0, weight))
        elif comparator.name == "exact":
            steps.append((None, False, 1.0, weight))
        else:
            steps.append(
                (comparator.measure, comparator.kind == "distance", level.threshold, weight)
            )
    frozen = tuple(steps)

    def levels(a: Any, b: Any, tf: TermFrequency, fa: Features, fb: Features) -> float:
        last_measure = None
        value = 0.0
        for measure, is_distance, threshold, weight in frozen:
            if measure is None:
                agrees = a == b
            elif measure.__class__ is tuple:
                _, level, other = measure
                agrees = _swapped(level, a, b, (fa[other], fb[other]))
            else:
                if measure is not last_measure:
                    value = measure(a, b)
                    last_measure = measure
                agrees = value <= threshold if is_distance else value >= threshold
            if agrees:
                return weight if weight.__class__ is float else weight(a, b, tf)
        return else_weight

    return levels


def _deterministic_field(f: Field) -> CrossScore:
    weight = f.weight
    if f.comparator is None:

        def identifiers(a: Any, b: Any, tf: TermFrequency, fa: Features, fb: Features) -> float:
            return weight if _identifier_agreement(a, b) is True else 0.0

        return identifiers
    agrees = f.comparator.agrees
    threshold = f.threshold

    def field_score(a: Any, b: Any, tf: TermFrequency, fa: Features, fb: Features) -> float:
        return weight if agrees(a, b, threshold) else 0.0

    return field_score


def compile_rule_set(rs: RuleSet, extractor: FeatureExtractor) -> RuleSetScore:
    """A function (a, b, tf) -> score, ``None`` when a filter or phonetic block fails, or
    :data:`PRUNED` when the pair cannot reach the potential-match threshold."""
    probabilistic = rs.probabilistic
    fields = sorted(rs.fields, key=lambda f: -_max_contribution(rs, f))
    by_name = {f.name: f for f in rs.fields}
    compiled = []
    for f in fields:
        slot = extractor.slot(f)
        null_one = None if f.null_one is None else _null_contribution(f, f.null_one, probabilistic)
        null_both = (
            None if f.null_both is None else _null_contribution(f, f.null_both, probabilistic)
        )
        swap = next((lv.swapped_with for lv in f.levels if lv.swapped_with), None)
        other_slot = None if swap is None else extractor.slot(by_name[swap])
        scorer = (
            _probabilistic_field(f, slot, other_slot) if probabilistic else _deterministic_field(f)
        )
        compiled.append((slot, null_one, null_both, scorer, f.is_identifier_set, f.group))
    # remaining[i]: the most fields i.. can still add
    remaining = [0.0] * (len(fields) + 1)
    for i in range(len(fields) - 1, -1, -1):
        f = fields[i]
        best_null = max(x for x in (compiled[i][1], compiled[i][2], 0.0) if x is not None)
        remaining[i] = remaining[i + 1] + max(_max_contribution(rs, f), best_null)
    plan = tuple(
        (slot, one, both, scorer, is_set, group, remaining[i + 1])
        for i, (slot, one, both, scorer, is_set, group) in enumerate(compiled)
    )
    filters = tuple(extractor.slot(flt) for flt in rs.filters)
    phonetic = tuple(
        (extractor.slot(f), f.comparator.agrees, f.threshold)
        for f in rs.phonetic_blocks
        if f.comparator is not None
    )
    start = BASE_SCORE if probabilistic else 0.0
    potential = rs.potential_threshold

    def score(a: Features, b: Features, tf: TermFrequency) -> float | None:
        for slot in filters:
            if a[slot] != b[slot]:
                return None
        for slot, agrees, threshold in phonetic:
            if not agrees(a[slot], b[slot], threshold):
                return None
        total = start
        held: dict[str, float] | None = None  # best agreement of each field group so far
        extra = 0.0
        for slot, one, both, scorer, is_set, group, rest in plan:
            va = a[slot]
            vb = b[slot]
            if not va or not vb:
                handling = both if (not va and not vb) else one
                if handling is None:
                    if is_set:
                        va = va or frozenset()
                        vb = vb or frozenset()
                    add = scorer(va, vb, tf, a, b)
                else:
                    add = handling
            else:
                add = scorer(va, vb, tf, a, b)
            if group is not None and add > 0.0:
                if held is None:
                    held = {}
                if add > held.get(group, 0.0):
                    held[group] = add
                    extra = sum(held.values())
            else:
                total += add
            if total + extra + rest < potential:
                return PRUNED
        return total + extra

    return score
