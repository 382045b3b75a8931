"""Scoring a pair of records under decision rules, with OpenCR's semantics.

Deterministic rule sets add the weight (default 1) of each agreeing field. Probabilistic rule
sets are Fellegi–Sunter as OpenCR computes it: 100, plus log10(m/u) for an agreeing field,
plus log10((1-m)/(1-u)) for a disagreeing one; a field with several comparison levels adds
the weight of the first level that agrees, with term-frequency adjustment where asked.

Missing values follow the field's null handling: one side empty uses ``null_handling``, both
empty ``null_handling_both``; ``moderate`` adds nothing, ``greedy`` counts as agreement,
``conservative`` as disagreement, and no null handling compares the empty strings (OpenCR).

A pair's result is the best over the rule sets (auto beats potential beats none). The fast
path (:meth:`Scorer.score`) computes numbers only; :meth:`Scorer.explain` also says, field by
field, what was compared and what it added — the same code, asked to keep notes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from clientregistry.matching._fastpath import compile_rule_set
from clientregistry.matching.comparators import BOOLEAN_KINDS
from clientregistry.matching.comparison import (
    Cross,
    TermFrequency,
    agreement_for,
    comparison_level,
    no_tf,
    null_contribution,
    probabilistic_contribution,
    tf_weight,
)
from clientregistry.matching.features import FeatureExtractor, Features
from clientregistry.matching.rules import BASE_SCORE, TF_MAX_SHIFT, DecisionRules, Field, RuleSet

__all__ = [
    "DECISION_RANK",
    "TF_MAX_SHIFT",
    "Decision",
    "FieldResult",
    "PairScore",
    "RuleSetResult",
    "Scorer",
    "TermFrequency",
    "comparison_level",
    "no_tf",
    "tf_weight",
]

Decision = Literal["auto", "potential", "none"]
DECISION_RANK: dict[Decision, int] = {"none": 0, "potential": 1, "auto": 2}


@dataclass(frozen=True, slots=True)
class FieldResult:
    """How one field of one rule set compared, for people to read."""

    field: str
    algorithm: str
    left: str
    right: str
    similarity: float | None
    agrees: bool | None
    level: str
    contribution: float

    def to_json(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "algorithm": self.algorithm,
            "left": self.left,
            "right": self.right,
            "similarity": None if self.similarity is None else round(self.similarity, 4),
            "agrees": self.agrees,
            "level": self.level,
            "contribution": round(self.contribution, 4),
        }


@dataclass(frozen=True, slots=True)
class RuleSetResult:
    """The outcome of one rule set for one pair."""

    rule_set: int
    name: str
    score: float
    decision: Decision
    blocked_by: str | None = None
    fields: tuple[FieldResult, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rule_set": self.rule_set,
            "name": self.name,
            "score": round(self.score, 4),
            "decision": self.decision,
        }
        if self.blocked_by is not None:
            out["blocked_by"] = self.blocked_by
        out["fields"] = [f.to_json() for f in self.fields]
        return out


@dataclass(frozen=True, slots=True)
class PairScore:
    """The best result over the rule sets: score, decision and which rule set gave it."""

    score: float
    decision: Decision
    rule_set: int

    @property
    def rank(self) -> int:
        return DECISION_RANK[self.decision]


def _decide(rs: RuleSet, score: float) -> Decision:
    if score >= rs.auto_threshold:
        return "auto"
    if score >= rs.potential_threshold:
        return "potential"
    return "none"


def _display(value: Any) -> str:
    if isinstance(value, frozenset):
        return ", ".join(sorted(value))
    return str(value)


class Scorer:
    """Scores feature tuples made by one :class:`FeatureExtractor` under its rules."""

    def __init__(self, extractor: FeatureExtractor) -> None:
        self.extractor = extractor
        self.rules: DecisionRules = extractor.rules
        by_name = {(rs.index, f.name): f for rs in self.rules.rule_sets for f in rs.fields}
        self._cross: dict[tuple[int, str], dict[str, int]] = {}
        for rs in self.rules.rule_sets:
            for f in rs.fields:
                for lv in f.levels:
                    if lv.swapped_with is not None:
                        slot = extractor.slot(by_name[(rs.index, lv.swapped_with)])
                        self._cross.setdefault((rs.index, f.name), {})[lv.swapped_with] = slot
        self._plans = [
            (
                rs,
                tuple((extractor.slot(f), f) for f in rs.fields),
                tuple((extractor.slot(f), f) for f in rs.phonetic_blocks),
                tuple((extractor.slot(flt), flt.name) for flt in rs.filters),
            )
            for rs in self.rules.rule_sets
        ]
        self._compiled: list[tuple[RuleSet, Callable[..., float | None]]] | None = None

    # -------------------------------------------------------------- public

    def score(self, a: Features, b: Features, tf: TermFrequency = no_tf) -> PairScore | None:
        """The best result over the rule sets, or ``None`` if every rule set blocks the pair.

        Pairs that cannot reach a potential match come back with decision ``none`` and a
        score of ``-inf``: the compiled fast path stops scoring them early. Use
        :meth:`exact_score` when the number itself matters.
        """
        best: PairScore | None = None
        for rs, compiled in self._compiled or self._compile():
            result = compiled(a, b, tf)
            if result is None:
                continue
            decision = _decide(rs, result)
            if best is None or _better(rs, result, decision, best, self.rules):
                best = PairScore(result, decision, rs.index)
        return best

    def likely(self, a: Features, b: Features, tf: TermFrequency = no_tf) -> PairScore | None:
        """:meth:`score` for candidate search: ``None`` unless the pair is at least a potential
        match (no result object is made for the many pairs that are not)."""
        compiled = self._compiled or self._compile()
        if len(compiled) == 1:
            rs, function = compiled[0]
            result = function(a, b, tf)
            if result is None or result < rs.potential_threshold:
                return None
            decision: Decision = "auto" if result >= rs.auto_threshold else "potential"
            return PairScore(result, decision, rs.index)
        best = self.score(a, b, tf)
        return None if best is None or best.decision == "none" else best

    @property
    def compiled(self) -> list[tuple[RuleSet, Callable[..., float | None]]]:
        """Each rule set with its compiled function (a, b, tf) -> score, ``None`` (blocked)
        or ``-inf`` (cannot reach the potential-match threshold)."""
        return self._compiled or self._compile()

    def _compile(self) -> list[tuple[RuleSet, Callable[..., float | None]]]:
        self._compiled = [(rs, compile_rule_set(rs, self.extractor)) for rs in self.rules.rule_sets]
        return self._compiled

    def exact_score(self, a: Features, b: Features, tf: TermFrequency = no_tf) -> PairScore | None:
        """Like :meth:`score`, but always the full score (no early exit)."""
        best: PairScore | None = None
        for plan in self._plans:
            result = self._rule_set(plan, a, b, tf, None)
            if result is None:
                continue
            rs = plan[0]
            decision = _decide(rs, result)
            if best is None or _better(rs, result, decision, best, self.rules):
                best = PairScore(result, decision, rs.index)
        return best

    def explain(self, a: Features, b: Features, tf: TermFrequency = no_tf) -> list[RuleSetResult]:
        """One :class:`RuleSetResult` per rule set, with the per-field notes."""
        out = []
        for plan in self._plans:
            rs = plan[0]
            notes: list[FieldResult] = []
            blocked = self._blocked(plan, a, b)
            if blocked is not None:
                out.append(RuleSetResult(rs.index, rs.name, 0.0, "none", blocked_by=blocked))
                continue
            result = self._rule_set(plan, a, b, tf, notes)
            assert result is not None
            out.append(
                RuleSetResult(rs.index, rs.name, result, _decide(rs, result), None, tuple(notes))
            )
        return out

    def best(self, results: list[RuleSetResult]) -> RuleSetResult | None:
        """The deciding result of :meth:`explain`'s list (the one :meth:`score` reports)."""
        chosen: RuleSetResult | None = None
        for result in results:
            if result.blocked_by is not None:
                continue
            rs = self.rules.rule_sets[result.rule_set]
            if chosen is None or _better(
                rs,
                result.score,
                result.decision,
                PairScore(chosen.score, chosen.decision, chosen.rule_set),
                self.rules,
            ):
                chosen = result
        return chosen

    # -------------------------------------------------------------- internals

    @staticmethod
    def _blocked(plan: Any, a: Features, b: Features) -> str | None:
        _, _, phonetic, filters = plan
        for slot, name in filters:
            if a[slot] != b[slot]:
                return f"filter {name}"
        for slot, f in phonetic:
            if not f.comparator.agrees(a[slot], b[slot], f.threshold):
                return f"phonetic {f.name}"
        return None

    def _rule_set(
        self,
        plan: Any,
        a: Features,
        b: Features,
        tf: TermFrequency,
        notes: list[FieldResult] | None,
    ) -> float | None:
        rs, fields, phonetic, filters = plan
        for slot, _ in filters:
            if a[slot] != b[slot]:
                return None
        for slot, f in phonetic:
            if not f.comparator.agrees(a[slot], b[slot], f.threshold):
                return None
        probabilistic = rs.probabilistic
        total = BASE_SCORE if probabilistic else 0.0
        group_best: dict[str, float] = {}
        group_sum: dict[str, float] = {}
        for slot, f in fields:
            va = a[slot]
            vb = b[slot]
            if not va or not vb:
                handling = f.null_both if (not va and not vb) else f.null_one
                if handling is not None:
                    add = null_contribution(f, handling, probabilistic)
                    total += _grouped(f, add, group_best, group_sum)
                    if notes is not None:
                        notes.append(
                            FieldResult(
                                f.name,
                                f.algorithm,
                                _display(va),
                                _display(vb),
                                None,
                                None if handling == "moderate" else handling == "greedy",
                                f"null ({handling})",
                                add,
                            )
                        )
                    continue
                if f.is_identifier_set:
                    va = va or frozenset()
                    vb = vb or frozenset()
            algorithm, similarity = f.algorithm, None
            if probabilistic:
                others = self._cross.get((rs.index, f.name))
                cross = (
                    None if others is None else {name: (a[s], b[s]) for name, s in others.items()}
                )
                add, level_name, agrees = probabilistic_contribution(f, slot, va, vb, tf, cross)
                if notes is not None:
                    algorithm, similarity = _level_explained(f, va, vb, cross)
            else:
                agrees = _agrees(f, va, vb)
                add = f.weight if agrees else 0.0
                level_name = "agree" if agrees else "disagree"
                if notes is not None:
                    similarity = _similarity(f, va, vb)
            total += _grouped(f, add, group_best, group_sum)
            if notes is not None:
                notes.append(
                    FieldResult(
                        f.name,
                        algorithm,
                        _display(va),
                        _display(vb),
                        similarity,
                        agrees,
                        level_name,
                        add,
                    )
                )
        share = rs.group_share
        if notes is not None and group_best:
            _credit_groups(rs, notes, group_best, share)
        return total + sum(
            best + share * (group_sum[group] - best) if share else best
            for group, best in group_best.items()
        )


def _credit_groups(
    rs: RuleSet, notes: list[FieldResult], group_best: dict[str, float], share: float
) -> None:
    """Rewrite grouped fields' notes so contributions add up to the score: the strongest
    agreement of each group keeps its weight, the others show their share of it (0 unless
    the rule set's ``groupShare`` says otherwise) and say why."""
    group_of = {f.name: f.group for f in rs.fields}
    credited: set[str] = set()
    for i, note in enumerate(notes):
        group = group_of.get(note.field)
        if group is None or note.contribution <= 0.0:
            continue
        if group not in credited and note.contribution == group_best.get(group):
            credited.add(group)
            continue
        if share:
            why = f"{note.level}; group {group}, counted at {share:g}"
        else:
            why = f"{note.level}; group {group} counted once"
        notes[i] = dataclasses.replace(note, contribution=note.contribution * share, level=why)


def _grouped(
    f: Field, add: float, group_best: dict[str, float], group_sum: dict[str, float]
) -> float:
    """What a field adds now: grouped agreements are held back (the best one counts in full,
    the others at the rule set's ``groupShare``)."""
    if f.group is None or add <= 0.0:
        return add
    if add > group_best.get(f.group, 0.0):
        group_best[f.group] = add
    group_sum[f.group] = group_sum.get(f.group, 0.0) + add
    return 0.0


def _better(
    rs: RuleSet, score: float, decision: Decision, best: PairScore, rules: DecisionRules
) -> bool:
    """Whether (rs, score, decision) beats ``best``: higher decision, then larger margin."""
    rank = DECISION_RANK[decision]
    if rank != best.rank:
        return rank > best.rank
    best_rs = rules.rule_sets[best.rule_set]
    return score - rs.auto_threshold > best.score - best_rs.auto_threshold


def _agrees(f: Field, a: Any, b: Any) -> bool:
    if f.comparator is None:  # shared-identifier
        return agreement_for(f.unique_systems)(a, b) is True
    return f.comparator.agrees(a, b, f.threshold)


def _similarity(f: Field, a: Any, b: Any) -> float | None:
    if f.comparator is None:
        agreement = agreement_for(f.unique_systems)(a, b)
        return None if agreement is None else float(agreement)
    return f.comparator.similarity(a, b)


def _level_explained(f: Field, a: Any, b: Any, cross: Cross | None) -> tuple[str, float | None]:
    """(algorithm, similarity) of the level that decided a field, for explanations.

    For "else" (no level agreed) it is the most lenient level's algorithm and similarity, so
    a reader sees how far the values were from agreeing.
    """
    if f.comparator is None:
        return f.algorithm, _similarity(f, a, b)
    index = comparison_level(f, a, b, cross)
    plain = [
        lv
        for lv in f.levels
        if lv.swapped_with is None
        and lv.comparator is not None
        and lv.comparator.kind not in BOOLEAN_KINDS
    ] or [lv for lv in f.levels if lv.swapped_with is None]
    if index is not None and index < len(f.levels):
        level = f.levels[index]
    elif plain:
        level = plain[-1]
    else:
        level = f.levels[-1]
    comparator = level.comparator
    assert comparator is not None
    pair = None if cross is None or level.swapped_with is None else cross.get(level.swapped_with)
    if pair is not None:
        if level.one_way:
            return f"{level.algorithm} (crossed with {level.swapped_with})", 1.0
        left = comparator.similarity(a, pair[1])
        right = comparator.similarity(pair[0], b)
        return f"{level.algorithm} (swapped with {level.swapped_with})", min(left, right)
    return level.algorithm, comparator.similarity(a, b)
