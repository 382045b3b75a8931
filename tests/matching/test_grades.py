"""Tests of $match grades and 0..1 scores (pure functions of a rule set and a score)."""

from __future__ import annotations

import math

import pytest

from clientregistry.matching.grades import (
    GRADE_RANK,
    GRADES,
    MATCH_GRADE_EXTENSION,
    Grade,
    identifiers_conflict,
    match_grade_extension,
    only_certain,
    order_key,
    person_grade,
    probability,
    probable_threshold,
    score_grade,
)
from clientregistry.matching.rules import RuleSet, default_rules, parse_rules

DETERMINISTIC = parse_rules(
    {
        "rules": [
            {
                "matchingType": "deterministic",
                "fields": {
                    "given": {"algorithm": "exact", "fhirpath": "name.given", "weight": 2},
                    "family": {"algorithm": "exact", "fhirpath": "name.family", "weight": 3},
                    "birth": {"algorithm": "exact", "fhirpath": "birthDate", "weight": 1},
                },
                "potentialMatchThreshold": 2,
                "autoMatchThreshold": 5,
            }
        ]
    }
).rule_sets[0]


@pytest.fixture(scope="module")
def probabilistic() -> RuleSet:
    rule_set = default_rules().rule_sets[0]
    assert (rule_set.potential_threshold, rule_set.auto_threshold) == (103, 105)
    return rule_set


# ----------------------------------------------------------------------------- grades


def test_grades_follow_the_rule_set_thresholds(probabilistic: RuleSet) -> None:
    assert probable_threshold(probabilistic) == 104
    assert score_grade(112.0, probabilistic) == "certain"
    assert score_grade(105.0, probabilistic) == "certain"
    assert score_grade(104.99, probabilistic) == "probable"
    assert score_grade(104.0, probabilistic) == "probable"
    assert score_grade(103.99, probabilistic) == "possible"
    assert score_grade(103.0, probabilistic) == "possible"
    assert score_grade(102.99, probabilistic) is None
    assert score_grade(-40.0, probabilistic) is None


def test_deterministic_grades() -> None:
    assert probable_threshold(DETERMINISTIC) == 3.5
    assert [score_grade(s, DETERMINISTIC) for s in (6, 5, 4, 3, 2, 1, 0)] == [
        "certain",
        "certain",
        "probable",
        "possible",
        "possible",
        None,
        None,
    ]


def test_person_grade_known_non_match_overrides_any_score() -> None:
    assert person_grade("certain", known_non_match=True) == "certainly-not"
    assert person_grade(None, known_non_match=True) == "certainly-not"


def test_person_grade_conflicting_identifier_only_below_potential() -> None:
    assert person_grade(None, conflicting_identifier=True) == "certainly-not"
    assert person_grade("possible", conflicting_identifier=True) == "possible"
    assert person_grade("certain") == "certain"
    assert person_grade(None) is None


def test_all_four_grades_are_reachable(probabilistic: RuleSet) -> None:
    produced = {
        person_grade(score_grade(106, probabilistic)),
        person_grade(score_grade(104.5, probabilistic)),
        person_grade(score_grade(103.5, probabilistic)),
        person_grade(score_grade(99, probabilistic), conflicting_identifier=True),
    }
    assert produced == set(GRADES)


# ----------------------------------------------------------------------------- scores


def test_probabilistic_probability_is_a_logistic_anchored_at_the_potential_threshold(
    probabilistic: RuleSet,
) -> None:
    assert probability(103.0, probabilistic) == pytest.approx(0.5)
    assert probability(104.0, probabilistic) == pytest.approx(10 / 11)
    assert probability(105.0, probabilistic) == pytest.approx(100 / 101)
    assert probability(100.0, probabilistic) == pytest.approx(1 / 1001)


def test_probability_is_monotone_and_within_bounds(probabilistic: RuleSet) -> None:
    scores = [-1e9, -500.0, 0.0, 90.0, 100.0, 103.0, 104.5, 105.0, 120.0, 500.0, 1e9]
    values = [probability(s, probabilistic) for s in scores]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert values == sorted(values)
    assert values[0] < 1e-100
    assert values[-1] == 1.0
    assert probability(math.nan, probabilistic) == 0.0


def test_grade_boundaries_map_to_increasing_scores(probabilistic: RuleSet) -> None:
    possible = probability(probabilistic.potential_threshold, probabilistic)
    probable = probability(probable_threshold(probabilistic), probabilistic)
    certain = probability(probabilistic.auto_threshold, probabilistic)
    assert possible < probable < certain


def test_deterministic_probability_is_the_share_of_the_maximum() -> None:
    assert DETERMINISTIC.max_score() == 6
    assert probability(6, DETERMINISTIC) == 1.0
    assert probability(3, DETERMINISTIC) == 0.5
    assert probability(0, DETERMINISTIC) == 0.0
    assert probability(-2, DETERMINISTIC) == 0.0
    assert probability(9, DETERMINISTIC) == 1.0


# ----------------------------------------------------------------------------- identifiers


def test_identifiers_conflict_on_a_shared_system_with_different_values() -> None:
    nid = "http://example.org/nid"
    assert identifiers_conflict(frozenset({f"{nid}|1"}), frozenset({f"{nid}|2"}))
    assert not identifiers_conflict(frozenset({f"{nid}|1"}), frozenset({f"{nid}|1", f"{nid}|2"}))
    assert not identifiers_conflict(frozenset({f"{nid}|1"}), frozenset({"http://x|2"}))
    assert not identifiers_conflict(frozenset(), frozenset({f"{nid}|2"}))
    assert identifiers_conflict(frozenset({"urn:a|b|1"}), frozenset({"urn:a|b|2"}))


# ----------------------------------------------------------------------------- results


def test_order_key_sorts_by_grade_then_score() -> None:
    items: list[tuple[Grade, float]] = [
        ("possible", 0.7),
        ("certainly-not", 0.0),
        ("certain", 0.99),
        ("probable", 0.95),
        ("certain", 0.999),
    ]
    ordered = sorted(items, key=lambda i: order_key(i[0], i[1]))
    assert ordered == [
        ("certain", 0.999),
        ("certain", 0.99),
        ("probable", 0.95),
        ("possible", 0.7),
        ("certainly-not", 0.0),
    ]
    assert sorted(GRADE_RANK, key=GRADE_RANK.__getitem__, reverse=True) == list(GRADES)


def test_only_certain_needs_exactly_one_certain_match() -> None:
    assert only_certain(["certain", "probable", "possible"]) == 0
    assert only_certain(["probable", "certain"]) == 1
    assert only_certain(["certain", "certain"]) is None
    assert only_certain(["probable", "possible"]) is None
    assert only_certain([]) is None


def test_match_grade_extension() -> None:
    assert match_grade_extension("probable") == {
        "url": MATCH_GRADE_EXTENSION,
        "valueCode": "probable",
    }
    assert MATCH_GRADE_EXTENSION == "http://hl7.org/fhir/StructureDefinition/match-grade"
