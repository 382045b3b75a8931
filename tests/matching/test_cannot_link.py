"""Cannot-links: a different value of a unique identifier system, a score below the
potential-match threshold, and re-reading a classification with them."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import pytest

from clientregistry.matching.cannot_link import MAX_MEMBERS, CannotLinks, consistent
from clientregistry.matching.classify import Candidate, classify
from clientregistry.matching.features import Features
from clientregistry.matching.matcher import Matcher
from clientregistry.matching.rules import DecisionRules, default_rules, parse_rules
from clientregistry.matching.scoring import PairScore

SSN = "http://hl7.org/fhir/sid/us-ssn"
MRN = "urn:example:mrn:lab"


def seedling(n: int, *identifiers: tuple[str, str]) -> dict[str, Any]:
    """The issue's reproduction: Sam Seedling<n>, male, born 1960-02-<n>."""
    return {
        "resourceType": "Patient",
        "name": [{"family": f"Seedling{n}", "given": ["Sam"]}],
        "gender": "male",
        "birthDate": f"1960-02-{n:02d}",
        "identifier": [{"system": s, "value": v} for s, v in identifiers],
    }


def unique_rules(systems: object = "default") -> DecisionRules:
    """The default rules with their identifier field's ``uniqueSystems`` set."""
    raw = default_rules().to_json()
    raw["rules"][0]["fields"]["identifier"]["uniqueSystems"] = systems
    return parse_rules(raw)


def features(matcher: Matcher, resource: dict[str, Any]) -> Features:
    return matcher.prepare(resource).features


def test_a_record_far_from_another_contradicts_it() -> None:
    matcher = Matcher(default_rules())
    cannot = CannotLinks(matcher.scorer)
    first, second, seventeenth = (features(matcher, seedling(n)) for n in (1, 2, 17))
    assert not cannot.contradicts(first, second)  # neighbours match
    assert cannot.contradicts(first, seventeenth)  # 102.5: no potential match
    # one member of two that is no match is not enough; most members are
    assert not cannot.rejects(first, [second, seventeenth])
    assert cannot.rejects(first, [second, seventeenth, seventeenth])
    assert not cannot.rejects(first, [second])
    strict = CannotLinks(matcher.scorer, no_match_share=0.0)
    assert strict.rejects(first, [second, seventeenth])
    lenient = CannotLinks(matcher.scorer, no_match_share=1.0)
    assert not lenient.rejects(first, [seventeenth])


def test_a_different_value_of_a_unique_system_contradicts() -> None:
    matcher = Matcher(unique_rules())
    cannot = CannotLinks(matcher.scorer)
    base = seedling(1, (SSN, "123-45-6789"), (MRN, "A1"))
    same = features(matcher, base)
    other = features(matcher, {**base, "identifier": [{"system": SSN, "value": "987-65-4321"}]})
    typo = features(matcher, {**base, "identifier": [{"system": SSN, "value": "123-45-6788"}]})
    other_mrn = features(matcher, {**base, "identifier": [{"system": MRN, "value": "Z9"}]})
    assert cannot.identifiers_differ(same, other)
    assert cannot.contradicts(same, other)  # whatever the rest says
    assert cannot.rejects(same, [same, same, other])  # one such member is enough
    assert not cannot.identifiers_differ(same, typo)  # one edit: a typo
    assert not cannot.identifiers_differ(same, other_mrn)  # a record number: not unique
    assert not cannot.contradicts(same, same)


@pytest.mark.parametrize("rules", [default_rules(), unique_rules([])], ids=["unset", "empty"])
def test_no_unique_systems_means_no_identifier_cannot_links(rules: DecisionRules) -> None:
    matcher = Matcher(rules)
    cannot = CannotLinks(matcher.scorer)
    base = seedling(1, (SSN, "123-45-6789"))
    other = {**base, "identifier": [{"system": SSN, "value": "987-65-4321"}]}
    assert not cannot.identifiers_differ(features(matcher, base), features(matcher, other))


def test_only_the_first_members_are_checked() -> None:
    matcher = Matcher(default_rules())
    cannot = CannotLinks(matcher.scorer)
    first, second, seventeenth = (features(matcher, seedling(n)) for n in (1, 2, 17))
    assert not cannot.rejects(first, [second] * MAX_MEMBERS + [seventeenth] * MAX_MEMBERS)


def _candidate(record: Hashable, golden: Hashable, decision: str, strength: float) -> Candidate:
    return Candidate(record, golden, PairScore(105 + strength, decision, 0), strength)  # type: ignore[arg-type]


def test_consistent_keeps_an_accepted_golden_record() -> None:
    result = classify([_candidate("a", "G", "auto", 2.0), _candidate("b", "H", "auto", 1.0)])
    assert consistent(result, lambda golden, _: True) is result


def test_consistent_tries_the_next_golden_record() -> None:
    result = classify(
        [
            _candidate("a", "G", "auto", 2.0),
            _candidate("b", "H", "auto", 1.0),
            _candidate("c", "H", "potential", -1.0),
            _candidate("d", "K", "potential", -1.5),
        ]
    )
    out = consistent(result, lambda golden, _: golden != "G")
    assert out.golden_id == "H"
    assert [c.record_id for c in out.auto] == ["b", "c"]
    assert [c.record_id for c in out.conflicts] == ["a"]
    assert [c.record_id for c in out.potential] == ["d"]


def test_consistent_leaves_a_record_alone_when_no_golden_record_accepts_it() -> None:
    result = classify([_candidate("a", "G", "auto", 2.0), _candidate("c", "G", "potential", -1)])
    out = consistent(result, lambda golden, _: False)
    assert out.golden_id is None and out.auto == []
    assert [c.record_id for c in out.conflicts] == ["a"]
    assert [c.record_id for c in out.potential] == ["c"]
