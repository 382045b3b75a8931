"""Tests of pair scoring: OpenCR's deterministic and probabilistic scores, null handling,
filters, several rule sets, comparison levels, term frequencies and shared identifiers."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clientregistry.matching.features import FeatureExtractor
from clientregistry.matching.rules import (
    BASE_SCORE,
    DecisionRules,
    RuleSet,
    default_rules,
    load_rules,
    parse_rules,
)
from clientregistry.matching.scoring import TF_MAX_SHIFT, PairScore, Scorer, tf_weight
from clientregistry.matching.term_frequency import TermCounts

HANDLINGS = ("conservative", "moderate", "greedy")


def _scorer(document: dict[str, Any], record_id_systems: tuple[str, ...] = ()) -> Scorer:
    rules = parse_rules(document)
    return Scorer(FeatureExtractor(rules, record_id_systems))


def _consistent(scorer: Scorer, fa: Any, fb: Any, **kw: Any) -> PairScore | None:
    """``exact_score``, after checking that the fast ``score`` agrees with it: exactly on
    pairs that reach a rule set's potential-match threshold, on the decision otherwise."""
    exact = scorer.exact_score(fa, fb, **kw)
    fast = scorer.score(fa, fb, **kw)
    if exact is None:
        assert fast is None
        return None
    assert fast is not None
    assert fast.decision == exact.decision
    if exact.decision != "none":
        assert fast.rule_set == exact.rule_set
        assert fast.score == pytest.approx(exact.score, abs=1e-9)
    return exact


def _score(scorer: Scorer, a: dict[str, Any], b: dict[str, Any], **kw: Any) -> PairScore | None:
    extract = scorer.extractor.extract
    return _consistent(scorer, extract(a), extract(b), **kw)


def _value(scorer: Scorer, a: dict[str, Any], b: dict[str, Any], **kw: Any) -> float:
    result = _score(scorer, a, b, **kw)
    assert result is not None
    return result.score


def _patient(
    given: str | None = None,
    family: str | None = None,
    birth: str | None = None,
    gender: str | None = None,
    phone: str | None = None,
    identifiers: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": "Patient"}
    name: dict[str, Any] = {}
    if given is not None:
        name["given"] = [given]
    if family is not None:
        name["family"] = family
    if name:
        out["name"] = [name]
    if birth is not None:
        out["birthDate"] = birth
    if gender is not None:
        out["gender"] = gender
    if phone is not None:
        out["telecom"] = [{"system": "phone", "value": phone}]
    if identifiers:
        out["identifier"] = [{"system": s, "value": v} for s, v in identifiers]
    return out


def _w(m: float, u: float) -> float:
    return math.log10(m / u)


def _else(m: float, u: float) -> float:
    return math.log10((1 - m) / (1 - u))


# ----------------------------------------------------------------------------- deterministic

DET = {
    "rules": [
        {
            "matchingType": "deterministic",
            "fields": {
                "given": {"algorithm": "exact", "fhirpath": "name.given", "weight": 2},
                "family": {
                    "algorithm": "jaro-winkler-similarity",
                    "threshold": 0.9,
                    "fhirpath": "name.family",
                    "weight": 3,
                },
                "birth": {"algorithm": "exact", "fhirpath": "birthDate", "weight": 0.5},
            },
            "potentialMatchThreshold": 2,
            "autoMatchThreshold": 5,
        }
    ]
}


def test_deterministic_score_is_the_sum_of_agreeing_weights() -> None:
    scorer = _scorer(DET)
    a = _patient("Ann", "Lee", "1974-12-25")
    assert _score(scorer, a, a) == PairScore(5.5, "auto", 0)
    assert _score(scorer, a, _patient("ann", "LEE", "1974-12-25")) == PairScore(5.5, "auto", 0)
    assert _score(scorer, a, _patient("Ann", "Zed", "1974-12-25")) == PairScore(2.5, "potential", 0)
    assert _score(scorer, a, _patient("Bob", "Lee", "1974-12-26")) == PairScore(3.0, "potential", 0)
    assert _score(scorer, a, _patient("Bob", "Zed", "1974-12-25")) == PairScore(0.5, "none", 0)
    assert _score(scorer, a, _patient("Bob", "Zed", "2000-01-01")) == PairScore(0.0, "none", 0)


# ----------------------------------------------------------------------------- probabilistic

PROB = {
    "rules": [
        {
            "matchingType": "probabilistic",
            "fields": {
                "given": {
                    "algorithm": "exact",
                    "fhirpath": "name.given",
                    "mValue": 0.9,
                    "uValue": 0.01,
                },
                "family": {
                    "algorithm": "jaro-winkler-similarity",
                    "threshold": 0.9,
                    "fhirpath": "name.family",
                    "mValue": 0.8,
                    "uValue": 0.05,
                },
                "phone": {
                    "algorithm": "exact",
                    "fhirpath": "telecom.where(system='phone').value",
                    "mValue": 0.95,
                    "uValue": 0.001,
                },
            },
            "potentialMatchThreshold": 100,
            "autoMatchThreshold": 103,
        }
    ]
}


def test_probabilistic_score_is_opencr_fellegi_sunter() -> None:
    scorer = _scorer(PROB)
    a = _patient("Ann", "Lee", phone="+256 772 410 233")
    everything = BASE_SCORE + _w(0.9, 0.01) + _w(0.8, 0.05) + _w(0.95, 0.001)
    assert _value(scorer, a, _patient("ann", "Lee", phone="0772410233")) == pytest.approx(
        everything, abs=1e-12
    )
    b = _patient("Ann", "Zed", phone="0772410233")
    expected = BASE_SCORE + _w(0.9, 0.01) + _else(0.8, 0.05) + _w(0.95, 0.001)
    assert expected == pytest.approx(100 + 1.954242509 - 0.676693609 + 2.977723605, abs=1e-8)
    result = _score(scorer, a, b)
    assert result is not None
    assert result.score == pytest.approx(expected, abs=1e-12)
    assert result.decision == "auto"  # 104.26 >= 103
    c = _patient("Bob", "Zed", phone="0772410233")
    expected = BASE_SCORE + _else(0.9, 0.01) + _else(0.8, 0.05) + _w(0.95, 0.001)
    result = _score(scorer, a, c)
    assert result is not None
    assert result.score == pytest.approx(expected, abs=1e-12)
    assert result.decision == "potential"  # 101.30
    d = _patient("Bob", "Zed", phone="0700000000")
    result = _score(scorer, a, d)
    assert result is not None
    assert result.score == pytest.approx(
        BASE_SCORE + _else(0.9, 0.01) + _else(0.8, 0.05) + _else(0.95, 0.001), abs=1e-12
    )
    assert result.decision == "none"


# ----------------------------------------------------------------------------- null handling


def _null_rules(matching_type: str, one: str | None, both: str | None) -> dict[str, Any]:
    """Two fields: 'anchor' (always present and agreeing) and 'family' (the one under test)."""
    family: dict[str, Any] = {"algorithm": "exact", "fhirpath": "name.family", "weight": 2}
    anchor: dict[str, Any] = {"algorithm": "exact", "fhirpath": "name.given"}
    if matching_type == "probabilistic":
        family.update(mValue=0.8, uValue=0.02)
        anchor.update(mValue=0.9, uValue=0.1)
    if one is not None:
        family["null_handling"] = one
    if both is not None:
        family["null_handling_both"] = both
    return {
        "rules": [
            {
                "matchingType": matching_type,
                "fields": {"anchor": anchor, "family": family},
                "potentialMatchThreshold": 1 if matching_type == "deterministic" else 100,
                "autoMatchThreshold": 3 if matching_type == "deterministic" else 102,
            }
        ]
    }


def _other(handling: str) -> str:
    """A handling that gives a different result from ``handling`` in both rule-set types."""
    return "greedy" if handling != "greedy" else "conservative"


def _expected_null(matching_type: str, handling: str) -> tuple[float, bool | None]:
    """(family's contribution, its 'agrees' note) when its value is missing."""
    if matching_type == "deterministic":
        return {"conservative": (0.0, False), "moderate": (0.0, None), "greedy": (2.0, True)}[
            handling
        ]
    return {
        "conservative": (_else(0.8, 0.02), False),
        "moderate": (0.0, None),
        "greedy": (_w(0.8, 0.02), True),
    }[handling]


@pytest.mark.parametrize("matching_type", ["deterministic", "probabilistic"])
@pytest.mark.parametrize("handling", HANDLINGS)
@pytest.mark.parametrize("empty", ["one", "both"])
def test_null_handling(matching_type: str, handling: str, empty: str) -> None:
    if empty == "one":
        document = _null_rules(matching_type, handling, _other(handling))
        a, b = _patient("Ann", "Lee"), _patient("Ann")
    else:
        document = _null_rules(matching_type, _other(handling), handling)
        a, b = _patient("Ann"), _patient("Ann")
    scorer = _scorer(document)
    contribution, agrees = _expected_null(matching_type, handling)
    anchor = 1.0 if matching_type == "deterministic" else BASE_SCORE + _w(0.9, 0.1)
    assert _value(scorer, a, b) == pytest.approx(anchor + contribution, abs=1e-12)
    assert _value(scorer, b, a) == pytest.approx(anchor + contribution, abs=1e-12)
    notes = {n.field: n for n in scorer.explain(*map(scorer.extractor.extract, (a, b)))[0].fields}
    note = notes["family"]
    assert note.level == f"null ({handling})"
    assert note.agrees is agrees
    assert note.similarity is None
    assert note.contribution == pytest.approx(contribution, abs=1e-12)


def test_null_handling_alone_covers_both_empty() -> None:
    # "nullHandling by itself is used with either one value or both null" (OpenCR docs)
    scorer = _scorer(_null_rules("deterministic", "greedy", None))
    assert _value(scorer, _patient("Ann"), _patient("Ann")) == 3.0
    assert _value(scorer, _patient("Ann", "Lee"), _patient("Ann")) == 3.0


@pytest.mark.parametrize("matching_type", ["deterministic", "probabilistic"])
def test_no_null_handling_compares_empty_strings(matching_type: str) -> None:
    scorer = _scorer(_null_rules(matching_type, None, None))
    anchor = 1.0 if matching_type == "deterministic" else BASE_SCORE + _w(0.9, 0.1)
    agree = 2.0 if matching_type == "deterministic" else _w(0.8, 0.02)
    disagree = 0.0 if matching_type == "deterministic" else _else(0.8, 0.02)
    # OpenCR: two empty strings agree under exact
    both_empty = _value(scorer, _patient("Ann"), _patient("Ann"))
    assert both_empty == pytest.approx(anchor + agree, abs=1e-12)
    one_empty = _value(scorer, _patient("Ann", "Lee"), _patient("Ann"))
    assert one_empty == pytest.approx(anchor + disagree, abs=1e-12)
    results = scorer.explain(*map(scorer.extractor.extract, (_patient("Ann"), _patient("Ann"))))
    note = {n.field: n for n in results[0].fields}["family"]
    assert (note.left, note.right, note.agrees, note.similarity) == ("", "", True, 1.0)


def test_rule_level_null_handling_applies_to_fields() -> None:
    document = _null_rules("probabilistic", None, None)
    document["rules"][0]["null_handling"] = "conservative"
    document["rules"][0]["null_handling_both"] = "greedy"
    scorer = _scorer(document)
    anchor = BASE_SCORE + _w(0.9, 0.1)
    one = _value(scorer, _patient("Ann", "Lee"), _patient("Ann"))
    assert one == pytest.approx(anchor + _else(0.8, 0.02), abs=1e-12)
    both = _value(scorer, _patient("Ann"), _patient("Ann"))
    assert both == pytest.approx(anchor + _w(0.8, 0.02), abs=1e-12)


# ----------------------------------------------------------------------------- filters, phonetic


def _with_filter(document: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(document))
    out["rules"][0]["filters"] = {"gender": {"fhirpath": "gender"}}
    return out


def test_differing_filter_blocks_the_rule_set() -> None:
    scorer = _scorer(_with_filter(DET))
    a = _patient("Ann", "Lee", "1974-12-25", gender="female")
    b = _patient("Ann", "Lee", "1974-12-25", gender="male")
    assert _score(scorer, a, b) is None
    assert _score(scorer, a, _patient("Ann", "Lee", "1974-12-25", gender=" FEMALE ")) == PairScore(
        5.5, "auto", 0
    )
    # a missing filter value differs from a present one
    assert _score(scorer, a, _patient("Ann", "Lee", "1974-12-25")) is None
    (result,) = scorer.explain(*map(scorer.extractor.extract, (a, b)))
    assert result.blocked_by == "filter gender"
    assert result.decision == "none"
    assert result.fields == ()
    assert scorer.best([result]) is None


def test_filter_blocks_only_its_own_rule_set() -> None:
    document = _with_filter(DET)
    document["rules"].append(json.loads(json.dumps(DET["rules"][0])))
    document["rules"][1]["autoMatchThreshold"] = 6  # so 5.5 is only potential here
    scorer = _scorer(document)
    a = _patient("Ann", "Lee", "1974-12-25", gender="female")
    b = _patient("Ann", "Lee", "1974-12-25", gender="male")
    assert _score(scorer, a, b) == PairScore(5.5, "potential", 1)
    a2 = _patient("Ann", "Lee", "1974-12-25", gender="male")
    assert _score(scorer, a2, b) == PairScore(5.5, "auto", 0)


def test_phonetic_field_is_a_hard_block() -> None:
    document = json.loads(json.dumps(DET))
    document["rules"][0]["fields"]["sound"] = {"algorithm": "phonetic", "fhirpath": "name.family"}
    scorer = _scorer(document)
    a = _patient("Ann", "Smith", "1974-12-25")
    # Smyth sounds like Smith (metaphone SM0): not blocked, and 'sound' adds no weight
    # (family: jaro-winkler 0.89 < 0.9 disagrees; given 2 + birth 0.5)
    assert _score(scorer, a, _patient("Ann", "Smyth", "1974-12-25")) == PairScore(
        2.5, "potential", 0
    )
    assert _score(scorer, a, a) == PairScore(5.5, "auto", 0)
    # Jones does not: blocked, whatever else agrees
    assert _score(scorer, a, _patient("Ann", "Jones", "1974-12-25")) is None
    (result,) = scorer.explain(*map(scorer.extractor.extract, (a, _patient("Ann", "Jones"))))
    assert result.blocked_by == "phonetic sound"


# ----------------------------------------------------------------------------- several rule sets


@pytest.mark.parametrize("auto_first", [True, False])
def test_auto_beats_potential_whatever_the_order(auto_first: bool) -> None:
    potential_only = {
        "name": "high score, potential",
        "matchingType": "deterministic",
        "fields": {
            "given": {"algorithm": "exact", "fhirpath": "name.given", "weight": 10},
            "family": {"algorithm": "exact", "fhirpath": "name.family", "weight": 10},
        },
        "potentialMatchThreshold": 5,
        "autoMatchThreshold": 50,
    }
    auto = {
        "name": "low score, auto",
        "matchingType": "deterministic",
        "fields": {"given": {"algorithm": "exact", "fhirpath": "name.given"}},
        "potentialMatchThreshold": 1,
        "autoMatchThreshold": 1,
    }
    rule_sets = [auto, potential_only] if auto_first else [potential_only, auto]
    scorer = _scorer({"rules": rule_sets})
    a, b = _patient("Ann", "Lee"), _patient("Ann", "Lee")
    result = _score(scorer, a, b)
    auto_index = 0 if auto_first else 1
    assert result == PairScore(1.0, "auto", auto_index)
    results = scorer.explain(*map(scorer.extractor.extract, (a, b)))
    assert [r.decision for r in results] == (
        ["auto", "potential"] if auto_first else ["potential", "auto"]
    )
    best = scorer.best(results)
    assert best is not None
    assert best.rule_set == auto_index
    assert best.name == "low score, auto"


def test_same_decision_larger_margin_wins() -> None:
    document = {
        "rules": [
            {
                "matchingType": "deterministic",
                "fields": {"given": {"algorithm": "exact", "fhirpath": "name.given", "weight": 3}},
                "potentialMatchThreshold": 1,
                "autoMatchThreshold": 2.5,  # margin 0.5
            },
            {
                "matchingType": "deterministic",
                "fields": {"given": {"algorithm": "exact", "fhirpath": "name.given", "weight": 2}},
                "potentialMatchThreshold": 1,
                "autoMatchThreshold": 1,  # margin 1
            },
        ]
    }
    scorer = _scorer(document)
    assert _score(scorer, _patient("Ann"), _patient("Ann")) == PairScore(2.0, "auto", 1)


# ----------------------------------------------------------------------------- levels

LEVELS = {
    "rules": [
        {
            "matchingType": "probabilistic",
            "fields": {
                "given": {
                    "fhirpath": "name.given",
                    "levels": [
                        {"algorithm": "exact", "mValue": 0.7, "uValue": 0.01},
                        {
                            "algorithm": "jaro-winkler-similarity",
                            "threshold": 0.9,
                            "mValue": 0.2,
                            "uValue": 0.02,
                        },
                        {"algorithm": "levenshtein", "threshold": 3, "mValue": 0.05, "uValue": 0.1},
                    ],
                    "else": {"mValue": 0.05, "uValue": 0.87},
                }
            },
            "potentialMatchThreshold": 100,
            "autoMatchThreshold": 101,
        }
    ]
}


@pytest.mark.parametrize(
    ("left", "right", "weight", "level"),
    [
        ("jonathan", "Jonathan", _w(0.7, 0.01), "level 1 (exact)"),
        ("jonathan", "jonathon", _w(0.2, 0.02), "level 2 (jaro-winkler-similarity)"),
        ("abc", "xyz", _w(0.05, 0.1), "level 3 (levenshtein)"),  # negative weight
        ("jonathan", "mary", math.log10(0.05 / 0.87), "else"),
    ],
)
def test_multi_level_field_takes_the_first_agreeing_level(
    left: str, right: str, weight: float, level: str
) -> None:
    scorer = _scorer(LEVELS)
    a, b = _patient(left), _patient(right)
    assert _value(scorer, a, b) == pytest.approx(BASE_SCORE + weight, abs=1e-12)
    (note,) = scorer.explain(*map(scorer.extractor.extract, (a, b)))[0].fields
    assert note.level == level
    assert note.agrees is (level != "else")


def test_first_agreeing_level_wins_even_if_a_later_one_weighs_more() -> None:
    document = json.loads(json.dumps(LEVELS))
    levels = document["rules"][0]["fields"]["given"]["levels"]
    levels.reverse()  # levenshtein <= 3 first: identical names agree there, not at 'exact'
    scorer = _scorer(document)
    assert _value(scorer, _patient("Ann"), _patient("Ann")) == pytest.approx(
        BASE_SCORE + _w(0.05, 0.1), abs=1e-12
    )


SWAP = {
    "rules": [
        {
            "matchingType": "probabilistic",
            "fields": {
                "given": {
                    "fhirpath": "name.given",
                    "levels": [
                        {"algorithm": "exact", "mValue": 0.8, "uValue": 0.01},
                        {
                            "algorithm": "jaro-winkler-similarity",
                            "threshold": 0.9,
                            "swappedWith": "family",
                            "mValue": 0.05,
                            "uValue": 0.0001,
                        },
                    ],
                    "else": {"mValue": 0.15, "uValue": 0.9899},
                },
                "family": {
                    "fhirpath": "name.family",
                    "algorithm": "exact",
                    "mValue": 0.8,
                    "uValue": 0.01,
                },
            },
            "potentialMatchThreshold": 100,
            "autoMatchThreshold": 102,
        }
    ]
}


def test_swapped_names_agree_at_the_swapped_level() -> None:
    scorer = _scorer(SWAP)
    a = _patient("Namaalwa", "Gideon")
    swapped = _patient("Gideon", "Namaalwa")
    expected = BASE_SCORE + _w(0.05, 0.0001) + _else(0.8, 0.01)
    assert _value(scorer, a, swapped) == pytest.approx(expected, abs=1e-12)
    assert _value(scorer, swapped, a) == pytest.approx(expected, abs=1e-12)
    notes = scorer.explain(*map(scorer.extractor.extract, (a, swapped)))[0].fields
    assert notes[0].level == "level 2 (swapped with family)"
    assert notes[0].agrees is True
    # only one of the two names crossed over: not a swap
    half = _patient("Gideon", "Okello")
    assert _value(scorer, a, half) == pytest.approx(
        BASE_SCORE + math.log10(0.15 / 0.9899) + _else(0.8, 0.01), abs=1e-12
    )
    # a missing other name cannot swap
    assert _value(scorer, _patient("Namaalwa"), _patient("Gideon")) == pytest.approx(
        BASE_SCORE + math.log10(0.15 / 0.9899) + _w(0.8, 0.01), abs=1e-12
    )


def test_fast_score_prunes_hopeless_pairs() -> None:
    scorer = _scorer(PROB)
    fa = scorer.extractor.extract(_patient("Ann", "Lee", phone="0772410233"))
    fb = scorer.extractor.extract(_patient("Bob", "Zed", phone="0700000000"))
    exact = scorer.exact_score(fa, fb)
    fast = scorer.score(fa, fb)
    assert exact is not None and fast is not None
    assert exact.decision == fast.decision == "none"
    assert exact.score == pytest.approx(
        BASE_SCORE + _else(0.9, 0.01) + _else(0.8, 0.05) + _else(0.95, 0.001)
    )
    assert fast.score <= exact.score  # -inf when pruned, never more than the real score


# ----------------------------------------------------------------------------- term frequency

TF = {
    "rules": [
        {
            "matchingType": "probabilistic",
            "fields": {
                "family": {
                    "fhirpath": "name.family",
                    "levels": [
                        {
                            "algorithm": "exact",
                            "mValue": 0.9,
                            "uValue": 0.01,
                            "termFrequency": True,
                        },
                        {
                            "algorithm": "jaro-winkler-similarity",
                            "threshold": 0.9,
                            "mValue": 0.05,
                            "uValue": 0.02,
                        },
                    ],
                }
            },
            "potentialMatchThreshold": 100,
            "autoMatchThreshold": 102,
        }
    ]
}


def test_term_frequency_makes_rare_values_weigh_more() -> None:
    scorer = _scorer(TF)
    frequencies = {"okello": 0.2, "zzyzx": 0.0001}
    calls: list[tuple[int, str]] = []

    def tf(slot: int, value: str) -> float | None:
        calls.append((slot, value))
        return frequencies.get(value)

    common = _value(scorer, _patient(family="Okello"), _patient(family="Okello"), tf=tf)
    rare = _value(scorer, _patient(family="Zzyzx"), _patient(family="Zzyzx"), tf=tf)
    unknown = _value(scorer, _patient(family="Lee"), _patient(family="Lee"), tf=tf)
    assert common == pytest.approx(BASE_SCORE + math.log10(0.9 / 0.2), abs=1e-12)
    # log10(0.9 / 0.0001) = 3.95 is more than TF_MAX_SHIFT above log10(0.9 / 0.01): capped
    assert math.log10(0.9 / 0.0001) > _w(0.9, 0.01) + TF_MAX_SHIFT
    assert rare == pytest.approx(BASE_SCORE + _w(0.9, 0.01) + TF_MAX_SHIFT, abs=1e-12)
    assert unknown == pytest.approx(BASE_SCORE + _w(0.9, 0.01), abs=1e-12)  # no frequency: u
    assert rare > unknown > common
    slot = scorer.extractor.slot(scorer.rules.rule_sets[0].fields[0])
    assert (slot, "okello") in calls
    # without a tf callable the level's own u is used
    assert _value(scorer, _patient(family="Zzyzx"), _patient(family="Zzyzx")) == pytest.approx(
        BASE_SCORE + _w(0.9, 0.01), abs=1e-12
    )
    # levels without termFrequency ignore it
    fuzzy = _value(scorer, _patient(family="Okello"), _patient(family="Okelo"), tf=tf)
    assert fuzzy == pytest.approx(BASE_SCORE + _w(0.05, 0.02), abs=1e-12)


def test_tf_weight_is_capped_both_ways() -> None:
    level = parse_rules(TF).rule_sets[0].fields[0].levels[0]
    base = _w(0.9, 0.01)
    assert tf_weight(level, 0.01) == pytest.approx(base)
    assert tf_weight(level, 0.05) == pytest.approx(math.log10(0.9 / 0.05))
    assert tf_weight(level, 1e-9) == pytest.approx(base + TF_MAX_SHIFT)
    assert tf_weight(level, 0.0) == pytest.approx(base + TF_MAX_SHIFT)
    assert tf_weight(level, 0.9) == pytest.approx(base - TF_MAX_SHIFT)


def _tf_floor(floor: float) -> dict[str, Any]:
    """:data:`TF` with ``termFrequencyMinimumU`` on the exact level."""
    document = json.loads(json.dumps(TF))
    document["rules"][0]["fields"]["family"]["levels"][0]["termFrequencyMinimumU"] = floor
    return document


def test_a_term_frequency_floor_at_u_only_ever_lowers_the_weight() -> None:
    """``termFrequencyMinimumU`` equal to u: a common value weighs less, a rare one no more
    than the level, in the compiled scorer and in the explanation alike."""
    scorer = _scorer(_tf_floor(0.01))
    frequencies = {"okello": 0.2, "zzyzx": 0.0001}

    def tf(slot: int, value: str) -> float | None:
        return frequencies.get(value)

    common = _value(scorer, _patient(family="Okello"), _patient(family="Okello"), tf=tf)
    rare = _value(scorer, _patient(family="Zzyzx"), _patient(family="Zzyzx"), tf=tf)
    assert common == pytest.approx(BASE_SCORE + math.log10(0.9 / 0.2), abs=1e-12)
    assert rare == pytest.approx(BASE_SCORE + _w(0.9, 0.01), abs=1e-12)  # not + TF_MAX_SHIFT
    level = scorer.rules.rule_sets[0].fields[0].levels[0]
    assert tf_weight(level, 0.0001) == pytest.approx(_w(0.9, 0.01))
    assert tf_weight(level, 0.2) == pytest.approx(math.log10(0.9 / 0.2))
    fa = scorer.extractor.extract(_patient(family="Zzyzx"))
    explained = scorer.explain(fa, fa, tf)[0]
    assert explained.score == pytest.approx(rare, abs=1e-12)


def test_a_lower_term_frequency_floor_caps_rare_values_between() -> None:
    scorer = _scorer(_tf_floor(0.001))
    rare = _value(scorer, _patient(family="Zzyzx"), _patient(family="Zzyzx"), tf=lambda s, v: 1e-6)
    assert rare == pytest.approx(BASE_SCORE + math.log10(0.9 / 0.001), abs=1e-12)


def test_default_rules_placeholder_postal_code_says_little() -> None:
    """The built-in rules weigh a postal code most records share (a placeholder) as little as
    term frequencies can, and a rare one at the level's own weight, never above."""
    fields = {f.name: f for f in default_rules().rule_sets[0].fields}
    level = fields["postalCode"].levels[0]
    assert level.term_frequency and level.tf_minimum_u == level.u
    assert tf_weight(level, 0.6) == pytest.approx(level.weight - TF_MAX_SHIFT)
    assert tf_weight(level, 1e-6) == pytest.approx(level.weight)


def test_max_score_bounds_term_frequency_scores() -> None:
    scorer = _scorer(TF)
    rare = _value(scorer, _patient(family="Zzyzx"), _patient(family="Zzyzx"), tf=lambda s, v: 1e-6)
    assert rare <= scorer.rules.rule_sets[0].max_score() + 1e-9


def test_term_counts_feed_term_frequencies() -> None:
    scorer = _scorer(TF)
    counts = TermCounts(scorer.extractor)
    slot = scorer.extractor.slot(scorer.rules.rule_sets[0].fields[0])
    assert counts.slots == (slot,)
    okello = scorer.extractor.extract(_patient(family="Okello"))
    rare = scorer.extractor.extract(_patient(family="Zzyzx"))
    for _ in range(40):
        counts.add(okello)
    assert counts.tf(slot, "okello") is None  # fewer than 50 values: unknown
    for _ in range(59):
        counts.add(scorer.extractor.extract(_patient(family="Lee")))
    counts.add(rare)
    assert counts.tf(slot, "okello") == pytest.approx(0.4)
    assert counts.tf(slot, "zzyzx") == pytest.approx(0.01)
    assert counts.tf(slot, "never") == pytest.approx(0.01)  # at least one
    common = scorer.score(okello, okello, counts.tf)
    rare_score = scorer.score(rare, rare, counts.tf)
    assert common is not None and rare_score is not None
    assert rare_score.score > common.score
    counts.remove(rare)
    assert counts.tf(slot, "zzyzx") == pytest.approx(1 / 99)
    counts.set_counts(slot, Counter({"a": 25, "b": 25}))
    assert counts.tf(slot, "a") == pytest.approx(0.5)


# ----------------------------------------------------------------------------- shared identifier

X = "http://x.org/nid"
Y = "http://y.org/passport"
OWN = "http://clientregistry.org/openmrs"


def _identifier_rules(matching_type: str) -> dict[str, Any]:
    ident: dict[str, Any] = {"algorithm": "shared-identifier", "fhirpath": "identifier"}
    anchor: dict[str, Any] = {"algorithm": "exact", "fhirpath": "name.given"}
    if matching_type == "probabilistic":
        ident.update(mValue=0.9, uValue=0.001)
        anchor.update(mValue=0.9, uValue=0.1)
    else:
        ident["weight"] = 5
    return {
        "rules": [
            {
                "matchingType": matching_type,
                "fields": {"anchor": anchor, "identifier": ident},
                "potentialMatchThreshold": 1 if matching_type == "deterministic" else 100,
                "autoMatchThreshold": 6 if matching_type == "deterministic" else 102,
            }
        ]
    }


@pytest.mark.parametrize(
    ("left", "right", "outcome"),
    [
        ([(X, "CF-1")], [(Y, "9"), (X, "cf 1")], "agree"),
        ([(X, "1"), (Y, "7")], [(X, "2"), (Y, "7")], "agree"),  # one shared is enough
        ([(X, "1")], [(X, "2")], "disagree"),
        ([(X, "1"), (Y, "7")], [(X, "2"), (Y, "8")], "disagree"),
        ([(X, "1")], [(Y, "1")], "null"),  # no system in common, same value
        ([(X, "1")], [], "null"),
        ([], [], "null"),
    ],
)
@pytest.mark.parametrize("matching_type", ["deterministic", "probabilistic"])
def test_shared_identifier(
    matching_type: str,
    left: list[tuple[str, str]],
    right: list[tuple[str, str]],
    outcome: str,
) -> None:
    scorer = _scorer(_identifier_rules(matching_type))
    a, b = _patient("Ann", identifiers=left), _patient("Ann", identifiers=right)
    if matching_type == "deterministic":
        expected = 1.0 + {"agree": 5.0, "disagree": 0.0, "null": 0.0}[outcome]
    else:
        expected = (
            BASE_SCORE
            + _w(0.9, 0.1)
            + {"agree": _w(0.9, 0.001), "disagree": _else(0.9, 0.001), "null": 0.0}[outcome]
        )
    assert _value(scorer, a, b) == pytest.approx(expected, abs=1e-12)
    assert _value(scorer, b, a) == pytest.approx(expected, abs=1e-12)
    note = {n.field: n for n in scorer.explain(*map(scorer.extractor.extract, (a, b)))[0].fields}[
        "identifier"
    ]
    assert note.similarity == {"agree": 1.0, "disagree": 0.0, "null": None}[outcome]
    if matching_type == "probabilistic" and outcome == "null":
        assert note.level == "no shared system"


def test_identifier_features_are_system_and_normalised_value() -> None:
    scorer = _scorer(_identifier_rules("probabilistic"))
    slot = scorer.extractor.slot(scorer.rules.rule_sets[0].fields[1])
    features = scorer.extractor.extract(_patient(identifiers=[(X, "CF-1"), (Y, " 9 ")]))
    assert features[slot] == frozenset({f"{X}|cf1", f"{Y}|9"})


@pytest.mark.parametrize("matching_type", ["deterministic", "probabilistic"])
def test_record_id_systems_are_never_compared(matching_type: str) -> None:
    document = _identifier_rules(matching_type)
    with_ids = _scorer(document)
    without_ids = _scorer(document, record_id_systems=(OWN,))
    same_own = (
        _patient("Ann", identifiers=[(OWN, "1")]),
        _patient("Ann", identifiers=[(OWN, "1")]),
    )
    other_own = (
        _patient("Ann", identifiers=[(OWN, "1")]),
        _patient("Ann", identifiers=[(OWN, "2")]),
    )
    anchor = 1.0 if matching_type == "deterministic" else BASE_SCORE + _w(0.9, 0.1)
    # counted when OWN is not a record-id system ...
    assert _value(with_ids, *same_own) > anchor
    if matching_type == "probabilistic":
        assert _value(with_ids, *other_own) < anchor
    # ... but never when it is: neither agreement nor disagreement
    assert _value(without_ids, *same_own) == pytest.approx(anchor, abs=1e-12)
    assert _value(without_ids, *other_own) == pytest.approx(anchor, abs=1e-12)
    # other systems still count
    a = _patient("Ann", identifiers=[(OWN, "1"), (X, "5")])
    b = _patient("Ann", identifiers=[(OWN, "2"), (X, "5")])
    assert _value(without_ids, a, b) > anchor


def _near_identifier_rules() -> dict[str, Any]:
    document = _identifier_rules("probabilistic")
    document["rules"][0]["fields"]["identifier"] = {
        "fhirpath": "identifier",
        "levels": [
            {"algorithm": "shared-identifier", "mValue": 0.87, "uValue": 0.0001},
            {"algorithm": "shared-identifier", "threshold": 1, "mValue": 0.03, "uValue": 0.001},
        ],
        "else": {"mValue": 0.1, "uValue": 0.9989},
    }
    return document


@pytest.mark.parametrize(
    ("left", "right", "outcome"),
    [
        ([(X, "1234567")], [(X, "1234567")], "level 1 (shared-identifier)"),
        ([(X, "1234567")], [(X, "1234967")], "level 2 (shared-identifier within 1 edits)"),
        ([(X, "1234567")], [(X, "1243567")], "level 2 (shared-identifier within 1 edits)"),
        ([(X, "1234567")], [(X, "123456")], "level 2 (shared-identifier within 1 edits)"),
        ([(X, "1234567")], [(X, "1243576")], "else"),  # two edits
        ([(X, "1234567"), (Y, "55")], [(X, "7654321"), (Y, "56")], "level 2"),  # any system
        ([(X, "1234567")], [(Y, "1234568")], "no shared system"),  # other system: not compared
    ],
)
def test_identifier_within_edits_level(
    left: list[tuple[str, str]], right: list[tuple[str, str]], outcome: str
) -> None:
    scorer = _scorer(_near_identifier_rules())
    a, b = _patient("Ann", identifiers=left), _patient("Ann", identifiers=right)
    expected = BASE_SCORE + _w(0.9, 0.1)
    if outcome.startswith("level 1"):
        expected += _w(0.87, 0.0001)
    elif outcome.startswith("level 2"):
        expected += _w(0.03, 0.001)
    elif outcome == "else":
        expected += _w(0.1, 0.9989)
    assert _value(scorer, a, b) == pytest.approx(expected, abs=1e-12)
    assert _value(scorer, b, a) == pytest.approx(expected, abs=1e-12)
    note = {n.field: n for n in scorer.explain(*map(scorer.extractor.extract, (a, b)))[0].fields}[
        "identifier"
    ]
    assert note.level.startswith(outcome)


def test_single_shared_identifier_level_needs_the_same_value() -> None:
    """OpenCR's form (and a level without ``threshold``) allow no edits."""
    for document in (_identifier_rules("probabilistic"), _near_identifier_rules()):
        del document["rules"][0]["fields"]["identifier"].get("levels", [{}, {}])[1:]
        rules = parse_rules(document)
        assert [lv.threshold for lv in rules.rule_sets[0].fields[1].levels] == [0.0]
    scorer = _scorer(_identifier_rules("probabilistic"))
    a, b = (
        _patient("Ann", identifiers=[(X, "1234567")]),
        _patient("Ann", identifiers=[(X, "1234967")]),
    )
    assert _value(scorer, a, b) == pytest.approx(
        BASE_SCORE + _w(0.9, 0.1) + _else(0.9, 0.001), abs=1e-12
    )


# ----------------------------------------------------------------------------- explain


def test_explain_notes_add_up_to_the_score() -> None:
    scorer = _scorer(PROB)
    a = _patient("Ann", "Lee", phone="+256 772 410 233")
    b = _patient("Ann", "Leigh")
    fa, fb = scorer.extractor.extract(a), scorer.extractor.extract(b)
    (result,) = scorer.explain(fa, fb)
    score = _consistent(scorer, fa, fb)
    assert score is not None
    assert result.score == pytest.approx(score.score, abs=1e-12)
    assert result.decision == score.decision
    assert result.blocked_by is None
    assert BASE_SCORE + sum(n.contribution for n in result.fields) == pytest.approx(result.score)
    notes = {n.field: n for n in result.fields}
    assert set(notes) == {"given", "family", "phone"}
    given = notes["given"]
    assert (given.left, given.right, given.algorithm) == ("ann", "ann", "exact")
    assert (given.similarity, given.agrees, given.level) == (1.0, True, "agree")
    assert given.contribution == pytest.approx(_w(0.9, 0.01))
    family = notes["family"]
    assert (family.left, family.right, family.algorithm) == (
        "lee",
        "leigh",
        "jaro-winkler-similarity",
    )
    assert family.similarity is not None and 0.0 < family.similarity < 0.9
    assert (family.agrees, family.level) == (False, "disagree")
    assert family.contribution == pytest.approx(_else(0.8, 0.05))
    phone = notes["phone"]
    assert (phone.left, phone.right) == ("772410233", "")
    assert (phone.agrees, phone.similarity) == (False, 0.0)  # no null handling: compared
    assert phone.contribution == pytest.approx(_else(0.95, 0.001))
    as_json = result.to_json()
    assert as_json["fields"][0]["field"] == "given"
    assert as_json["score"] == round(result.score, 4)
    assert "blocked_by" not in as_json


def test_explain_deterministic_notes_add_up() -> None:
    scorer = _scorer(DET)
    a = _patient("Ann", "Lee", "1974-12-25")
    b = _patient("Ann", "Lea", "1974-12-26")
    (result,) = scorer.explain(scorer.extractor.extract(a), scorer.extractor.extract(b))
    assert [(n.field, n.agrees, n.contribution) for n in result.fields] == [
        ("given", True, 2.0),
        ("family", False, 0.0),
        ("birth", False, 0.0),
    ]
    assert result.score == sum(n.contribution for n in result.fields) == 2.0
    assert result.decision == "potential"
    birth = result.fields[2]
    assert (birth.left, birth.right) == ("1974-12-25", "1974-12-26")


# ----------------------------------------------------------------------------- properties

OPENCR_RULE_FILES = [
    "decisionRules.json",
    "decisionRulesDeterministicTemplate.json",
    "decisionRulesE2E.json",
    "decisionRulesProbabilisticTemplate.json",
    "decisionRulesTest.json",
]


def _min_score(rs: RuleSet) -> float:
    if not rs.probabilistic:
        return sum(min(0.0, f.weight) for f in rs.fields)
    return BASE_SCORE + sum(
        min(0.0, f.else_weight, *(lv.weight for lv in f.levels)) for f in rs.fields
    )


# given names include family names, so that some pairs have their names swapped
_givens = st.sampled_from(
    ["Namaalwa", "Namalwa", "Emmanuel", "Emanuel", "Ann", "Anne", "Zoë", "Gideon", "Lee"]
)
_families = st.sampled_from(
    ["Gideon", "Gidion", "Okello", "Lee", "O'Neil", "Oneil", "Namaalwa", "Ann"]
)
_phones = st.sampled_from(["774 232423", "+256 774 232423", "0772410233", "0772410234"])
_ids = st.tuples(
    st.sampled_from(
        [
            "http://clientregistry.org/nationalid",
            "http://clientregistry.org/artnumber",
            "http://clientregistry.org/openmrs",
        ]
    ),
    st.sampled_from(["12349", "12348", "CF-1"]),
)


@st.composite
def _patients(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": "Patient"}
    if draw(st.booleans()):
        name: dict[str, Any] = {"use": draw(st.sampled_from(["official", "usual"]))}
        if draw(st.booleans()):
            name["given"] = draw(st.lists(_givens, min_size=1, max_size=2))
        if draw(st.booleans()):
            name["family"] = draw(_families)
        out["name"] = [name]
    if draw(st.booleans()):
        out["birthDate"] = draw(st.sampled_from(["1974-12-25", "1974-12-26", "1975-12-25", "1974"]))
    if draw(st.booleans()):
        out["gender"] = draw(st.sampled_from(["male", "female"]))
    if draw(st.booleans()):
        out["telecom"] = [{"system": "phone", "value": draw(_phones)}]
    ids = draw(st.lists(_ids, max_size=3))
    if ids:
        out["identifier"] = [{"system": s, "value": v} for s, v in ids]
    if draw(st.booleans()):
        out["address"] = [
            {
                "line": [draw(st.sampled_from(["Plot 12", "Plot 21", "Kampala Rd"]))],
                "city": draw(st.sampled_from(["Kampala", "Gulu"])),
                "postalCode": draw(st.sampled_from(["256", "265"])),
            }
        ]
    return out


@pytest.fixture(scope="module", params=["default", *OPENCR_RULE_FILES])
def any_rules(request: pytest.FixtureRequest) -> DecisionRules:
    if request.param == "default":
        return default_rules()
    reference_dir: Path = request.getfixturevalue("reference_dir")
    return load_rules(reference_dir / "opencr" / "config" / request.param)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(a=_patients(), b=_patients())
def test_score_is_symmetric_and_bounded(any_rules: DecisionRules, a: Any, b: Any) -> None:
    scorer = Scorer(FeatureExtractor(any_rules, ["http://clientregistry.org/openmrs"]))
    fa, fb = scorer.extractor.extract(a), scorer.extractor.extract(b)
    ab, ba = _consistent(scorer, fa, fb), _consistent(scorer, fb, fa)
    if ab is None or ba is None:
        assert ab is None and ba is None
        return
    assert ab.score == pytest.approx(ba.score, abs=1e-9)
    assert ab.decision == ba.decision
    assert ab.rule_set == ba.rule_set
    for result in scorer.explain(fa, fb):
        if result.blocked_by is not None:
            continue
        rs = any_rules.rule_sets[result.rule_set]
        assert _min_score(rs) - 1e-9 <= result.score <= rs.max_score() + 1e-9
        base = BASE_SCORE if rs.probabilistic else 0.0
        assert base + sum(n.contribution for n in result.fields) == pytest.approx(result.score)
    rs = any_rules.rule_sets[ab.rule_set]
    assert _min_score(rs) - 1e-9 <= ab.score <= rs.max_score() + 1e-9


def test_identical_records_reach_the_maximum_when_complete(reference_dir: Path) -> None:
    rules = load_rules(reference_dir / "opencr" / "config" / "decisionRules.json")
    scorer = Scorer(FeatureExtractor(rules))
    patient = {
        "name": [{"use": "official", "given": ["Ann"], "family": "Lee"}],
        "birthDate": "1974-12-25",
        "gender": "female",
        "telecom": [{"system": "phone", "value": "0772410233"}],
        "identifier": [
            {"system": "http://clientregistry.org/nationalid", "value": "1"},
            {"system": "http://clientregistry.org/artnumber", "value": "2"},
        ],
    }
    features = scorer.extractor.extract(patient)
    assert scorer.score(features, features) == PairScore(6.0, "auto", 0)
    assert rules.rule_sets[0].max_score() == 6.0


def test_opencr_demo_patients(reference_dir: Path) -> None:
    rules = load_rules(reference_dir / "opencr" / "config" / "decisionRules.json")
    scorer = Scorer(FeatureExtractor(rules))
    demo = reference_dir / "opencr" / "DemoData"
    p1, p2, p3, p4 = (
        scorer.extractor.extract(json.loads((demo / name).read_text(encoding="utf-8")))
        for name in (
            "patient1_openmrs.json",
            "patient2_dhis2.json",
            "patient3_lims.json",
            "patient4_lims.json",
        )
    )
    # given (jw >= 0.8), family, birthDate and phone agree; the identifiers are missing
    # (moderate): 4 = potential.
    assert scorer.score(p1, p2) == PairScore(4.0, "potential", 0)
    assert scorer.score(p1, p3) == PairScore(4.0, "potential", 0)
    four = scorer.score(p1, p4)
    assert four is not None
    assert four.score == 4.0  # 'namaalwa emmanuel' vs 'namirimu emmanuel' still jw >= 0.8


def _fake_tf(slot: int, value: str) -> float | None:
    """A deterministic stand-in for stored term counts: short values are common."""
    if value.startswith("a"):
        return None
    return min(1.0, 10.0 ** -len(value) * 50)


@settings(max_examples=150, deadline=None)
@given(a=_patients(), b=_patients())
def test_default_rules_with_term_frequencies_are_symmetric(a: Any, b: Any) -> None:
    rules = default_rules()
    scorer = Scorer(FeatureExtractor(rules))
    fa, fb = scorer.extractor.extract(a), scorer.extractor.extract(b)
    ab = _consistent(scorer, fa, fb, tf=_fake_tf)
    ba = _consistent(scorer, fb, fa, tf=_fake_tf)
    assert ab is not None and ba is not None
    assert ab.score == pytest.approx(ba.score, abs=1e-9)
    assert ab.decision == ba.decision
    rs = rules.rule_sets[0]
    shift = sum(TF_MAX_SHIFT for f in rs.fields if any(lv.term_frequency for lv in f.levels))
    assert _min_score(rs) - shift - 1e-9 <= ab.score <= rs.max_score() + shift + 1e-9


# ----------------------------------------------------------------------------- hot-path helpers


def _identifier_agreement_reference(a: frozenset[str], b: frozenset[str]) -> bool | None:
    """The plain definition the optimised function must keep."""
    if a & b:
        return True
    systems_a = {item.rsplit("|", 1)[0] for item in a}
    if any(item.rsplit("|", 1)[0] in systems_a for item in b):
        return False
    return None


_identifier_items = st.frozensets(
    st.builds(
        "{}|{}".format,
        st.sampled_from(["http://x.org", "http://y.org", "urn:a|b", ""]),
        st.sampled_from(["1", "2", "cf21927", ""]),
    ),
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(a=_identifier_items, b=_identifier_items)
def test_identifier_agreement_matches_its_definition(a: frozenset[str], b: frozenset[str]) -> None:
    from clientregistry.matching.comparison import identifier_agreement as _identifier_agreement

    assert _identifier_agreement(a, b) == _identifier_agreement_reference(a, b)


def _two_rule_sets() -> DecisionRules:
    """Two rule sets (the general path of ``likely_matches``)."""
    return parse_rules(
        {
            "rules": [
                {
                    "matchingType": "deterministic",
                    "fields": {
                        "given": {
                            "algorithm": "jaro-winkler-similarity",
                            "threshold": 0.85,
                            "fhirpath": "name.given",
                        },
                        "family": {"algorithm": "exact", "fhirpath": "name.family"},
                        "birth": {
                            "algorithm": "dateDamerau",
                            "threshold": 1,
                            "fhirpath": "birthDate",
                        },
                    },
                    "potentialMatchThreshold": 2,
                    "autoMatchThreshold": 3,
                },
                {
                    "matchingType": "deterministic",
                    "fields": {
                        "ids": {"algorithm": "shared-identifier", "fhirpath": "identifier"},
                        "phone": {
                            "algorithm": "exact",
                            "fhirpath": "telecom.where(system='phone').value",
                        },
                    },
                    "potentialMatchThreshold": 1,
                    "autoMatchThreshold": 2,
                },
            ]
        }
    )


@pytest.mark.parametrize("rules", [default_rules(), _two_rule_sets()], ids=["default", "two"])
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(patients=st.lists(_patients(), min_size=1, max_size=12))
def test_likely_matches_keeps_what_candidates_keeps(
    rules: DecisionRules, patients: list[dict[str, Any]]
) -> None:
    """The dedupe hot loop (by position) and the registry's candidate scoring agree: same
    records, same scores, same order."""
    from clientregistry.matching.matcher import Matcher

    matcher = Matcher(rules)
    stored = [matcher.extractor.extract(p) for p in patients[1:]]
    new = matcher.extractor.extract(patients[0])
    positions = list(range(len(stored)))
    expected = matcher.candidates(new, ((j, None, f) for j, f in enumerate(stored)), _fake_tf)
    found = matcher.likely_matches(new, positions, stored, _fake_tf)
    assert [(c.record_id, c.score) for c in expected] == found
