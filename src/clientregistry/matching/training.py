"""Unsupervised estimation of m and u from the records themselves, the way Splink does it.

A probabilistic field's comparison levels each carry two probabilities: *m*, the chance that a
true match falls in that level, and *u*, the chance that two different people do. Typing them
in is guesswork; :func:`train` estimates them from unlabelled records:

1. **u from random pairs** (Splink's ``estimate_u_using_random_sampling``). Almost every pair of
   records drawn at random is two different people, so the share of random pairs falling in a
   level estimates its u. ``random_pairs`` distinct pairs are drawn (every pair when there are
   fewer); a rule set with filters draws its pairs among records whose filter values agree,
   since only those are ever scored under it.
2. **m by expectation-maximisation in training sessions** (Splink's
   ``estimate_parameters_using_expectation_maximisation``, one session per blocking rule). A
   session takes the pairs that agree *exactly* on a few fields -- one session per blocking key
   group of the rule set (its ``blocking``, or the groups derived from its weights), plus, for
   a field every group blocks on, a session blocked on other fields -- at most ``max_pairs``
   of them, drawn uniformly. The fields blocked on sit that session out: agreeing on them is
   how the pairs were chosen, so it says nothing about m, while the other fields of the
   non-matching pairs still behave as in random pairs, so the fixed u applies. EM alternates
   an E step (each pair's match probability under the current m and the session's match share
   λ) and an M step (each level's m becomes the probability-weighted share of pairs in it, λ
   the mean probability), starting from the rules' own m, until no m and not λ moves by more
   than ``tolerance``.
3. **Combining sessions.** Each session implies how many matching pairs there are in all: its
   expected matches over the share of matches that agree exactly on its blocked fields (the
   product, over those fields, of the median over the other sessions of "present and equal on
   both sides" among matches). A session implying more than :data:`CONSISTENCY` times the
   median, or less than the median over it, fitted something other than duplicates -- on
   synthetic data with households, pairs sharing a surname and a postcode are mostly
   relatives, and EM there called them matches -- and is dropped. A field's m is, level by
   level, the median over the remaining sessions, renormalised; a field's ``swappedWith``
   level cannot occur in a session blocked on its partner field, so those sessions do not
   estimate it. The match probability (Splink's ``probability_two_random_records_match``) is
   the median implied number of matching pairs over the number of pairs.

4. **Checks, so that training never makes things worse.** A session whose EM did not converge
   is not used (when others did). A trained field is not trusted, and keeps its m and u, when
   agreeing exactly would count against a match, disagreeing for one, or either weight would
   move more than :data:`MAX_SHIFT` from the rules' own (:attr:`TrainingResult.estimates`
   still show what was learned). Last, the trained rules' automatic links over the records'
   candidate pairs are compared with the given rules' (:func:`compare_links`): when more than
   :data:`MAX_NEW_LINKS` of them are new (or lost), EM most likely fitted relatives or
   look-alikes rather than duplicates, and the given rules are kept, with a warning
   (:attr:`TrainingResult.warnings`).

Why not simply run EM over the pairs the matcher's blocking proposes? Those pairs were chosen
for agreeing on names, dates, postcodes..., so their non-matches agree far more often than u
says and EM takes that agreement for matches: on 100,000 synthetic records it settled on "89%
of candidate pairs match", with m of an exact surname 0.05.

A *missing* value (an empty string or set, or identifier sets with no system in common) is a
null comparison: the pair tells nothing about that field and is left out of that field's
counts, as Splink's null level is.

No estimate is ever 0 (a weight must stay finite): a level's share is floored at half a count,
``1/(2n)`` for ``n`` non-null pairs (at least 1e-6), and the field's shares renormalised to 1.
A field no session can estimate keeps its m, and a field no random pair compares keeps its u.
The trained rules keep everything else (algorithms, thresholds, term-frequency flags, null
handling, blocking, filters and the match thresholds); deterministic rule sets are returned
unchanged. A single-level (OpenCR) field's "disagree" stays exactly ``(1-m, 1-u)``, so the
rules written by :meth:`DecisionRules.to_json` read back the same.
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

from clientregistry.matching.blocking import MemoryIndex, plan_key_groups
from clientregistry.matching.comparators import BOOLEAN_KINDS, Comparator
from clientregistry.matching.comparison import comparison_level, crossed
from clientregistry.matching.features import Features
from clientregistry.matching.matcher import Matcher
from clientregistry.matching.rules import BASE_SCORE, DecisionRules, Field, Level, RuleSet

__all__ = [
    "LevelEstimate",
    "LinkComparison",
    "Session",
    "ThresholdEstimate",
    "TrainingResult",
    "compare_links",
    "level_label",
    "posterior",
    "threshold_estimates",
    "train",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
LevelArray = npt.NDArray[np.int16]
"""One comparison level per pair: 0..len(levels)-1 agreeing levels, len(levels) "else", -1 null."""

MIN_PROBABILITY = 1e-6
"""No m or u is ever smaller (before renormalising)."""

CONSISTENCY = 1.5
"""A session is dropped when the number of matching pairs it implies is this many times the
sessions' median (or less than the median over this)."""

MIN_EVIDENCE = 10.0
"""Sessions with fewer expected matching pairs that have a field present do not estimate it
(unless no session has more)."""

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
    used: bool = True
    """False when the session was dropped as inconsistent with the others."""


MAX_NEW_LINKS = 0.05
"""The trained rules are kept only if, over the records' candidate pairs, at most this share of
their automatic links are pairs the rules given do not link (and at most this share of the
given rules' links are lost). Measured (bench/RESULTS.md): where training helped (FEBRL,
the synthetic set) the trained rules added 0.4-1.7%; where EM fitted relatives (census and
register: F1 0.92 -> 0.77) 9.8%, on the typo-heavy sets 20-24%."""

LINK_SAMPLE = 20_000
"""Records whose candidate pairs :func:`compare_links` scores (the first ones of a random
order)."""


@dataclass(frozen=True, slots=True)
class LinkComparison:
    """Automatic links of two rule sets over the same candidate pairs."""

    records: int
    pairs: int
    given: int
    """Pairs the rules given link automatically."""
    trained: int
    """Pairs the trained rules link automatically."""
    both: int

    @property
    def new_share(self) -> float:
        """Share of all links that only the trained rules make."""
        union = self.given + self.trained - self.both
        return (self.trained - self.both) / union if union else 0.0

    @property
    def lost_share(self) -> float:
        """Share of all links that only the rules given make."""
        union = self.given + self.trained - self.both
        return (self.given - self.both) / union if union else 0.0


def compare_links(
    given: Matcher, trained: Matcher, records: Sequence[Features], *, seed: int = 0
) -> LinkComparison:
    """Score the candidate pairs (the given rules' blocking) of up to :data:`LINK_SAMPLE`
    records under both matchers and count their automatic links."""
    order = np.random.default_rng(seed).permutation(len(records))[:LINK_SAMPLE]
    sample = [records[int(i)] for i in sorted(order.tolist())]
    index = MemoryIndex()
    keys, limit = given.blocker.keys, given.candidate_limit
    one, two = given.scorer.likely, trained.scorer.likely
    pairs = count_given = count_trained = count_both = 0
    for i, features in enumerate(sample):
        found = index.find_then_add(i, tuple(keys(features)), limit)
        for j in found.ids:
            pairs += 1
            a = one(features, sample[j])
            b = two(features, sample[j])
            x = a is not None and a.decision == "auto"
            y = b is not None and b.decision == "auto"
            count_given += x
            count_trained += y
            count_both += x and y
    return LinkComparison(len(sample), pairs, count_given, count_trained, count_both)


@dataclass(frozen=True, slots=True)
class ThresholdEstimate:
    """What the trained model says about one threshold of a rule set."""

    rule_set: int
    name: str
    """``potential`` or ``auto``."""
    score: float
    probability: float
    """Match probability of a pair scoring exactly the threshold (Bayes, with the estimated
    probability that two random records match as the prior)."""
    precision: float
    """Expected share of true matches among the candidate pairs at or above the threshold."""
    recall: float
    """Expected share of all matching pairs (the estimated number) at or above it."""


def posterior(score: float, prior: float) -> float:
    """Match probability of a pair with this OpenCR score (100 + log10 Bayes factor)."""
    if not 0.0 < prior < 1.0:
        return math.nan
    log_odds = (score - BASE_SCORE) + math.log10(prior / (1.0 - prior))
    return float(1.0 / (1.0 + 10.0 ** -min(max(log_odds, -300.0), 300.0)))


def threshold_estimates(
    matcher: Matcher, records: Sequence[Features], prior: float, *, seed: int = 0
) -> list[ThresholdEstimate]:
    """For each threshold of the first probabilistic rule set: the match probability behind
    it and the model's own estimate of precision and recall, over the candidate pairs of up
    to :data:`LINK_SAMPLE` records (every pair's match probability from its full score)."""
    rs = next((r for r in matcher.rules.rule_sets if r.probabilistic), None)
    if rs is None or not 0.0 < prior < 1.0:
        return []
    order = np.random.default_rng(seed).permutation(len(records))[:LINK_SAMPLE]
    sample = [records[int(i)] for i in sorted(order.tolist())]
    index = MemoryIndex()
    keys, limit = matcher.blocker.keys, matcher.candidate_limit
    exact = matcher.scorer.exact_score
    scores: list[float] = []
    for i, features in enumerate(sample):
        for j in index.find_then_add(i, tuple(keys(features)), limit).ids:
            result = exact(features, sample[j])
            if result is not None and result.rule_set == rs.index:
                scores.append(result.score)
    values = np.array(scores, dtype=np.float64)
    log_odds = np.clip(values - BASE_SCORE + math.log10(prior / (1.0 - prior)), -300, 300)
    probabilities = 1.0 / (1.0 + 10.0**-log_odds)
    count = len(sample)
    expected = prior * count * (count - 1) / 2
    out = []
    for name, threshold in (("potential", rs.potential_threshold), ("auto", rs.auto_threshold)):
        above = probabilities[values >= threshold]
        found = float(above.sum())
        out.append(
            ThresholdEstimate(
                rs.index,
                name,
                threshold,
                posterior(threshold, prior),
                found / len(above) if len(above) else math.nan,
                min(found / expected, 1.0) if expected > 0 else math.nan,
            )
        )
    return out


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
    """The EM sessions, in the order they ran."""
    warnings: list[str] = dataclasses.field(default_factory=list)
    """What was not trusted and kept as it was (fields, or the whole model)."""
    links: LinkComparison | None = None
    """The trained rules' automatic links against those of the rules given."""
    kept_given: bool = False
    """Whether the model was not trusted and :attr:`rules` are the rules given, unchanged
    (:attr:`estimates` still show what was learned)."""
    thresholds: list[ThresholdEstimate] = dataclasses.field(default_factory=list)
    """The learned model's view of the thresholds (empty without an estimated probability)."""

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
    checks: bool = True,
) -> TrainingResult:
    """Estimate m and u of every probabilistic field of ``matcher``'s rules from ``records``.

    ``records`` are feature tuples made by ``matcher.extractor`` (one per record, duplicates
    included: they are what m is learned from). u comes from ``random_pairs`` random pairs; m
    from EM sessions of at most ``max_pairs`` pairs each, run for at most ``max_iterations``
    until nothing moves by ``tolerance``; ``seed`` fixes the sampling, so a run repeats.
    ``checks=False`` returns the raw estimate, without the field and link checks (step 4 of
    the module's description): for studying the estimator, not for matching.

    Raises :class:`ValueError` when there is nothing to learn from: fewer than two records, no
    probabilistic rule set, or no two records agreeing exactly on any session's fields.
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
    trainer = _Trainer(
        matcher, records, random_pairs, max_iterations, tolerance, max_pairs, seed, checks
    )
    trained = {rs.index: trainer.rule_set(rs) for rs in probabilistic}
    rule_sets = tuple(trained.get(rs.index, rs) for rs in rules.rule_sets)
    sessions = trainer.sessions
    learned = dataclasses.replace(rules, rule_sets=rule_sets)
    links = compare_links(matcher, Matcher(learned), records, seed=seed) if checks else None
    warnings = list(trainer.warnings)
    kept = links is not None and (
        links.new_share > MAX_NEW_LINKS or links.lost_share > MAX_NEW_LINKS
    )
    if links is not None and kept:
        warnings.append(
            f"the trained rules would make {links.new_share:.1%} of their automatic links "
            f"where the rules given make none, and drop {links.lost_share:.1%} of theirs "
            f"(over {links.pairs:,} candidate pairs of {links.records:,} records; at most "
            f"{MAX_NEW_LINKS:.0%} is trusted): without labelled data that cannot be told from "
            "EM fitting relatives or look-alikes, so the rules given are kept"
        )
    prior = trainer.match_probabilities[0] if trainer.match_probabilities else math.nan
    thresholds = threshold_estimates(Matcher(learned), records, prior, seed=seed) if checks else []
    return TrainingResult(
        rules=rules if kept else learned,
        thresholds=thresholds,
        estimates=trainer.estimates,
        match_probability=trainer.match_probabilities[0],
        candidate_pairs=sum(s.pairs for s in sessions),
        random_pairs=trainer.random_pair_count,
        iterations=max((s.iterations for s in sessions), default=0),
        converged=all(s.converged for s in sessions),
        sessions=sessions,
        warnings=warnings,
        links=links,
        kept_given=kept,
    )


# ----------------------------------------------------------------------------- the work


@dataclass(frozen=True, slots=True, eq=False)
class _Fit:
    """What one session found (compared by identity)."""

    session: Session
    blocked: tuple[int, ...]
    matches: float  # expected matching pairs among all the block's pairs
    m: dict[int, FloatArray]  # by field position, for the fields not blocked on
    weight: dict[int, float]  # expected matching pairs with the field present
    equal: dict[int, float]  # P(field present and equal on both sides | match)


class _Trainer:
    """Trains one rule set at a time, sharing factorised columns and random samples."""

    def __init__(
        self,
        matcher: Matcher,
        records: Sequence[Features],
        random_pairs: int,
        max_iterations: int,
        tolerance: float,
        max_pairs: int,
        seed: int,
        checks: bool = True,
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
        self.warnings: list[str] = []
        self.checks = checks

    @property
    def random_pair_count(self) -> int:
        return sum(len(a) for a, _, _ in self.random_samples.values())

    def levels(self, rs: RuleSet, i: int, left: IntArray, right: IntArray) -> LevelArray:
        """Comparison levels of field ``i`` of ``rs`` for the pairs (left[k], right[k])."""
        f = rs.fields[i]
        by_name = {other.name: other for other in rs.fields}
        cross = {
            lv.swapped_with: self.columns.codes(self.extractor.slot(by_name[lv.swapped_with]))
            for lv in f.levels
            if lv.swapped_with is not None
        }
        return _pair_levels(f, self.columns.codes(self.extractor.slot(f)), cross, left, right)

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
        for i, f in enumerate(fields):
            observed = self.levels(rs, i, rand_a, rand_b)
            current_u = _with_else([lv.u for lv in f.levels], f.else_u)
            u_values.append(_estimate_shares(observed, len(f.levels) + 1, current_u))
            m_start.append(_with_else([lv.m for lv in f.levels], f.else_m))

        fits: list[_Fit] = []
        plans = _session_plans(rs)
        for blocked in plans:
            key_slots = tuple(slots[i] for i in blocked)
            groups = _groups(self.columns, filter_slots, key_slots, self.count)
            left, right, block_pairs = _sample_pairs(groups, self.max_pairs, self.rng)
            if len(left) == 0:
                continue
            active = [i for i in range(len(fields)) if i not in blocked]
            levels = {i: self.levels(rs, i, left, right) for i in active}
            lam = _starting_lambda(rs, blocked, levels, len(left))
            m_active, lam, steps, done, posterior = _expectation_maximisation(
                [levels[i] for i in active],
                [m_start[i] for i in active],
                [u_values[i] for i in active],
                lam,
                self.max_iterations,
                self.tolerance,
            )
            names = tuple(fields[i].name for i in blocked)
            session = Session(rs.index, names, len(left), block_pairs, lam, steps, done)
            matches = float(posterior.sum())
            weight = {}
            equal = {}
            for i in active:
                codes = self.columns.codes(slots[i])[0]
                present = levels[i] >= 0
                weight[i] = float(posterior[present].sum())
                same = present & (codes[left] == codes[right])
                equal[i] = float(posterior[same].sum()) / matches if matches > 0 else 0.0
            fits.append(
                _Fit(
                    session,
                    blocked,
                    matches * block_pairs / len(left),
                    dict(zip(active, m_active, strict=True)),
                    weight,
                    equal,
                )
            )
        if plans and not fits:
            tried = " / ".join("+".join(fields[i].name for i in blocked) for blocked in plans)
            raise ValueError(
                f"rule set {rs.index + 1} ({rs.name}): no two of the {self.count} records agree "
                f"exactly on {tried}, so there are no likely duplicates to learn m from; "
                "train on more records"
            )

        m_values, probability, kept = _combine(rs, fits, m_start, all_pairs)
        self.sessions.extend(dataclasses.replace(fit.session, used=fit in kept) for fit in fits)
        new_fields = []
        for f, m, u in zip(fields, m_values, u_values, strict=True):
            new_field = _trained_field(f, m, u)
            self.estimates.extend(_field_estimates(rs.index, new_field))
            problem = _implausible(f, new_field) if self.checks else None
            if problem is not None:
                self.warnings.append(
                    f"rule set {rs.index + 1} ({rs.name}), field {f.name}: {problem}; "
                    "its m and u are kept as they were"
                )
                new_field = f
            new_fields.append(new_field)
        self.match_probabilities.append(probability)
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


def _equal_shares(fits: list[_Fit], count: int) -> list[float | None]:
    """Per field: the median over sessions of P(present and equal on both sides | match)."""
    out: list[float | None] = []
    for i in range(count):
        shares = [fit.equal[i] for fit in fits if i in fit.equal]
        out.append(statistics.median(shares) if shares else None)
    return out


def _implied_totals(fits: list[_Fit], count: int) -> list[float | None]:
    """Each session's estimate of how many matching pairs there are in all: its expected
    matches over the share of matches agreeing exactly on its blocked fields."""
    equal = _equal_shares(fits, count)
    out: list[float | None] = []
    for fit in fits:
        shares = [equal[i] for i in fit.blocked]
        known = [share for share in shares if share is not None and share > 0.0]
        out.append(fit.matches / math.prod(known) if len(known) == len(shares) else None)
    return out


def _combine(
    rs: RuleSet, fits: list[_Fit], m_start: list[FloatArray], all_pairs: int
) -> tuple[list[FloatArray], float, list[_Fit]]:
    """(m per field, probability that a random pair matches, sessions kept) from the fits.

    Sessions whose implied number of matching pairs is off the median by more than
    :data:`CONSISTENCY` are dropped (EM there fitted something else, such as households
    sharing a surname and an address); m is then, level by level, the median over the
    remaining sessions, renormalised, counting only sessions with at least
    :data:`MIN_EVIDENCE` expected matches with the field present when there are any. A
    field's ``swappedWith`` levels cannot occur in a session blocked on the partner field, so
    such sessions do not estimate that field.
    """
    count = len(m_start)
    settled = [fit for fit in fits if fit.session.converged]
    if settled:  # a session whose EM did not settle fitted nothing stable
        fits = settled
    totals = _implied_totals(fits, count)
    known = [total for total in totals if total is not None]
    if known:
        middle = statistics.median(known)
        fits = [
            fit
            for fit, total in zip(fits, totals, strict=True)
            if total is None or middle / CONSISTENCY <= total <= middle * CONSISTENCY
        ]
        known = [total for total in _implied_totals(fits, count) if total is not None]
    probability = statistics.median(known) / all_pairs if known and all_pairs else math.nan
    position = {f.name: i for i, f in enumerate(rs.fields)}
    m_values = []
    for i, f in enumerate(rs.fields):
        partners = {position[lv.swapped_with] for lv in f.levels if lv.swapped_with is not None}
        found = [
            (fit.m[i], fit.weight[i])
            for fit in fits
            if i in fit.m and fit.weight[i] > 0 and not partners & set(fit.blocked)
        ]
        enough = [m for m, weight in found if weight >= MIN_EVIDENCE]
        if found:
            stacked = np.stack(enough or [m for m, _ in found])
            middle_m: FloatArray = np.median(stacked, axis=0)
            m_values.append(middle_m / middle_m.sum())
        else:
            m_values.append(m_start[i])
    return m_values, min(probability, 1.0), fits


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


Groups = tuple[IntArray, IntArray]
"""Records grouped: their positions, group by group, and each group's size."""


def _groups(
    columns: _Columns, filter_slots: tuple[int, ...], key_slots: tuple[int, ...], count: int
) -> Groups:
    """Records grouped by equal filter values and equal, present key values.

    Filters compare like the scorer's (two missing values are equal); a record missing a key
    value is in no group.
    """
    if not filter_slots and not key_slots:
        return np.arange(count, dtype=np.int64), np.array([count], dtype=np.int64)
    keep = np.ones(count, dtype=bool)
    for slot in key_slots:
        keep &= columns.codes(slot)[0] >= 0
    members = np.flatnonzero(keep).astype(np.int64)
    group_of = np.zeros(len(members), dtype=np.int64)
    for slot in (*filter_slots, *key_slots):
        codes = columns.codes(slot)[0][members] + 1  # 0 = missing (filters only)
        combined = group_of * (int(codes.max(initial=0)) + 1) + codes
        group_of = np.unique(combined, return_inverse=True)[1].reshape(-1).astype(np.int64)
    order = np.argsort(group_of, kind="stable")
    return members[order], np.bincount(group_of).astype(np.int64)


def _sample_pairs(
    groups: Groups, budget: int, rng: np.random.Generator
) -> tuple[IntArray, IntArray, int]:
    """(left, right, number of pairs there are): ``budget`` pairs of distinct records of the
    same group, uniform over all such pairs, or every pair when there are no more."""
    members, all_sizes = groups
    offsets = np.cumsum(all_sizes) - all_sizes
    usable = all_sizes >= 2
    sizes = all_sizes[usable]
    offsets = offsets[usable]
    pair_counts = sizes * (sizes - 1) // 2
    total = int(pair_counts.sum())
    if total == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, 0
    if total <= budget:  # every pair, groups of one size at a time
        lefts, rights = [], []
        for size in np.unique(sizes).tolist():
            rows = members[offsets[sizes == size][:, None] + np.arange(size)]
            i, j = np.triu_indices(size, k=1)
            lefts.append(rows[:, j].reshape(-1))
            rights.append(rows[:, i].reshape(-1))
        return np.concatenate(lefts), np.concatenate(rights), total
    chosen = rng.choice(len(sizes), size=budget, p=pair_counts / total)
    first = rng.integers(0, sizes[chosen])
    second = rng.integers(0, sizes[chosen] - 1)
    second += second >= first  # distinct from first, uniform over the others
    base = offsets[chosen]
    return members[base + first], members[base + second], total


Column = tuple[IntArray, list[Any]]
"""A slot's values factorised: a code per record (-1 when missing) and the distinct values."""


def _pair_levels(
    f: Field, column: Column, cross: dict[str, Column], left: IntArray, right: IntArray
) -> LevelArray:
    """The comparison level of every pair for one field (-1 when null), as
    :func:`~clientregistry.matching.scoring.comparison_level` gives it; ``cross`` holds the
    columns ``swappedWith`` levels name. Each distinct pair of values is compared once."""
    codes, values = column
    out = np.full(len(left), -1, dtype=np.int16)
    code_a = codes[left]
    code_b = codes[right]
    present = np.flatnonzero((code_a >= 0) & (code_b >= 0))
    if len(present) == 0:
        return out
    width = len(values)
    unique, inverse = np.unique(code_a[present] * width + code_b[present], return_inverse=True)
    found = _value_levels(f, values, unique // width, unique % width)[inverse.reshape(-1)]
    for index, level in enumerate(f.levels):
        if level.swapped_with is None:
            continue
        # pairs no earlier level took: does each value match the other record's other field?
        later = np.flatnonzero(found > index)
        todo = present[later]
        other_codes, other_values = cross[level.swapped_with]
        other_a = other_codes[left[todo]]
        other_b = other_codes[right[todo]]
        if level.one_way:  # either value among the words of the other's other field
            hits = np.fromiter(
                (
                    crossed(
                        level,
                        values[va],
                        values[vb],
                        (other_values[oa] if oa >= 0 else "", other_values[ob] if ob >= 0 else ""),
                    )
                    for va, vb, oa, ob in zip(
                        code_a[todo].tolist(),
                        code_b[todo].tolist(),
                        other_a.tolist(),
                        other_b.tolist(),
                        strict=True,
                    )
                ),
                dtype=bool,
                count=len(todo),
            )
            found[later[hits]] = index
            continue
        usable = np.flatnonzero((other_a >= 0) & (other_b >= 0))
        agrees = _agree(
            level, values, code_a[todo[usable]], other_values, other_b[usable]
        ) & _agree(level, other_values, other_a[usable], values, code_b[todo[usable]])
        found[later[usable[agrees]]] = index
    out[present] = found
    return out


def _agree(
    level: Level, values_a: list[Any], first: IntArray, values_b: list[Any], second: IntArray
) -> BoolArray:
    """Whether values_a[first[k]] agrees with values_b[second[k]] at ``level``."""
    comparator = level.comparator
    assert comparator is not None
    if len(first) == 0:
        return np.zeros(0, dtype=bool)
    width = len(values_b)
    unique, inverse = np.unique(first * width + second, return_inverse=True)
    value = _measure(comparator, values_a, unique // width, values_b, unique % width)
    agrees = value <= level.threshold if comparator.kind == "distance" else value >= level.threshold
    out: BoolArray = agrees[inverse.reshape(-1)]
    return out


def _value_levels(f: Field, values: list[Any], first: IntArray, second: IntArray) -> LevelArray:
    """Comparison levels of value pairs (by code), level by level over arrays; ``swappedWith``
    levels are left to the caller (they need the other field)."""
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
        if level.swapped_with is not None:
            continue
        if comparator.name == "exact":
            agrees = equal
        else:
            value = measured.get(comparator.name)
            if value is None:  # later levels only look at pairs undecided now
                value = np.full(len(first), np.nan)
                todo = np.flatnonzero(undecided)
                value[todo] = _measure(comparator, values, first[todo], values, second[todo])
                measured[comparator.name] = value
            with np.errstate(invalid="ignore"):
                if comparator.kind == "distance":
                    agrees = value <= level.threshold
                else:
                    agrees = value >= level.threshold
        out[undecided & agrees] = index
        undecided &= ~agrees
    return out


def _measure(
    comparator: Comparator,
    values_a: list[Any],
    first: IntArray,
    values_b: list[Any],
    second: IntArray,
) -> FloatArray:
    """``comparator.measure`` of each pair (rapidfuzz's own measures in one call)."""
    left = [values_a[i] for i in first.tolist()]
    right = [values_b[i] for i in second.tolist()]
    measure: Any = comparator.measure
    if getattr(measure, "__module__", "").startswith("rapidfuzz") and left:
        out: FloatArray = process.cpdist(left, right, scorer=measure, dtype=np.float64, workers=-1)
        return out
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


def _trained_level(level: Level, m: float, u: float) -> Level:
    """``level`` with the trained m and u; a term-frequency floor keeps its ratio to u (a
    floor equal to u, term frequencies that only lower the weight, stays equal to it)."""
    floor = level.tf_minimum_u
    if floor is not None:
        floor = min(max(floor * u / level.u, 1e-12), 1.0 - 1e-12)
    return dataclasses.replace(level, m=m, u=u, tf_minimum_u=floor)


def _trained_field(f: Field, m: FloatArray, u: FloatArray) -> Field:
    levels = tuple(
        _trained_level(level, float(m[k]), float(u[k])) for k, level in enumerate(f.levels)
    )
    if len(levels) == 1:
        # OpenCR's form: the file holds mValue/uValue only and "disagree" is (1-m, 1-u)
        else_m, else_u = 1.0 - levels[0].m, 1.0 - levels[0].u
    else:
        else_m, else_u = float(m[-1]), float(u[-1])
    return dataclasses.replace(f, levels=levels, else_m=else_m, else_u=else_u)


MAX_SHIFT = 2.5
"""A trained level's weight stays within this much (log10: a factor of ~300) of the rules' own
weight; beyond it, the field keeps its own m and u."""


def _implausible(before: Field, after: Field) -> str | None:
    """Why a trained field is not to be trusted, or ``None``.

    Agreeing exactly must still count for a match and disagreeing against it (when the rules
    had them so), and neither weight may move more than :data:`MAX_SHIFT` from the rules'
    own. EM that fitted something other than duplicates (households sharing a family name
    and an address; a field nearly every record agrees on) breaks one of these. Looser levels
    are not checked: a level no pair reaches has its m floored, which is no fault.
    """
    first, was_first = after.levels[0].weight, before.levels[0].weight
    if first <= 0 < was_first:
        return f"agreeing exactly would count against a match ({first:+.2f})"
    if after.else_weight >= 0 > before.else_weight:
        return f"disagreeing would count for a match ({after.else_weight:+.2f})"
    for name, new, was in (
        (level_label(after.levels[0]), first, was_first),
        ("else", after.else_weight, before.else_weight),
    ):
        if abs(new - was) > MAX_SHIFT:
            return f"the weight of {name} would move from {was:+.2f} to {new:+.2f}"
    return None


def level_label(level: Level) -> str:
    """How a level reads in the table: ``exact``, ``jaro-winkler-similarity >= 0.92``,
    ``jaro-winkler-similarity >= 0.88 swapped with family``..."""
    comparator = level.comparator
    if comparator is None or comparator.name == "exact" or comparator.kind in BOOLEAN_KINDS:
        label = level.algorithm
    else:
        operator = "<=" if comparator.kind == "distance" else ">="
        label = f"{level.algorithm} {operator} {level.threshold:g}"
    if level.swapped_with is not None:
        label += f" swapped with {level.swapped_with}"
    return label


def _field_estimates(rule_set: int, f: Field) -> list[LevelEstimate]:
    rows = [
        LevelEstimate(rule_set, f.name, level_label(level), level.m, level.u) for level in f.levels
    ]
    rows.append(LevelEstimate(rule_set, f.name, "else", f.else_m, f.else_u))
    return rows
