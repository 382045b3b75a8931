"""How one field of two records compares: comparison levels, identifier sets, null handling
and term frequencies.

These are the pieces :class:`~clientregistry.matching.scoring.Scorer` (explained scoring),
:mod:`~clientregistry.matching._fastpath` (compiled scoring) and
:mod:`~clientregistry.matching.training` (levels over arrays of pairs) share, so that the three
agree on what a level is; none of them imports another for it.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from rapidfuzz.distance import OSA

from clientregistry.matching.rules import TF_MAX_SHIFT, Field, Level

TermFrequency = Callable[[int, str], float | None]
"""(slot, value) -> relative frequency of the value among stored records, if known."""


def no_tf(slot: int, value: str) -> float | None:
    return None


Cross = Mapping[str, tuple[Any, Any]]
"""The two records' values of the fields that ``swappedWith`` / ``crossWith`` levels name."""

IdentifierAgreement = Callable[[frozenset[str], frozenset[str]], bool | None]


@lru_cache(maxsize=64)
def unique_system_test(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """Whether an identifier system matches one of ``patterns`` (case-insensitive globs)."""
    lowered = tuple(p.lower() for p in patterns)

    @lru_cache(maxsize=1024)
    def unique(system: str) -> bool:
        name = system.lower()
        return any(fnmatch.fnmatchcase(name, p) for p in lowered)

    return unique


def unique_only(values: frozenset[str], unique: Callable[[str], bool] | None) -> frozenset[str]:
    """The identifiers of ``values`` whose system is unique per person (all without a test)."""
    if unique is None or not values:
        return values
    return frozenset(item for item in values if unique(item.rsplit("|", 1)[0]))


def agreement_for(patterns: tuple[str, ...] | None) -> IdentifierAgreement:
    """:func:`identifier_agreement` for a field's ``uniqueSystems``: a shared identifier of
    any system agrees; only a unique system held with different values disagrees."""
    if patterns is None:
        return identifier_agreement
    unique = unique_system_test(patterns)

    def agreement(a: frozenset[str], b: frozenset[str]) -> bool | None:
        if not a.isdisjoint(b):
            return True
        return identifier_agreement(unique_only(a, unique), unique_only(b, unique)) or None

    return agreement


def distance_for(
    patterns: tuple[str, ...] | None,
) -> Callable[[frozenset[str], frozenset[str]], int | None]:
    """:func:`identifier_distance` over the unique systems of a field's ``uniqueSystems``."""
    if patterns is None:
        return identifier_distance
    unique = unique_system_test(patterns)

    def distance(a: frozenset[str], b: frozenset[str]) -> int | None:
        return identifier_distance(unique_only(a, unique), unique_only(b, unique))

    return distance


def identifiers_contradict(
    a: frozenset[str], b: frozenset[str], unique: Callable[[str], bool], edits: int = 1
) -> bool:
    """Whether two records hold clearly different values of one unique identifier system:
    a system in common, no value shared and every pair more than ``edits`` edits apart (a
    typo is not a contradiction). Such records are never one person (a cannot-link)."""
    ua, ub = unique_only(a, unique), unique_only(b, unique)
    if not ua or not ub or not ua.isdisjoint(ub):
        return False
    distance = identifier_distance(ua, ub)
    return distance is not None and distance > edits


def identifier_agreement(a: frozenset[str], b: frozenset[str]) -> bool | None:
    """Agree when an identifier is shared; disagree when a shared system differs; else None."""
    if not a.isdisjoint(b):
        return True
    if len(a) == 1 and len(b) == 1:  # the usual case, without building a set
        (x,) = a
        (y,) = b
        return False if x.rsplit("|", 1)[0] == y.rsplit("|", 1)[0] else None
    systems_a = {item.rsplit("|", 1)[0] for item in a}
    for item in b:
        if item.rsplit("|", 1)[0] in systems_a:
            return False
    return None


def identifier_distance(a: frozenset[str], b: frozenset[str]) -> int | None:
    """The fewest edits (optimal string alignment: a character inserted, deleted or changed,
    or two neighbours swapped) between a value of one set and a value of the same system in
    the other; 0 when they share an identifier, ``None`` when they have no system in common."""
    if not a.isdisjoint(b):
        return 0
    by_system: dict[str, list[str]] = {}
    for item in a:
        system, value = item.rsplit("|", 1)
        by_system.setdefault(system, []).append(value)
    best: int | None = None
    for item in b:
        system, value = item.rsplit("|", 1)
        for other in by_system.get(system, ()):
            distance = OSA.distance(value, other)
            if best is None or distance < best:
                best = distance
    return best


def identifier_level(f: Field, a: frozenset[str], b: frozenset[str]) -> int | None:
    """Index of the first shared-identifier level within whose edits the sets agree."""
    agreement = agreement_for(f.unique_systems)(a, b)
    if agreement is None:
        return None
    levels = f.levels
    if agreement:
        return 0
    if len(levels) == 1 or levels[-1].threshold <= 0:
        return len(levels)
    distance = distance_for(f.unique_systems)(a, b)
    for index, level in enumerate(levels):
        if distance is not None and distance <= level.threshold:
            return index
    return len(levels)


def null_contribution(f: Field, handling: str, probabilistic: bool) -> float:
    if handling == "moderate":
        return 0.0
    if handling == "greedy":
        if probabilistic:
            return max(level.weight for level in f.levels)
        return f.weight
    return f.else_weight if probabilistic else 0.0


def tf_weight(level: Level, frequency: float) -> float:
    """The weight of agreeing at ``level`` on a value with this relative frequency."""
    base = level.weight
    adjusted = math.log10(level.m / max(frequency, level.tf_minimum_u or 1e-12))
    return min(max(adjusted, base - TF_MAX_SHIFT), base + TF_MAX_SHIFT)


def _level_weight(level: Level, slot: int, a: Any, b: Any, tf: TermFrequency) -> float:
    if level.term_frequency and isinstance(a, str):
        freq_a = tf(slot, a)
        freq_b = freq_a if a == b else tf(slot, b)
        if freq_a is not None or freq_b is not None:
            return tf_weight(level, max(x for x in (freq_a, freq_b) if x is not None))
    return level.weight


def comparison_level(f: Field, a: Any, b: Any, cross: Cross | None = None) -> int | None:
    """Index of the first level of ``f`` at which ``a`` and ``b`` agree; ``len(f.levels)``
    when none does ("else"); ``None`` for identifier sets with no system in common.

    ``cross`` holds the two records' values of the fields ``swappedWith`` / ``crossWith``
    levels name. Values must be present (null handling is the caller's business).
    """
    if f.comparator is None:  # shared-identifier
        return identifier_level(f, a, b)
    measured: dict[str, float] = {}
    for index, level in enumerate(f.levels):
        comparator = level.comparator
        assert comparator is not None
        if level.swapped_with is not None:
            pair = None if cross is None else cross.get(level.swapped_with)
            agrees = pair is not None and (
                crossed(level, a, b, pair) if level.one_way else _swapped(level, a, b, pair)
            )
        elif comparator.name == "exact":
            agrees = a == b
        else:
            value = measured.get(comparator.name)
            if value is None:
                value = measured[comparator.name] = comparator.measure(a, b)
            if comparator.kind == "distance":
                agrees = value <= level.threshold
            else:
                agrees = value >= level.threshold
        if agrees:
            return index
    return len(f.levels)


def _agrees_with_word(level: Level, value: str, other: str) -> bool:
    comparator = level.comparator
    assert comparator is not None
    return any(comparator.agrees(value, word, level.threshold) for word in other.split())


def crossed(level: Level, a: Any, b: Any, pair: tuple[Any, Any]) -> bool:
    """A ``crossWith`` level: whether either record's value matches a word of the other
    record's other field (its first name among the other's middle names)."""
    other_a, other_b = pair
    return bool(
        (other_b and _agrees_with_word(level, a, other_b))
        or (other_a and _agrees_with_word(level, b, other_a))
    )


def _swapped(level: Level, a: Any, b: Any, cross: tuple[Any, Any]) -> bool:
    """Whether a's value matches b's other field and b's value a's other field."""
    comparator = level.comparator
    assert comparator is not None
    other_a, other_b = cross
    if not other_a or not other_b:
        return False
    return comparator.agrees(a, other_b, level.threshold) and comparator.agrees(
        other_a, b, level.threshold
    )


def probabilistic_contribution(
    f: Field,
    slot: int,
    a: Any,
    b: Any,
    tf: TermFrequency,
    cross: Cross | None = None,
) -> tuple[float, str, bool]:
    """(weight added, name of the level, agreed at some level)."""
    index = comparison_level(f, a, b, cross)
    if index is None:
        return 0.0, "no shared system", False
    if index == len(f.levels):
        return f.else_weight, "disagree" if len(f.levels) == 1 else "else", False
    level = f.levels[index]
    name = "agree" if len(f.levels) == 1 else f"level {index + 1} ({level.algorithm})"
    if level.comparator is None and level.threshold > 0:
        name = f"level {index + 1} ({level.algorithm} within {level.threshold:g} edits)"
    if level.swapped_with is not None:
        how = "crossed with" if level.one_way else "swapped with"
        name = f"level {index + 1} ({how} {level.swapped_with})"
    return _level_weight(level, slot, a, b, tf), name, True
