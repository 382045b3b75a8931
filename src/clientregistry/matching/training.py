"""Unsupervised estimation of m and u from the records themselves, the way Splink does it.

A probabilistic field's comparison levels each carry two probabilities: *m*, the chance that a
true match falls in that level, and *u*, the chance that two different people do. Typing them
in is guesswork; :func:`train` estimates them from unlabelled records:

1. **u from random pairs** (Splink's ``estimate_u_using_random_sampling``). Almost every pair of
   records drawn at random is two different people, so the share of random pairs falling in a
   level estimates its u. ``random_pairs`` distinct pairs are drawn (all of them when there are
   fewer); a rule set with filters draws its pairs among records whose filter values agree,
   since only those are ever scored under it.
2. **m by expectation-maximisation in training sessions** (Splink's
   ``estimate_parameters_using_expectation_maximisation``, one session per blocking rule). A
   session takes the pairs that agree *exactly* on a few fields -- one session per blocking key
   group of the rule set (its ``blocking``, or the groups derived from its weights), plus, for
   any field left in every group, a session blocked on other fields -- at most ``max_pairs``
   of them, drawn uniformly. The fields blocked on are left out of that session: agreeing on
   them is how the pairs were chosen, so their agreement says nothing about m, and the other
   fields of non-matching pairs still behave as in random pairs (u, held fixed, applies). EM
   then alternates: the E step gives each pair its match probability under the current m and
   the session's match share λ; the M step sets each level's m to the probability-weighted
   share of pairs in it and λ to the mean probability. It starts from the rules' own m values
   and stops when no m and not λ moves by more than ``tolerance``. A field's m is the average
   of its sessions' estimates, weighted by each session's expected number of matching pairs
   with the field present.

   EM over the pairs the matcher's blocking proposes would be simpler, but those pairs were
   chosen for agreeing on names, dates and so on, so their non-matches agree far more often
   than u says; EM then takes the agreement for matches (on 100,000 synthetic records it
   settled on "90% of candidate pairs match" and nonsense m values). Exact-agreement sessions
   keep the assumption EM needs.
3. **The match probability** (Splink's ``probability_two_random_records_match``): a session's
   expected matches divided by the share of all matching pairs that agree exactly on its
   blocked fields (the product, over those fields, of the probability that a match has the
   field present and equal on both sides, as the other sessions estimate it), over the number
   of record pairs; the median over sessions.

A *missing* value (an empty string or set, or identifier sets with no system in common) is a
null comparison: the pair tells nothing about that field and is left out of that field's
counts, as Splink's null level is.

No estimate is ever 0 (a weight must stay finite): a level's share is floored at half a count,
``1/(2n)`` for ``n`` non-null pairs (at least 1e-6), and the field's shares renormalised to 1.
A field no session can estimate keeps its m (and a field no random pair compares keeps its u).
The trained rules keep everything else (algorithms, thresholds, term-frequency flags, null
handling, blocking, filters and the match thresholds); deterministic rule sets are returned
unchanged. A single-level (OpenCR) field's "disagree" stays ``(1-m, 1-u)``, so the rules
written by :meth:`DecisionRules.to_json` read back the same.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from rapidfuzz import process

from clientregistry.matching.blocking import plan_key_groups
from clientregistry.matching.comparators import Comparator
from clientregistry.matching.features import Features
from clientregistry.matching.matcher import Matcher
from clientregistry.matching.rules import BASE_SCORE, DecisionRules, Field, Level, RuleSet
from clientregistry.matching.scoring import comparison_level

__all__ = ["LevelEstimate", "Session", "TrainingResult", "level_label", "train"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
LevelArray = npt.NDArray[np.int16]
"""One comparison level per pair: 0..len(levels)-1 agreeing levels, len(levels) "else", -1 null."""

MIN_PROBABILITY = 1e-6
"""No m or u is ever smaller (before renormalising)."""

_MIN_LAMBDA = 1e-9
_SELECTIVITY = {"identifier": 3, "phone": 3, "date": 2, "text": 1, "code": 0}
"""How finely exact agreement on a field's value splits records (for fallback sessions)."""


@dataclass(frozen=True, slots=True)
class LevelEstimate:
    """The learned m and u of one comparison level (one row of the printed table)."""

    rule_set: int
    field: str
    level: str
    m: float
    u: float

    @property
    def weight(self) -> float:
        """log10(m/u): what a pair in this level adds to the score."""
        return math.log10(self.m / self.u)


@dataclass(frozen=True, slots=True)
class Session:
    """One EM training session: pairs agreeing exactly on ``blocked_on``."""

    rule_set: int
    blocked_on: tuple[str, ...]
    pairs: int
    """Pairs EM ran over (a uniform sample when ``block_pairs`` is larger)."""
    block_pairs: int
    """Every pair agreeing exactly on ``blocked_on`` (within the rule set's filters)."""
    match_share: float
    """λ: the share of this session's pairs that are matches."""
    iterations: int
    converged: bool


@dataclass(frozen=True, slots=True)
class TrainingResult:
    """What :func:`train` learned."""

    rules: DecisionRules
    """The same rules with the learned m and u (probabilistic rule sets only)."""
    estimates: list[LevelEstimate]
    match_probability: float
    """Probability that two records drawn at random are a match (first probabilistic rule set;
    NaN when no session could tell)."""
    candidate_pairs: int
    """Pairs EM ran over, over all sessions."""
    random_pairs: int
    """Random pairs compared to estimate u, over all rule sets."""
    iterations: int
    """EM iterations (the most any session took)."""
    converged: bool
    """Whether every session's EM converged within ``max_iterations``."""
    sessions: list[Session] = dataclasses.field(default_factory=list)

    def table(self) -> str:
        """The estimates as a plain-text table, one level a line."""
        header = ("rule set", "field", "level", "m", "u", "weight")
        rows = [
            (str(e.rule_set + 1), e.field, e.level, f"{e.m:.4g}", f"{e.u:.4g}", f"{e.weight:+.2f}")
            for e in self.estimates
        ]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        lines = []
        for row in [header, *rows]:
            cells = [
                cell.ljust(width) if i < 3 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            ]
            lines.append("  ".join(cells).rstrip())
        return "\n".join(lines)


def train(
    matcher: Matcher,
    records: Sequence[Features],
    *,
    random_pairs: int = 200_000,
    max_iterations: int = 50,
    tolerance: float = 1e-4,
    seed: int = 0,
    max_pairs: int = 1_000_000,
) -> TrainingResult:
    """Estimate m and u of every probabilistic field of ``matcher``'s rules from ``records``.

    ``records`` are feature tuples made by ``matcher.extractor``; ``max_pairs`` caps each EM
    session. Raises :class:`ValueError` when there is nothing to learn from: fewer than two
    records, no probabilistic rule set, or no pair agreeing on any blocked fields (no
    duplicates to learn m from).
    """
    if len(records) < 2:
        raise ValueError(f"training needs at least 2 records to form pairs; got {len(records)}")
    for name, value in (
        ("random_pairs", random_pairs),
        ("max_iterations", max_iterations),
        ("max_pairs", max_pairs),
    ):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, not {value}")
    rules = matcher.rules
    probabilistic = [rs for rs in rules.rule_sets if rs.probabilistic]
    if not probabilistic:
        raise ValueError(
            "the rules have no probabilistic rule set: there are no m and u values to learn"
        )
    trainer = _Trainer(matcher, records, random_pairs, max_iterations, tolerance, max_pairs, seed)
    trained = {rs.index: trainer.rule_set(rs) for rs in probabilistic}
    rule_sets = tuple(trained.get(rs.index, rs) for rs in rules.rule_sets)
    sessions = trainer.sessions
    return TrainingResult(
        rules=dataclasses.replace(rules, rule_sets=rule_sets),
        estimates=trainer.estimates,
        match_probability=trainer.match_probabilities[0],
        candidate_pairs=sum(s.pairs for s in sessions),
        random_pairs=trainer.random_pair_count,
        iterations=max((s.iterations for s in sessions), default=0),
        converged=all(s.converged for s in sessions),
        sessions=sessions,
    )


# ----------------------------------------------------------------------------- the work


@dataclass(slots=True)
class _FieldTally:
    """What the sessions found about one field, to be combined."""

    m_sum: FloatArray
    weight: float = 0.0  # expected matching pairs with the field present, over sessions
    present: float = 0.0  # of which ... (numerator of P(present | match))
    equal: float = 0.0  # ... present and exactly equal
    matches: float = 0.0  # expected matching pairs, over the sessions estimating the field


class _Trainer:
    def __init__(
        self,
        matcher: Matcher,
        records: Sequence[Features],
        random_pairs: int,
        max_iterations: int,
        tolerance: float,
        max_pairs: int,
        seed: int,
    ) -> None:
        self.extractor = matcher.extractor
        self.count = len(records)
        self.columns = _Columns(records)
        self.random_budget = random_pairs
        self.max_iterations = max_iterations
        self.tolerance = tolerance
        self.max_pairs = max_pairs
        self.rng = np.random.default_rng(seed)
        self.random_samples: dict[tuple[int, ...], tuple[IntArray, IntArray, int]] = {}
        self.estimates: list[LevelEstimate] = []
        self.sessions: list[Session] = []
        self.match_probabilities: list[float] = []

    @property
    def random_pair_count(self) -> int:
        return sum(len(a) for a, _, _ in self.random_samples.values())

    def rule_set(self, rs: RuleSet) -> RuleSet:
        fields = rs.fields
        filter_slots = tuple(self.extractor.slot(flt) for flt in rs.filters)
        slots = [self.extractor.slot(f) for f in fields]

        if filter_slots not in self.random_samples:
            groups = _groups(self.columns, filter_slots, (), self.count)
            self.random_samples[filter_slots] = _sample_pairs(groups, self.random_budget, self.rng)
        rand_a, rand_b, all_pairs = self.random_samples[filter_slots]
        u_values = []
        m_start = []
        for f, slot in zip(fields, slots, strict=True):
            codes, values = self.columns.codes(slot)
            observed = _pair_levels(f, codes, values, rand_a, rand_b)
            current_u = _with_else([lv.u for lv in f.levels], f.else_u)
            u_values.append(_estimate_shares(observed, len(f.levels) + 1, current_u))
            m_start.append(_with_else([lv.m for lv in f.levels], f.else_m))

        tallies = [_FieldTally(np.zeros(len(m))) for m in m_start]
        found: list[tuple[tuple[int, ...], float]] = []  # (blocked fields, expected matches)
        for blocked in _session_plans(rs):
            key_slots = tuple(slots[i] for i in blocked)
            groups = _groups(self.columns, filter_slots, key_slots, self.count)
            left, right, block_pairs = _sample_pairs(groups, self.max_pairs, self.rng)
            if len(left) == 0:
                continue
            active = [i for i in range(len(fields)) if i not in blocked]
            levels = {}
            equal = {}
            for i in active:
                codes, values = self.columns.codes(slots[i])
                levels[i] = _pair_levels(fields[i], codes, values, left, right)
                equal[i] = (codes[left] == codes[right]) & (levels[i] >= 0)
            lam = _starting_lambda(rs, blocked, levels, len(left))
            m_active, lam, steps, done, posterior = _expectation_maximisation(
                [levels[i] for i in active],
                [m_start[i] for i in active],
                [u_values[i] for i in active],
                lam,
                self.max_iterations,
                self.tolerance,
            )
            self.sessions.append(
                Session(
                    rs.index,
                    tuple(fields[i].name for i in blocked),
                    len(left),
                    block_pairs,
                    lam,
                    steps,
                    done,
                )
            )
            matches = float(posterior.sum())
            import os
            if os.environ.get("TRAIN_DEBUG"):
                print("DEBUG", [fields[i].name for i in blocked], block_pairs, matches, {fields[i].name: round(float(posterior[equal[i]].sum()) / matches, 3) for i in active})
            found.append((blocked, matches * block_pairs / len(left)))
            for i, m in zip(active, m_active, strict=True):
                tally = tallies[i]
                weight = float(posterior[levels[i] >= 0].sum())
                tally.m_sum += weight * m
                tally.weight += weight
                tally.present += weight
                tally.equal += float(posterior[equal[i]].sum())
                tally.matches += matches
        if not found:
            names = " / ".join(
                "+".join(fields[i].name for i in blocked) for blocked in _session_plans(rs)
            )
            raise ValueError(
                f"rule set {rs.index + 1} ({rs.name}): no two of the {self.count} records agree "
                f"exactly on {names}, so there are no likely duplicates to learn m from; "
                "train on more records"
            )

        new_fields = []
        for f, tally, start, u in zip(fields, tallies, m_start, u_values, strict=True):
            m = tally.m_sum / tally.weight if tally.weight > 0 else start
            new_field = _trained_field(f, m, u)
            new_fields.append(new_field)
            self.estimates.extend(_field_estimates(rs.index, new_field))
        self.match_probabilities.append(_match_probability(found, tallies, all_pairs))
        return dataclasses.replace(rs, fields=tuple(new_fields))


def _session_plans(rs: RuleSet) -> list[tuple[int, ...]]:
    """Which fields (by position) each session blocks on: the rule set's blocking key groups,
    then, for a field every group blocks on, the most selective one or two other fields."""
    count = len(rs.fields)
    plans = [tuple(group) for group in plan_key_groups(rs) if len(group) < count]
    covered = {i for plan in plans for i in range(count) if i not in plan}
    for i in range(count):
        if i in covered or count < 2:
            continue
        others = sorted(
            (j for j in range(count) if j != i),
            key=lambda j: -_SELECTIVITY[rs.fields[j].value_type],
        )
        plan = tuple(sorted(others[:2] if count > 2 else others[:1]))
        if plan not in plans:
            plans.append(plan)
        covered.update(j for j in range(count) if j not in plan)
    return plans


def _match_probability(
    found: list[tuple[tuple[int, ...], float]], tallies: list[_FieldTally], all_pairs: int
) -> float:
    """Median over sessions of (expected matches / share of matches the session can see)."""
    if all_pairs == 0:
        return math.nan
    guesses = []
    for blocked, matches in found:
        shares = [tallies[i].equal / tallies[i].matches for i in blocked if tallies[i].matches > 0]
        if len(shares) != len(blocked) or min(shares) <= 0.0:
            continue
        guesses.append(min(1.0, matches / math.prod(shares) / all_pairs))
    return statistics.median(guesses) if guesses else math.nan


# ----------------------------------------------------------------------------- pairs


class _Columns:
    """Each slot's values, factorised: an integer code per record (-1 when missing)."""

    def __init__(self, records: Sequence[Features]) -> None:
        self._records = records
        self._cache: dict[int, tuple[IntArray, list[Any]]] = {}

    def codes(self, slot: int) -> tuple[IntArray, list[Any]]:
        found = self._cache.get(slot)
        if found is None:
            numbering: dict[Any, int] = {}
            codes = np.fromiter(
                (
                    numbering.setdefault(value, len(numbering)) if value else -1
                    for value in (features[slot] for features in self._records)
                ),
                dtype=np.int64,
                count=len(self._records),
            )
            found = self._cache[slot] = (codes, list(numbering))
        return found


def _groups(
    columns: _Columns, filter_slots: tuple[int, ...], key_slots: tuple[int, ...], count: int
) -> list[IntArray]:
    """Records grouped by equal filter values and equal, present key values.

    Filters compare like the scorer's (two missing values are equal); a record missing a key
    value is in no group.
    """
    if not filter_slots and not key_slots:
        return [np.arange(count, dtype=np.int64)]
    keep = np.ones(count, dtype=bool)
    for slot in key_slots:
        keep &= columns.codes(slot)[0] >= 0
    members = np.flatnonzero(keep).astype(np.int64)
    if len(members) == 0:
        return []
    signature = np.stack([columns.codes(s)[0][members] for s in (*filter_slots, *key_slots)], 1)
    _, group_of = np.unique(signature, axis=0, return_inverse=True)
    group_of = group_of.reshape(-1)
    order = np.argsort(group_of, kind="stable")
    bounds = np.flatnonzero(np.diff(group_of[order])) + 1
    return [members[part] for part in np.split(order, bounds)]


def _sample_pairs(
    groups: list[IntArray], budget: int, rng: np.random.Generator
) -> tuple[IntArray, IntArray, int]:
    """(left, right, number of pairs there are): ``budget`` pairs of distinct records of the
    same group, uniform over all such pairs, or every pair when there are no more."""
    groups = [group for group in groups if len(group) >= 2]
    if not groups:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, 0
    sizes = np.array([len(group) for group in groups], dtype=np.int64)
    pair_counts = sizes * (sizes - 1) // 2
    total = int(pair_counts.sum())
    if total <= budget:
        lefts, rights = [], []
        for group in groups:
            i, j = np.triu_indices(len(group), k=1)
            lefts.append(group[j])
            rights.append(group[i])
        return np.concatenate(lefts), np.concatenate(rights), total
    members = np.concatenate(groups)
    offsets = np.cumsum(sizes) - sizes
    chosen = rng.choice(len(groups), size=budget, p=pair_counts / total)
    first = rng.integers(0, sizes[chosen])
    second = rng.integers(0, sizes[chosen] - 1)
    second += second >= first  # distinct from first, uniform over the others
    base = offsets[chosen]
    return members[base + first], members[base + second], total


def _pair_levels(
    f: Field, codes: IntArray, values: list[Any], left: IntArray, right: IntArray
) -> LevelArray:
    """The comparison level of every pair for one field (-1 when null), as
    :func:`~clientregistry.matching.scoring.comparison_level` gives it; each distinct pair of
    values is compared once."""
    out = np.full(len(left), -1, dtype=np.int16)
    code_a = codes[left]
    code_b = codes[right]
    present = (code_a >= 0) & (code_b >= 0)
    if not present.any():
        return out
    width = len(values)
    unique, inverse = np.unique(code_a[present] * width + code_b[present], return_inverse=True)
    out[present] = _value_levels(f, values, unique // width, unique % width)[inverse.reshape(-1)]
    return out


def _value_levels(f: Field, values: list[Any], first: IntArray, second: IntArray) -> LevelArray:
    """Comparison levels of value pairs (by code), level by level over arrays."""
    if f.comparator is None:  # shared-identifier: set logic, one pair at a time
        return np.fromiter(
            (
                -1 if (found := comparison_level(f, values[a], values[b])) is None else found
                for a, b in zip(first.tolist(), second.tolist(), strict=True)
            ),
            dtype=np.int16,
            count=len(first),
        )
    out = np.full(len(first), len(f.levels), dtype=np.int16)
    undecided = np.ones(len(first), dtype=bool)
    equal = first == second
    measured: dict[str, FloatArray] = {}
    for index, level in enumerate(f.levels):
        comparator = level.comparator
        assert comparator is not None
        if comparator.name == "exact":
            agrees = equal
        else:
            value = measured.get(comparator.name)
            if value is None:  # later levels only look at pairs undecided now
                value = np.full(len(first), np.nan)
                todo = np.flatnonzero(undecided)
                value[todo] = _measure(comparator, values, first[todo], second[todo])
                measured[comparator.name] = value
            with np.errstate(invalid="ignore"):
                if comparator.kind == "distance":
                    agrees = value <= level.threshold
                else:
                    agrees = value >= level.threshold
        out[undecided & agrees] = index
        undecided &= ~agrees
    return out


def _measure(comparator: Comparator, values: list[Any], first: IntArray, second: IntArray) -> Any:
    """``comparator.measure`` of each value pair (rapidfuzz's own measures in one call)."""
    left = [values[i] for i in first.tolist()]
    right = [values[i] for i in second.tolist()]
    measure: Any = comparator.measure
    if getattr(measure, "__module__", "").startswith("rapidfuzz") and left:
        return process.cpdist(left, right, scorer=measure, dtype=np.float64, workers=-1)
    return np.fromiter(map(measure, left, right), dtype=np.float64, count=len(left))


# ----------------------------------------------------------------------------- estimation


def _with_else(levels: list[float], else_value: float) -> FloatArray:
    shares = np.array([*levels, else_value], dtype=np.float64)
    out: FloatArray = shares / shares.sum()
    return out


def _smooth(counts: FloatArray) -> FloatArray:
    """Shares of ``counts``, none below half a count (and 1e-6), summing to 1."""
    n = float(counts.sum())
    floor = min(max(1.0 / (2.0 * max(n, 1.0)), MIN_PROBABILITY), 1.0 / (2.0 * len(counts)))
    shares = np.maximum(counts / n, floor)
    out: FloatArray = shares / shares.sum()
    return out


def _estimate_shares(observed: LevelArray, width: int, fallback: FloatArray) -> FloatArray:
    """Smoothed share of non-null pairs in each level; ``fallback`` when all are null."""
    counts = np.bincount(observed[observed >= 0], minlength=width).astype(np.float64)
    if counts.sum() == 0:
        return fallback
    return _smooth(counts)


def _starting_lambda(
    rs: RuleSet, blocked: tuple[int, ...], levels: dict[int, LevelArray], count: int
) -> float:
    """Share of the pairs the current rules call at least potential matches (the blocked
    fields agree exactly, so they add their first level's weight)."""
    score = np.full(count, BASE_SCORE + sum(rs.fields[i].levels[0].weight for i in blocked))
    for i, observed in levels.items():
        f = rs.fields[i]
        weights = np.array([*(lv.weight for lv in f.levels), f.else_weight, 0.0])
        score += weights[observed]  # -1 (null) picks the trailing 0
    share = float(np.mean(score >= rs.potential_threshold))
    return min(max(share, 0.01), 0.99)


def _expectation_maximisation(
    levels: list[LevelArray],
    m_start: list[FloatArray],
    u: list[FloatArray],
    lam: float,
    max_iterations: int,
    tolerance: float,
) -> tuple[list[FloatArray], float, int, bool, FloatArray]:
    """(m per field, λ, iterations, converged, match probability per pair) with u fixed."""
    log_u = [np.log(shares) for shares in u]
    shifted = [observed.astype(np.int64) + 1 for observed in levels]  # 0 = null
    count = len(levels[0]) if levels else 0
    m = [shares.copy() for shares in m_start]
    iteration = 0
    converged = False
    probability = np.full(count, lam)
    while iteration < max_iterations and not converged:
        iteration += 1
        odds = np.full(count, math.log(lam / (1.0 - lam)))
        for observed, m_f, log_u_f in zip(levels, m, log_u, strict=True):
            ratios = np.append(np.log(m_f) - log_u_f, 0.0)
            odds += ratios[observed]  # -1 (null) picks the trailing 0
        probability = 1.0 / (1.0 + np.exp(-np.clip(odds, -500.0, 500.0)))
        new_m = []
        for index, m_f in zip(shifted, m, strict=True):
            weighted = np.bincount(index, weights=probability, minlength=len(m_f) + 1)
            counts = weighted[1:].astype(np.float64, copy=False)
            new_m.append(_smooth(counts) if counts.sum() > 0 else m_f)
        new_lam = min(max(float(probability.mean()), _MIN_LAMBDA), 1.0 - _MIN_LAMBDA)
        change = max(
            [abs(new_lam - lam)]
            + [float(np.max(np.abs(a - b))) for a, b in zip(new_m, m, strict=True)]
        )
        m, lam = new_m, new_lam
        converged = change < tolerance
    return m, lam, iteration, converged, probability


# ----------------------------------------------------------------------------- output


def _trained_field(f: Field, m: FloatArray, u: FloatArray) -> Field:
    levels = tuple(
        dataclasses.replace(level, m=float(m[k]), u=float(u[k])) for k, level in enumerate(f.levels)
    )
    if len(levels) == 1:
        # OpenCR's form: the file holds mValue/uValue only and "disagree" is (1-m, 1-u)
        else_m, else_u = 1.0 - levels[0].m, 1.0 - levels[0].u
    else:
        else_m, else_u = float(m[-1]), float(u[-1])
    return dataclasses.replace(f, levels=levels, else_m=else_m, else_u=else_u)


def level_label(level: Level) -> str:
    """How a level reads in the table: ``exact``, ``jaro-winkler-similarity >= 0.92``..."""
    comparator = level.comparator
    if comparator is None or comparator.name == "exact" or comparator.kind == "phonetic":
        return level.algorithm
    operator = "<=" if comparator.kind == "distance" else ">="
    return f"{level.algorithm} {operator} {level.threshold:g}"


def _field_estimates(rule_set: int, f: Field) -> list[LevelEstimate]:
    rows = [
        LevelEstimate(rule_set, f.name, level_label(level), level.m, level.u) for level in f.levels
    ]
    rows.append(LevelEstimate(rule_set, f.name, "else", f.else_m, f.else_u))
    return rows
