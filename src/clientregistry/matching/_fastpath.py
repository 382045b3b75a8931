"""Rule sets compiled to Python functions for the hot path of scoring.

:class:`~clientregistry.matching.scoring.Scorer` explains pairs with a readable interpreter.
Scoring millions of candidate pairs needs less: this module writes, once per rule set, the
source of one plain function — fields in order of weight, every constant inlined, each
measure computed at most once per field, grouped fields held back, and an early exit once a
pair can no longer reach the potential-match threshold — and compiles it with ``exec``. The
generated source is kept on the function (``__source__``) for reading and debugging.
Both paths must agree on every pair that reaches the threshold (tests hold them to it).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

from clientregistry.matching.comparison import (
    TermFrequency,
    agreement_for,
    crossed,
    distance_for,
    identifier_agreement,
    null_contribution,
)
from clientregistry.matching.features import FeatureExtractor, Features
from clientregistry.matching.rules import BASE_SCORE, TF_MAX_SHIFT, Field, Level, RuleSet
from clientregistry.matching.rules import max_contribution as _max_contribution

RuleSetScore = Callable[[Features, Features, TermFrequency], float | None]

PRUNED = float("-inf")
"""Returned when a pair cannot reach the potential-match threshold (its score is not needed)."""


def _tf_level(level: Level, slot: int) -> Callable[[Any, Any, TermFrequency], float]:
    """The weight of agreeing at a term-frequency level, for these two values (the same
    arithmetic as :func:`~clientregistry.matching.scoring.tf_weight`, constants bound)."""
    weight = level.weight
    log_m = math.log10(level.m)
    low = weight - TF_MAX_SHIFT
    high = weight + TF_MAX_SHIFT
    floor = level.tf_minimum_u or 1e-12
    log10 = math.log10

    def score(a: Any, b: Any, tf: TermFrequency) -> float:
        freq = tf(slot, a)
        if a != b:
            other = tf(slot, b)
            if freq is None or (other is not None and other > freq):
                freq = other
        if freq is None:
            return weight
        adjusted = log_m - log10(freq if freq > floor else floor)
        return low if adjusted < low else high if adjusted > high else adjusted

    return score


class _Writer:
    """Collects generated lines and the objects they refer to."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, Any] = {
            "PRUNED": PRUNED,
            "_ident": identifier_agreement,
            "EMPTY": frozenset(),
        }

    def bind(self, prefix: str, value: Any) -> str:
        name = f"{prefix}{len(self.names)}"
        self.names[name] = value
        return name

    def line(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)


def _probabilistic_field(
    w: _Writer, f: Field, slot: int, others: dict[str, int], indent: int
) -> None:
    """Lines that set ``w`` to what a probabilistic field adds for (va, vb); ``others``: the
    slots of the fields its ``swappedWith`` / ``crossWith`` levels name."""
    if f.comparator is None:  # shared-identifier
        ident = w.bind("I", agreement_for(f.unique_systems))
        w.line(indent, f"r = {ident}(va, vb)")
        agree = f.levels[0].weight
        if len(f.levels) == 1 or f.levels[-1].threshold <= 0:
            w.line(indent, f"w = 0.0 if r is None else ({agree!r} if r else {f.else_weight!r})")
            return
        # within some edits: what _identifier_level decides (r is True: the first level)
        w.line(indent, "if r is None:")
        w.line(indent + 1, "w = 0.0")
        w.line(indent, "elif r:")
        w.line(indent + 1, f"w = {agree!r}")
        w.line(indent, "else:")
        w.line(indent + 1, f"d = {w.bind('D', distance_for(f.unique_systems))}(va, vb)")
        for index, level in enumerate(f.levels):
            keyword = "if" if index == 0 else "elif"
            w.line(indent + 1, f"{keyword} d <= {level.threshold!r}:")
            w.line(indent + 2, f"w = {level.weight!r}")
        w.line(indent + 1, "else:")
        w.line(indent + 2, f"w = {f.else_weight!r}")
        return
    measured: dict[str, str] = {}
    for index, level in enumerate(f.levels):
        comparator = level.comparator
        assert comparator is not None
        if level.swapped_with is not None and level.one_way:
            # what crossed decides: either value agrees with a word of the other's other field
            other = others[level.swapped_with]
            test = w.bind("C", functools.partial(crossed, level))
            condition = f"{test}(va, vb, (a[{other}], b[{other}]))"
        elif level.swapped_with is not None:
            # what _swapped decides: both others present, and each value agrees with the
            # other record's other field
            other = others[level.swapped_with]
            measure = w.bind("M", comparator.measure)
            op = "<=" if comparator.kind == "distance" else ">="
            t = repr(level.threshold)
            condition = (
                f"(ca := a[{other}]) and (cb := b[{other}]) "
                f"and {measure}(va, cb) {op} {t} and {measure}(ca, vb) {op} {t}"
            )
        elif comparator.name == "exact":
            condition = "va == vb"
        else:
            op = "<=" if comparator.kind == "distance" else ">="
            variable = measured.get(comparator.name)
            if variable is None:
                variable = measured[comparator.name] = f"m{len(measured)}"
                measure = w.bind("M", comparator.measure)
                condition = f"({variable} := {measure}(va, vb)) {op} {level.threshold!r}"
            else:
                condition = f"{variable} {op} {level.threshold!r}"
        if level.term_frequency:
            weight = f"{w.bind('T', _tf_level(level, slot))}(va, vb, tf)"
        else:
            weight = repr(level.weight)
        w.line(indent, f"{'if' if index == 0 else 'elif'} {condition}:")
        w.line(indent + 1, f"w = {weight}")
    w.line(indent, "else:")
    w.line(indent + 1, f"w = {f.else_weight!r}")


def _deterministic_field(w: _Writer, f: Field, indent: int) -> None:
    """Lines that set ``w`` to what a deterministic field adds for (va, vb)."""
    if f.comparator is None:
        ident = w.bind("I", agreement_for(f.unique_systems))
        w.line(indent, f"w = {f.weight!r} if {ident}(va, vb) is True else 0.0")
        return
    agrees = w.bind("A", f.comparator.agrees)
    w.line(indent, f"w = {f.weight!r} if {agrees}(va, vb, {f.threshold!r}) else 0.0")


def _nulls(
    w: _Writer,
    f: Field,
    null_one: float | None,
    null_both: float | None,
    compare: Callable[[int], None],
) -> None:
    """Lines for one or both values missing: the null-handling constant, or (no null
    handling, as OpenCR) the comparison of the empty values."""
    w.line(1, "elif va or vb:")
    if null_one is None:
        if f.is_identifier_set:
            w.line(2, "va = va or EMPTY")
            w.line(2, "vb = vb or EMPTY")
        compare(2)
    else:
        w.line(2, f"w = {null_one!r}")
    w.line(1, "else:")
    if null_both is None:
        if f.is_identifier_set:
            w.line(2, "va = vb = EMPTY")
        compare(2)
    else:
        w.line(2, f"w = {null_both!r}")


def compile_rule_set(rs: RuleSet, extractor: FeatureExtractor) -> RuleSetScore:
    """A function (a, b, tf) -> score, ``None`` when a filter or phonetic block fails, or
    :data:`PRUNED` when the pair cannot reach the potential-match threshold."""
    probabilistic = rs.probabilistic
    fields = sorted(rs.fields, key=lambda f: -_max_contribution(rs, f))
    by_name = {f.name: f for f in rs.fields}
    nulls = [
        (
            None if f.null_one is None else null_contribution(f, f.null_one, probabilistic),
            None if f.null_both is None else null_contribution(f, f.null_both, probabilistic),
        )
        for f in fields
    ]
    # remaining[i]: the most fields i.. can still add
    remaining = [0.0] * (len(fields) + 1)
    for i in range(len(fields) - 1, -1, -1):
        best_null = max(x for x in (*nulls[i], 0.0) if x is not None)
        remaining[i] = remaining[i + 1] + max(_max_contribution(rs, fields[i]), best_null)
    groups = sorted({f.group for f in fields if f.group is not None})
    group_var = {group: f"g{i}" for i, group in enumerate(groups)}
    share = rs.group_share
    # a group adds its strongest agreement (g) and a share of the others (s: all of them)
    if share:
        held = "".join(f" + {v} + {share!r} * (s{v[1:]} - {v})" for v in group_var.values())
    else:
        held = "".join(f" + {v}" for v in group_var.values())

    w = _Writer()
    w.line(0, "def score(a, b, tf):")
    for flt in rs.filters:
        slot = extractor.slot(flt)
        w.line(1, f"if a[{slot}] != b[{slot}]:")
        w.line(2, "return None")
    for f in rs.phonetic_blocks:
        assert f.comparator is not None
        slot = extractor.slot(f)
        agrees = w.bind("P", f.comparator.agrees)
        w.line(1, f"if not {agrees}(a[{slot}], b[{slot}], {f.threshold!r}):")
        w.line(2, "return None")
    w.line(1, f"total = {BASE_SCORE if probabilistic else 0.0!r}")
    for variable in group_var.values():
        w.line(1, f"{variable} = 0.0")
        if share:
            w.line(1, f"s{variable[1:]} = 0.0")
    for i, f in enumerate(fields):
        slot = extractor.slot(f)
        others = {
            lv.swapped_with: extractor.slot(by_name[lv.swapped_with])
            for lv in f.levels
            if lv.swapped_with is not None
        }
        null_one, null_both = nulls[i]

        def compare(indent: int, f: Field = f, others: dict[str, int] = others) -> None:
            if probabilistic:
                _probabilistic_field(w, f, extractor.slot(f), others, indent)
            else:
                _deterministic_field(w, f, indent)

        w.line(1, f"# {f.name}")
        w.line(1, f"va = a[{slot}]")
        w.line(1, f"vb = b[{slot}]")
        w.line(1, "if va and vb:")
        compare(2)
        if null_one is not None and null_one == null_both:
            w.line(1, "else:")
            w.line(2, f"w = {null_one!r}")
        else:
            _nulls(w, f, null_one, null_both, compare)
        if f.group is not None:
            variable = group_var[f.group]
            if share:
                w.line(1, "if w > 0.0:")
                w.line(2, f"s{variable[1:]} += w")
                w.line(2, f"if w > {variable}:")
                w.line(3, f"{variable} = w")
            else:
                w.line(1, f"if w > {variable}:")
                w.line(2, f"{variable} = w")
            w.line(1, "elif w < 0.0:")
            w.line(2, "total += w")
        else:
            w.line(1, "total += w")
        w.line(1, f"if total{held} + {remaining[i + 1]!r} < {rs.potential_threshold!r}:")
        w.line(2, "return PRUNED")
    w.line(1, f"return total{held}")

    source = "\n".join(w.lines) + "\n"
    namespace = dict(w.names)
    exec(compile(source, f"<rule set {rs.index + 1}: {rs.name}>", "exec"), namespace)
    function: RuleSetScore = namespace["score"]
    function.__source__ = source  # type: ignore[attr-defined]
    return function
