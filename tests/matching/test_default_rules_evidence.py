"""What the default rules make of evidence as people record it (issue #12): names with
middle initials, missing and swapped birth dates, households; and correlated-field groups
with a ``groupShare``."""

from __future__ import annotations

from typing import Any

import pytest

from clientregistry.errors import RuleSetError
from clientregistry.matching.features import FeatureExtractor
from clientregistry.matching.rules import BASE_SCORE, default_rules, parse_rules
from clientregistry.matching.scoring import Scorer


def _person(
    given: list[str],
    family: str = "Okello",
    birth: str | None = "1980-03-04",
    gender: str = "female",
    line: str | None = None,
    postcode: str | None = None,
) -> dict[str, Any]:
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "name": [{"family": family, "given": given}],
        "gender": gender,
    }
    if birth:
        patient["birthDate"] = birth
    if line or postcode:
        address: dict[str, Any] = {}
        if line:
            address["line"] = [line]
        if postcode:
            address["postalCode"] = postcode
        patient["address"] = [address]
    return patient


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return Scorer(FeatureExtractor(default_rules()))


def _score(scorer: Scorer, a: dict[str, Any], b: dict[str, Any]) -> float:
    fa, fb = scorer.extractor.extract(a), scorer.extractor.extract(b)
    result = scorer.exact_score(fa, fb)
    assert result is not None
    fast = scorer.score(fa, fb)
    assert fast is not None and fast.decision == result.decision
    return result.score


def test_a_middle_initial_agrees_with_the_name_it_starts(scorer: Scorer) -> None:
    full = _person(["Zaria", "Josephine"], birth=None)
    initial = _person(["Zaria", "J"], birth=None)
    other = _person(["Zaria", "K"], birth=None)
    assert _score(scorer, full, initial) > _score(scorer, full, other)
    # the first given name alone is compared as the first given name, not "zaria j"
    notes = {
        n.field: n
        for n in scorer.explain(scorer.extractor.extract(full), scorer.extractor.extract(initial))[
            0
        ].fields
    }
    assert notes["given"].level.startswith("level 1")
    assert "initial" in notes["middle"].level
    assert notes["middle"].contribution > 0


def test_a_middle_name_missing_on_one_side_is_neutral(scorer: Scorer) -> None:
    with_middle = _person(["Grace", "Achieng"])
    without = _person(["Grace"])
    assert _score(scorer, with_middle, without) == pytest.approx(
        _score(scorer, without, _person(["Grace"]))
    )


def test_first_name_among_the_other_records_middle_names_agrees(scorer: Scorer) -> None:
    second_used = _person(["Achieng"])
    both = _person(["Grace", "Achieng"])
    stranger = _person(["Mary"])
    assert _score(scorer, second_used, both) > _score(scorer, stranger, both) + 1


def test_swapped_day_and_month_count_for(scorer: Scorer) -> None:
    a = _person(["Grace"], birth="1980-03-04")
    swapped = _person(["Grace"], birth="1980-04-03")
    missing = _person(["Grace"], birth=None)
    other = _person(["Grace"], birth="1971-10-25")
    assert _score(scorer, a, swapped) > _score(scorer, a, missing) > _score(scorer, a, other)


def test_a_household_member_is_no_match_on_family_name_and_address(scorer: Scorer) -> None:
    """Same family name and address line, another given name, no birth date to tell: a
    relative, not the same person. The family name and the address line are one household's
    evidence and count once."""
    rules = default_rules().rule_sets[0]
    one = _person(["Grace"], line="12 Kampala Road")
    sister = _person(["Sarah"], birth=None, line="12 Kampala Road")
    assert _score(scorer, one, sister) < rules.potential_threshold
    fa, fb = scorer.extractor.extract(one), scorer.extractor.extract(sister)
    notes = {n.field: n for n in scorer.explain(fa, fb)[0].fields}
    assert "counted once" in notes["family"].level
    same = _person(["Grace"], birth=None, line="12 Kampala Road")
    assert _score(scorer, one, same) >= rules.auto_threshold


RULES: dict[str, Any] = {
    "rules": [
        {
            "matchingType": "probabilistic",
            "null_handling": "moderate",
            "fields": {
                "line": {
                    "fhirpath": "address.first().line",
                    "group": "place",
                    "algorithm": "exact",
                    "mValue": 0.9,
                    "uValue": 0.001,
                },
                "postcode": {
                    "fhirpath": "address.first().postalCode",
                    "group": "place",
                    "algorithm": "exact",
                    "mValue": 0.9,
                    "uValue": 0.01,
                },
            },
            "potentialMatchThreshold": 100,
            "autoMatchThreshold": 101,
        }
    ]
}


@pytest.mark.parametrize("share", [None, 0.0, 0.25, 1.0])
def test_group_share_counts_the_other_agreements_at_a_share(share: float | None) -> None:
    document = {"rules": [dict(RULES["rules"][0])]}
    if share is not None:
        document["rules"][0]["groupShare"] = share
    rules = parse_rules(document)
    scorer = Scorer(FeatureExtractor(rules))
    a = scorer.extractor.extract(_person(["A"], line="1 Main St", postcode="111"))
    b = scorer.extractor.extract(_person(["B"], line="1 Main St", postcode="111"))
    line, postcode = (f.levels[0].weight for f in rules.rule_sets[0].fields)
    expected = BASE_SCORE + line + (share or 0.0) * postcode
    exact = scorer.exact_score(a, b)
    fast = scorer.score(a, b)
    assert exact is not None and fast is not None
    assert exact.score == pytest.approx(expected)
    assert fast.score == pytest.approx(expected)
    (explained,) = scorer.explain(a, b)
    assert BASE_SCORE + sum(n.contribution for n in explained.fields) == pytest.approx(expected)
    assert rules.rule_sets[0].max_score() == pytest.approx(expected)
    round_trip = rules.to_json()["rules"][0]
    assert round_trip.get("groupShare", 0.0) == (share or 0.0)


def test_group_share_outside_zero_to_one_is_a_problem() -> None:
    document = {"rules": [{**RULES["rules"][0], "groupShare": 1.5}]}
    with pytest.raises(RuleSetError, match="groupShare"):
        parse_rules(document)
