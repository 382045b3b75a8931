"""Tests of blocking: the in-memory index, key-group planning and blocking keys."""

from __future__ import annotations

import copy
import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clientregistry.errors import RuleSetError
from clientregistry.matching import blocking
from clientregistry.matching.blocking import (
    Blocker,
    CandidateSet,
    MemoryIndex,
    field_keys,
    plan_key_groups,
    union_candidates,
)
from clientregistry.matching.features import FeatureExtractor
from clientregistry.matching.matcher import Matcher
from clientregistry.matching.rules import (
    DecisionRules,
    default_rules,
    load_rules,
    parse_rules,
)
from clientregistry.matching.scoring import Scorer

# ----------------------------------------------------------------------------- MemoryIndex


def test_memory_index_add_and_candidates() -> None:
    index = MemoryIndex()
    index.add("r1", ["a", "b"])
    index.add("r2", ["b", "c"])
    index.add("r3", ["c"])
    assert len(index) == 3
    assert index.candidates(["a"], 10) == CandidateSet(["r1"], False, 1)
    assert index.candidates(["b"], 10) == CandidateSet(["r1", "r2"], False, 2)
    result = index.candidates(["a", "b", "c"], 10)
    assert sorted(result.ids) == ["r1", "r2", "r3"]
    assert (result.capped, result.considered) == (False, 3)
    assert index.candidates(["zzz"], 10) == CandidateSet([], False, 0)
    assert index.candidates([], 10) == CandidateSet([], False, 0)


def test_memory_index_remove() -> None:
    index = MemoryIndex()
    index.add("r1", ["a", "b"])
    index.add("r2", ["b"])
    index.remove("r1", ["a", "b"])
    assert len(index) == 1  # 'a' has no records left and is gone
    assert index.candidates(["a", "b"], 10) == CandidateSet(["r2"], False, 1)
    index.remove("r1", ["b"])  # not there: no error, nothing changes
    index.remove("r9", ["nope"])
    assert index.candidates(["b"], 10).ids == ["r2"]
    index.remove("r2", ["b"])
    assert len(index) == 0
    assert index.candidates(["b"], 10) == CandidateSet([], False, 0)


def test_cap_keeps_records_sharing_most_keys() -> None:
    index = MemoryIndex()
    keys = ["k1", "k2", "k3"]
    # r0 shares one key, r1 two keys, r2 three keys, r3 one key: added in that order
    index.add("r0", ["k1"])
    index.add("r1", ["k1", "k2"])
    index.add("r2", keys)
    index.add("r3", ["k3"])
    index.add("other", ["elsewhere"])
    result = index.candidates(keys, 2)
    assert result.ids == ["r2", "r1"]
    assert result.capped is True
    assert result.considered == 4
    result = index.candidates(keys, 3)
    assert result.ids[:2] == ["r2", "r1"]
    assert set(result.ids[2:]) <= {"r0", "r3"}
    assert len(result.ids) == 3
    assert index.candidates(keys, 4).capped is False


def test_cap_on_a_single_key() -> None:
    index = MemoryIndex()
    for i in range(5):
        index.add(i, ["k"])
    result = index.candidates(["k"], 3)
    assert result.capped is True
    assert result.considered == 5
    assert len(result.ids) == 3
    assert set(result.ids) <= set(range(5))
    assert index.candidates(["k"], 5) == CandidateSet([0, 1, 2, 3, 4], False, 5)


def test_uncapped_candidates_are_best_first() -> None:
    index = MemoryIndex()
    index.add("one key", ["x"])
    index.add("two keys", ["x", "y"])
    assert index.candidates(["x", "y"], 10).ids == ["two keys", "one key"]


def test_union_candidates_keeps_first_seen_order() -> None:
    results = [CandidateSet(["a", "b"], False, 2), CandidateSet(["c", "a"], True, 9)]
    assert union_candidates(results) == ["a", "b", "c"]
    assert union_candidates([]) == []


# ----------------------------------------------------------------------------- planning


def _deterministic(
    fields: dict[str, dict[str, Any]], potential: float, **extra: Any
) -> DecisionRules:
    rule_set = {
        "matchingType": "deterministic",
        "fields": fields,
        "potentialMatchThreshold": potential,
        "autoMatchThreshold": potential + 1,
    }
    rule_set.update(extra)
    return parse_rules({"rules": [rule_set]})


def _names(rules: DecisionRules, groups: list[tuple[int, ...]]) -> list[tuple[str, ...]]:
    fields = rules.rule_sets[0].fields
    return [tuple(fields[i].name for i in group) for group in groups]


def test_a_field_that_alone_reaches_the_threshold_is_a_single_key() -> None:
    rules = _deterministic(
        {
            "nid": {"algorithm": "exact", "fhirpath": "identifier.value", "weight": 5},
            "given": {"algorithm": "exact", "fhirpath": "name.given", "weight": 2},
            "family": {"algorithm": "exact", "fhirpath": "name.family", "weight": 2},
            "birth": {"algorithm": "exact", "fhirpath": "birthDate", "weight": 2},
        },
        potential=4,
    )
    groups = _names(rules, plan_key_groups(rules.rule_sets[0]))
    assert groups[0] == ("nid",)
    assert all(len(group) == 2 for group in groups[1:])
    # every pair of the 2-weight fields reaches 4: each needs a key of its own
    assert set(groups[1:]) == {("given", "family"), ("given", "birth"), ("family", "birth")}


def test_weak_fields_are_keys_in_pairs() -> None:
    rules = _deterministic(
        {
            "given": {"algorithm": "exact", "fhirpath": "name.given"},
            "family": {"algorithm": "exact", "fhirpath": "name.family"},
            "phone": {"algorithm": "exact", "fhirpath": "telecom.value"},
        },
        potential=2,
    )
    assert _names(rules, plan_key_groups(rules.rule_sets[0])) == [
        ("given", "family"),
        ("given", "phone"),
        ("family", "phone"),
    ]


def test_minimal_sets_of_three_become_their_most_selective_pair() -> None:
    rules = _deterministic(
        {
            "given": {"algorithm": "exact", "fhirpath": "name.given"},
            "family": {"algorithm": "exact", "fhirpath": "name.family"},
            "phone": {"algorithm": "exact", "fhirpath": "telecom.value"},
        },
        potential=3,
    )
    # phone is more selective than names
    assert _names(rules, plan_key_groups(rules.rule_sets[0])) == [("given", "phone")]


def test_explicit_blocking_is_used() -> None:
    rules = _deterministic(
        {
            "given": {"algorithm": "exact", "fhirpath": "name.given"},
            "family": {"algorithm": "exact", "fhirpath": "name.family"},
            "phone": {"algorithm": "exact", "fhirpath": "telecom.value"},
        },
        potential=1,
        blocking=[["family"], ["phone", "given"]],
    )
    assert plan_key_groups(rules.rule_sets[0]) == [(1,), (2, 0)]
    blocker = Blocker(FeatureExtractor(rules))
    assert blocker.describe() == ["rule set 1: family", "rule set 1: phone + given"]


def test_default_rules_use_their_explicit_blocking() -> None:
    rs = default_rules().rule_sets[0]
    names = [f.name for f in rs.fields]
    groups = plan_key_groups(rs)
    assert [tuple(names[i] for i in g) for g in groups] == [
        tuple(item.partition(":")[0] for item in g) for g in rs.blocking
    ]


def _born_on_one_day(given: str, family: str) -> dict[str, Any]:
    return {"name": [{"given": [given], "family": family}], "birthDate": "1990-02-17"}


def test_a_birth_date_and_an_initial_meet_when_both_names_are_mistyped() -> None:
    """ "Rusell Msos" / "Russekll Moss", born the same day: no name code in common, but the
    full birth date with a name's first letter is a key of both (either name's letter: given
    and family name may be swapped); another initial, or another day, is not."""
    matcher = Matcher(default_rules())
    a = set(matcher.prepare(_born_on_one_day("Rusell", "Msos")).keys)
    b = set(matcher.prepare(_born_on_one_day("Russekll", "Moss")).keys)
    shared = a & b
    assert shared and all("birthDate:value" in key for key in shared)
    other = set(matcher.prepare(_born_on_one_day("Thomas", "Garza")).keys)
    assert not a & other
    later = _born_on_one_day("Russekll", "Moss") | {"birthDate": "1990-02-18"}
    assert not {k for k in a & set(matcher.prepare(later).keys) if "birthDate:value" in k}
    swapped = set(matcher.prepare(_born_on_one_day("Mosss", "Rusel")).keys)
    assert a & swapped


def test_key_transforms_in_explicit_groups() -> None:
    rules = _deterministic(
        {
            "given": {
                "algorithm": "jaro-winkler-similarity",
                "threshold": 0.9,
                "fhirpath": "name.given",
            },
            "birth": {"algorithm": "dateDamerau", "threshold": 1, "fhirpath": "birthDate"},
        },
        potential=2,
        blocking=[["given:initial", "birth:value"], ["birth"]],
    )
    blocker = Blocker(FeatureExtractor(rules))
    assert blocker.describe() == ["rule set 1: given:initial + birth:value", "rule set 1: birth"]
    features = blocker.extractor.extract(
        {"name": [{"given": ["Grace"]}], "birthDate": "1974-12-25"}
    )
    keys = blocker.keys(features)
    assert "0|given:initial+birth:value|g|1974-12-25" in keys
    assert keys == blocker.keys_slowly(features)
    assert rules.rule_sets[0].blocking == (("given:initial", "birth:value"), ("birth",))
    again = parse_rules(rules.to_json())
    assert Blocker(FeatureExtractor(again)).keys(features) == keys


@pytest.mark.parametrize("item", ["given:soundex", "given:", "nope:initial"])
def test_an_unknown_key_transform_or_field_is_refused(item: str) -> None:
    with pytest.raises(RuleSetError) as caught:
        _deterministic(
            {"given": {"algorithm": "exact", "fhirpath": "name.given"}},
            potential=1,
            blocking=[[item]],
        )
    assert [p.location for p in caught.value.problems] == ["rules[0].blocking[0]"]


def test_the_key_signature_follows_the_key_groups_only() -> None:
    """The digest a registry keeps of how its records' keys were made: the same for the same
    groups (whatever the weights), another when a group is added."""
    document = default_rules().to_json()
    same = copy.deepcopy(document)
    same["rules"][0]["fields"]["given"]["levels"][0]["mValue"] = 0.8
    more = copy.deepcopy(document)
    more["rules"][0]["blocking"].append(["gender", "birthDate:value"])

    def signature(doc: dict[str, Any]) -> str:
        return Blocker(FeatureExtractor(parse_rules(doc))).signature()

    assert signature(document) == signature(same)
    assert signature(document) != signature(more)
    assert len(signature(document)) == 64


def test_opencr_decision_rules_minimal_sets_are_covered(reference_dir: Path) -> None:
    rules = load_rules(reference_dir / "opencr" / "config" / "decisionRules.json")
    rs = rules.rule_sets[0]
    assert len(rs.fields) == 6
    assert all(f.weight == 1 for f in rs.fields)
    assert rs.potential_threshold == 4
    groups = plan_key_groups(rs)
    assert groups
    assert all(len(group) == 2 for group in groups)  # no single field reaches 4
    for minimal in itertools.combinations(range(6), 4):
        assert any(set(group) <= set(minimal) for group in groups), minimal


def _six_exact_fields(potential: float) -> DecisionRules:
    return _deterministic(
        {
            "given": {"algorithm": "exact", "fhirpath": "name.given"},
            "family": {"algorithm": "exact", "fhirpath": "name.family"},
            "birth": {"algorithm": "exact", "fhirpath": "birthDate"},
            "phone": {"algorithm": "exact", "fhirpath": "telecom.value"},
            "nid": {"algorithm": "exact", "fhirpath": "identifier.where(system='n').value"},
            "art": {"algorithm": "exact", "fhirpath": "identifier.where(system='a').value"},
        },
        potential=potential,
    )


@pytest.mark.parametrize("potential", [1, 2, 3, 4])
def test_minimal_sets_are_covered_for_every_threshold(potential: int) -> None:
    rs = _six_exact_fields(potential).rule_sets[0]
    groups = plan_key_groups(rs)
    for minimal in itertools.combinations(range(6), potential):
        assert any(set(group) <= set(minimal) for group in groups), minimal


@pytest.mark.parametrize("potential", [5, 6])
def test_minimal_sets_of_five_or_six_are_covered(potential: int) -> None:
    rs = _six_exact_fields(potential).rule_sets[0]
    groups = plan_key_groups(rs)
    for minimal in itertools.combinations(range(6), potential):
        assert any(set(group) <= set(minimal) for group in groups), minimal


def _many_fields(count: int) -> DecisionRules:
    """A strong identifier (weight 10 = the potential threshold) and ``count`` weak fields."""
    fields: dict[str, dict[str, Any]] = {
        "nid": {
            "algorithm": "exact",
            "fhirpath": "identifier.where(system='n').value",
            "weight": 10,
        }
    }
    for i in range(count):
        fields[f"f{i}"] = {
            "algorithm": "exact",
            "fhirpath": f"extension.where(url='{i}').valueString",
        }
    return _deterministic(fields, potential=10, null_handling="moderate")


def test_strong_field_is_a_single_key_among_several_fields() -> None:
    rules = _many_fields(8)
    assert plan_key_groups(rules.rule_sets[0]) == [(0,)]


def test_strong_field_is_a_single_key_among_many_fields() -> None:
    rules = _many_fields(12)  # 13 fields
    matcher = Matcher(rules)
    a = matcher.prepare(
        {
            "identifier": [{"system": "n", "value": "1"}],
            "extension": [{"url": "0", "valueString": "x"}],
        }
    )
    b = matcher.prepare(
        {
            "identifier": [{"system": "n", "value": "1"}],
            "extension": [{"url": "0", "valueString": "y"}],
        }
    )
    result = matcher.scorer.score(a.features, b.features)
    assert result is not None and result.decision == "potential"
    assert set(a.keys) & set(b.keys)


# ----------------------------------------------------------------------------- keys

FULL = {
    "resourceType": "Patient",
    "name": [{"use": "official", "given": ["Namaalwa", "Emmanuel"], "family": "Gideon"}],
    "gender": "male",
    "birthDate": "1974-12-25",
    "telecom": [{"system": "phone", "value": "774 232423"}],
    "identifier": [
        {"system": "http://clientregistry.org/nationalid", "value": "NID-1"},
        {"system": "http://clientregistry.org/artnumber", "value": "ART-9"},
    ],
}


def _disagreeing(patient: dict[str, Any], keep: set[str]) -> dict[str, Any]:
    """``patient`` with every field of decisionRules.json outside ``keep`` changed."""
    out = copy.deepcopy(patient)
    name = out["name"][0]
    if "given" not in keep:
        name["given"] = ["Zed"]
    if "family" not in keep:
        name["family"] = "Xu"
    if "birthdate" not in keep:
        out["birthDate"] = "2001-01-01"
    if "phone" not in keep:
        out["telecom"] = [{"system": "phone", "value": "700 000001"}]
    identifiers = []
    if "nationalid" in keep:
        identifiers.append(out["identifier"][0])
    else:
        identifiers.append({"system": "http://clientregistry.org/nationalid", "value": "NID-2"})
    if "art" in keep:
        identifiers.append(out["identifier"][1])
    else:
        identifiers.append({"system": "http://clientregistry.org/artnumber", "value": "ART-2"})
    out["identifier"] = identifiers
    return out


def test_records_agreeing_on_a_minimal_set_share_a_key(reference_dir: Path) -> None:
    rules = load_rules(reference_dir / "opencr" / "config" / "decisionRules.json")
    matcher = Matcher(rules)
    names = [f.name for f in rules.rule_sets[0].fields]
    full = matcher.prepare(FULL)
    for keep in itertools.combinations(names, 4):
        other = matcher.prepare(_disagreeing(FULL, set(keep)))
        result = matcher.scorer.score(full.features, other.features)
        assert result is not None
        assert (result.score, result.decision) == (4.0, "potential"), keep  # two disagree
        assert set(full.keys) & set(other.keys), keep
    # agreeing on three fields is not enough to score and need not share keys
    other = matcher.prepare(_disagreeing(FULL, {"given", "family", "birthdate"}))
    three = matcher.scorer.exact_score(full.features, other.features)
    assert three is not None
    assert three.score == 3.0
    assert not set(full.keys) & set(other.keys)


def test_records_agreeing_on_a_group_share_a_key(reference_dir: Path) -> None:
    rules = load_rules(reference_dir / "opencr" / "config" / "decisionRules.json")
    rs = rules.rule_sets[0]
    matcher = Matcher(rules)
    full = matcher.prepare(FULL)
    for group in plan_key_groups(rs):
        keep = {rs.fields[i].name for i in group}
        other = matcher.prepare(_disagreeing(FULL, keep))
        assert set(full.keys) & set(other.keys), keep


def test_filters_are_part_of_every_key(reference_dir: Path) -> None:
    rules = load_rules(reference_dir / "opencr" / "config" / "decisionRules.json")
    matcher = Matcher(rules)
    full = matcher.prepare(FULL)
    same = matcher.prepare(copy.deepcopy(FULL))
    assert full.keys
    assert set(full.keys) == set(same.keys)
    female = copy.deepcopy(FULL)
    female["gender"] = "female"
    other = matcher.prepare(female)
    assert other.keys
    assert not set(full.keys) & set(other.keys)
    assert all("|male|" in key for key in full.keys)
    no_gender = copy.deepcopy(FULL)
    del no_gender["gender"]
    assert not set(full.keys) & set(matcher.prepare(no_gender).keys)


def test_phonetic_blocks_are_part_of_every_key() -> None:
    rules = _deterministic(
        {
            "sound": {"algorithm": "phonetic", "fhirpath": "name.family"},
            "birth": {"algorithm": "exact", "fhirpath": "birthDate"},
        },
        potential=1,
    )
    blocker = Blocker(FeatureExtractor(rules))
    extract = blocker.extractor.extract

    def keys(family: str) -> set[str]:
        return set(blocker.keys(extract({"name": [{"family": family}], "birthDate": "1974-12-25"})))

    assert keys("Smith") & keys("Smyth")
    assert not keys("Smith") & keys("Jones")


def test_missing_values_give_no_keys() -> None:
    rules = _deterministic(
        {
            "given": {"algorithm": "exact", "fhirpath": "name.given"},
            "b": {"algorithm": "exact", "fhirpath": "birthDate"},
        },
        potential=2,
    )
    blocker = Blocker(FeatureExtractor(rules))
    assert blocker.keys(blocker.extractor.extract({"name": [{"given": ["Ann"]}]})) == []
    assert len(blocker.keys(blocker.extractor.extract(FULL))) == 1


def _date_blocker(algorithm: str, threshold: float | None) -> Blocker:
    birth: dict[str, Any] = {"algorithm": algorithm, "fhirpath": "birthDate", "weight": 2}
    if threshold is not None:
        birth["threshold"] = threshold
    rules = _deterministic({"birth": birth}, potential=2)
    return Blocker(FeatureExtractor(rules))


@pytest.mark.parametrize(
    "typo",
    ["1974-12-26", "1974-12-15", "1974-11-25", "1974-02-25", "1975-12-25", "1947-12-25"],
)
def test_fuzzy_date_keys_survive_one_typo(typo: str) -> None:
    blocker = _date_blocker("dateDamerau", 1)
    original = set(blocker.keys(blocker.extractor.extract({"birthDate": "1974-12-25"})))
    typoed = set(blocker.keys(blocker.extractor.extract({"birthDate": typo})))
    assert original & typoed
    assert not original & set(blocker.keys(blocker.extractor.extract({"birthDate": "2001-06-03"})))


def test_exact_date_keys_are_the_date() -> None:
    blocker = _date_blocker("exact", None)
    keys = blocker.keys(blocker.extractor.extract({"birthDate": "1974-12-25"}))
    assert keys == ["0|birth|1974-12-25"]  # rule set 0, group named by its field
    assert not set(keys) & set(blocker.keys(blocker.extractor.extract({"birthDate": "1974-12-26"})))


def test_field_keys() -> None:
    rules = _deterministic(
        {
            "birth": {"algorithm": "dateDamerau", "threshold": 1, "fhirpath": "birthDate"},
            "phone": {"algorithm": "levenshtein", "threshold": 1, "fhirpath": "telecom.value"},
            "exactphone": {"algorithm": "exact", "fhirpath": "telecom.value"},
            "given": {"algorithm": "jaro-winkler", "threshold": 0.9, "fhirpath": "name.given"},
            "exactgiven": {"algorithm": "jaro-winkler", "threshold": 1.0, "fhirpath": "name.given"},
            "gender": {"algorithm": "levenshtein", "threshold": 1, "fhirpath": "gender"},
            "ids": {"algorithm": "shared-identifier", "fhirpath": "identifier"},
        },
        potential=1,
    )
    by_name = {f.name: f for f in rules.rule_sets[0].fields}
    assert field_keys(by_name["birth"], "1974-12-25") == ["ym197412", "md1225", "yd197425"]
    assert field_keys(by_name["birth"], "1974-12") == ["1974-12"]
    assert field_keys(by_name["phone"], "774232423") == ["774232423", "t232423"]
    assert field_keys(by_name["phone"], "1234") == ["1234"]
    assert field_keys(by_name["exactphone"], "774232423") == ["774232423"]
    assert field_keys(by_name["given"], "namaalwa emmanuel") == ["NML", "AMNL"]
    # only the first few words give keys
    many = field_keys(by_name["given"], "a b c d e")
    assert 1 <= len(many) == blocking._MAX_TOKENS < 5
    assert many == ["A", "P", "K", "T", "A"][: len(many)]
    assert field_keys(by_name["exactgiven"], "namaalwa emmanuel") == ["namaalwa emmanuel"]
    assert field_keys(by_name["gender"], "male") == ["male"]
    assert field_keys(by_name["ids"], frozenset({"s|2", "s|1"})) == ["s|1", "s|2"]
    for f in by_name.values():
        assert field_keys(f, "") == []
    assert field_keys(by_name["ids"], frozenset()) == []


def test_fuzzy_names_sharing_sounds_share_keys(reference_dir: Path) -> None:
    rules = load_rules(
        reference_dir / "opencr" / "config" / "decisionRulesProbabilisticTemplate.json"
    )
    matcher = Matcher(rules)
    demo = reference_dir / "opencr" / "DemoData"
    p1 = matcher.prepare(json.loads((demo / "patient1_openmrs.json").read_text(encoding="utf-8")))
    p2 = matcher.prepare(json.loads((demo / "patient2_dhis2.json").read_text(encoding="utf-8")))
    assert set(p1.keys) & set(p2.keys)


def test_index_finds_the_demo_duplicates(reference_dir: Path) -> None:
    rules = load_rules(reference_dir / "opencr" / "config" / "decisionRules.json")
    matcher = Matcher(rules)
    scorer: Scorer = matcher.scorer
    index = MemoryIndex()
    demo = sorted((reference_dir / "opencr" / "DemoData").glob("*.json"))
    prepared = {p.name: matcher.prepare(json.loads(p.read_text(encoding="utf-8"))) for p in demo}
    for name, record in prepared.items():
        index.add(name, record.keys)
    first = prepared["patient1_openmrs.json"]
    found = index.candidates(first.keys, 10)
    assert set(found.ids) == set(prepared)
    for name in found.ids:
        result = scorer.score(first.features, prepared[name].features)
        assert result is not None and result.score >= 4.0


def test_swapped_names_share_a_key_under_default_rules() -> None:
    matcher = Matcher(default_rules())
    a = matcher.prepare({"name": [{"given": ["Namaalwa"], "family": "Gideon"}]})
    b = matcher.prepare({"name": [{"given": ["Gideon"], "family": "Namaalwa"}]})
    c = matcher.prepare({"name": [{"given": ["Okello"], "family": "Namaalwa"}]})
    assert a.keys
    assert set(a.keys) & set(b.keys)
    assert not set(a.keys) & set(c.keys)


# ----------------------------------------------------------------------------- generated keys

_WORDS = ["ann", "bob lee", "smith", "smyth", "o brien", "nam gideon emmanuel", "", "7"]
_DATES = ["1974-12-25", "1974-12-52", "1975-01-02", "1974", "1974-12", ""]


def _key_rule_sets() -> list[DecisionRules]:
    """Rules exercising every kind of key: filters, phonetic blocks, swapped names, groups of
    one, two and three fields, identifier sets, several rule sets."""
    fields: dict[str, dict[str, Any]] = {
        "given": {
            "algorithm": "jaro-winkler-similarity",
            "threshold": 0.9,
            "fhirpath": "name.given",
        },
        "family": {
            "algorithm": "jaro-winkler-similarity",
            "threshold": 0.9,
            "fhirpath": "name.family",
        },
        "birth": {"algorithm": "dateDamerau", "threshold": 1, "fhirpath": "birthDate"},
        "phone": {
            "algorithm": "levenshtein",
            "threshold": 1,
            "fhirpath": "telecom.where(system='phone').value",
        },
        "ids": {"algorithm": "shared-identifier", "fhirpath": "identifier"},
    }
    three = _deterministic(
        fields,
        potential=3,
        blocking=[
            ["given", "family", "birth"],
            ["ids"],
            ["phone", "birth"],
            ["family:initial", "birth:value", "given:initial"],
        ],
    )
    filtered = _deterministic(
        {**fields, "sound": {"algorithm": "phonetic", "fhirpath": "name.family"}},
        potential=2,
        filters={"gender": {"fhirpath": "gender"}},
    )
    both = parse_rules(
        {
            "rules": [
                {
                    "matchingType": "deterministic",
                    "fields": fields,
                    "potentialMatchThreshold": 2,
                    "autoMatchThreshold": 3,
                },
                {
                    "matchingType": "deterministic",
                    "fields": {"birth": {"algorithm": "exact", "fhirpath": "birthDate"}},
                    "filters": {"gender": {"fhirpath": "gender"}},
                    "potentialMatchThreshold": 1,
                    "autoMatchThreshold": 1,
                },
            ]
        }
    )
    return [default_rules(), three, filtered, both]


_KEY_BLOCKERS = [Blocker(FeatureExtractor(rules)) for rules in _key_rule_sets()]

_key_patients = st.fixed_dictionaries(
    {
        "resourceType": st.just("Patient"),
        "name": st.lists(
            st.fixed_dictionaries(
                {
                    "given": st.lists(st.sampled_from(_WORDS), max_size=2),
                    "family": st.sampled_from(_WORDS),
                }
            ),
            max_size=2,
        ),
        "gender": st.sampled_from(["male", "female", ""]),
        "telecom": st.lists(
            st.fixed_dictionaries(
                {"system": st.just("phone"), "value": st.sampled_from(["0772 410233", "1", ""])}
            ),
            max_size=2,
        ),
        "identifier": st.lists(
            st.fixed_dictionaries(
                {
                    "system": st.sampled_from(["http://x.org/id", "http://y.org/id"]),
                    "value": st.sampled_from(["12349", "CF-219", "x"]),
                }
            ),
            max_size=2,
        ),
        "address": st.lists(
            st.fixed_dictionaries(
                {
                    "line": st.lists(st.sampled_from(_WORDS), max_size=2),
                    "city": st.sampled_from(_WORDS),
                    "postalCode": st.sampled_from(["3046", "0812", ""]),
                }
            ),
            max_size=1,
        ),
    },
    optional={"birthDate": st.sampled_from([d for d in _DATES if d])},
)


@settings(max_examples=300, deadline=None)
@given(_key_patients)
def test_generated_keys_equal_the_plain_loop(patient: dict[str, Any]) -> None:
    for blocker in _KEY_BLOCKERS:
        features = blocker.extractor.extract(patient)
        assert blocker.keys(features) == blocker.keys_slowly(features)


def _most_common_reference(index: MemoryIndex, keys: list[str], limit: int) -> CandidateSet:
    """The index's answer as ``Counter.most_common`` gives it (what the index promises)."""
    lists = [found for key in keys if (found := index._postings.get(key))]
    if not lists:
        return CandidateSet([], False, 0)
    if len(lists) == 1:
        only = lists[0]
        if len(only) <= limit:
            return CandidateSet(list(only), False, len(only))
        return CandidateSet(only[-limit:], True, len(only))
    counts: Counter[Any] = Counter()
    for found in lists:
        counts.update(found)
    best = [record for record, _ in counts.most_common(limit)]
    return CandidateSet(best, len(counts) > limit, len(counts))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(st.sampled_from("abcdefg"), max_size=4), max_size=30),
    st.lists(st.sampled_from("abcdefgh"), max_size=5),
    st.integers(min_value=1, max_value=12),
)
def test_candidates_rank_as_most_common_does(
    records: list[list[str]], keys: list[str], limit: int
) -> None:
    index = MemoryIndex()
    for position, record_keys in enumerate(records):
        index.add(position, list(dict.fromkeys(record_keys)))
    keys = list(dict.fromkeys(keys))
    assert index.candidates(keys, limit) == _most_common_reference(index, keys, limit)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.sampled_from("abcdefg"), max_size=4), max_size=30),
    st.integers(min_value=1, max_value=6),
)
def test_find_then_add_is_candidates_then_add(records: list[list[str]], limit: int) -> None:
    one, two = MemoryIndex(), MemoryIndex()
    for position, record_keys in enumerate(records):
        keys = list(dict.fromkeys(record_keys))
        expected = one.candidates(keys, limit)
        one.add(position, keys)
        assert two.find_then_add(position, keys, limit) == expected
    assert one._postings == two._postings


def test_keys_do_not_depend_on_the_order_of_the_fields_in_the_rules() -> None:
    """The built-in rules' given name may be swapped with the family name (a two-way swap:
    one tag for both) and crossed one way with the middle names (no shared tag): a rules file
    listing its fields in another order (the Spark engine sends them sorted) gives the same
    keys, so both engines block alike."""
    document = default_rules().to_json()
    shuffled = copy.deepcopy(document)
    for rule_set in shuffled["rules"]:
        rule_set["fields"] = dict(sorted(rule_set["fields"].items()))
    patient = {
        "name": [{"family": "Okello", "given": ["Grace", "Akinyi"]}],
        "birthDate": "1980-03-04",
        "gender": "female",
        "address": [{"line": ["4 Kira Road"], "city": "Kampala", "postalCode": "256"}],
    }
    keys = []
    for rules in (parse_rules(document, source="a"), parse_rules(shuffled, source="b")):
        matcher = Matcher(rules)
        keys.append(sorted(matcher.blocker.keys(matcher.extractor.extract(patient))))
    assert keys[0] == keys[1]
    assert any("|family+birthDate|" in key for key in keys[0])
