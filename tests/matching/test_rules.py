"""Tests of decision-rules loading: OpenCR's files, the legacy form, errors, round trip."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest

from clientregistry.errors import ConfigError, RuleSetError
from clientregistry.matching.features import FeatureExtractor
from clientregistry.matching.rules import (
    BASE_SCORE,
    DecisionRules,
    default_rules,
    infer_value_type,
    load_rules,
    parse_rules,
)
from clientregistry.matching.scoring import Scorer

OPENCR_RULE_FILES = [
    "decisionRules.json",
    "decisionRulesDeterministicTemplate.json",
    "decisionRulesE2E.json",
    "decisionRulesProbabilisticTemplate.json",
    "decisionRulesTest.json",
]

# name -> (matching type, potential, auto, field names, filter names)
EXPECTED: dict[str, tuple[str, float, float, list[str], list[str]]] = {
    "decisionRules.json": (
        "deterministic",
        4,
        6,
        ["given", "family", "birthdate", "phone", "nationalid", "art"],
        ["gender"],
    ),
    "decisionRulesDeterministicTemplate.json": (
        "deterministic",
        1,
        2,
        ["given", "family", "phone"],
        ["gender"],
    ),
    "decisionRulesE2E.json": ("deterministic", 2, 3, ["given", "family", "phone"], ["gender"]),
    "decisionRulesProbabilisticTemplate.json": (
        "probabilistic",
        100,
        102,
        ["given", "family", "phone"],
        ["gender"],
    ),
    "decisionRulesTest.json": ("deterministic", 1, 3, ["given", "family", "phone"], ["gender"]),
}


def _config(reference_dir: Path, name: str) -> Path:
    return reference_dir / "opencr" / "config" / name


def _demo_patients(reference_dir: Path) -> list[dict[str, Any]]:
    files = sorted((reference_dir / "opencr" / "DemoData").glob("*.json"))
    assert len(files) >= 4
    return [json.loads(f.read_text(encoding="utf-8")) for f in files]


def _rule_set(**overrides: Any) -> dict[str, Any]:
    """A valid deterministic rule set, with top-level keys replaced."""
    base: dict[str, Any] = {
        "matchingType": "deterministic",
        "fields": {
            "given": {
                "algorithm": "jaro-winkler-similarity",
                "threshold": 0.8,
                "fhirpath": "name.given",
            },
            "family": {"algorithm": "exact", "fhirpath": "name.family"},
        },
        "potentialMatchThreshold": 1,
        "autoMatchThreshold": 2,
    }
    base.update(overrides)
    return base


def _prob_rule_set(**field_overrides: Any) -> dict[str, Any]:
    """A valid probabilistic rule set with one field whose keys are replaced."""
    fld: dict[str, Any] = {
        "algorithm": "jaro-winkler-similarity",
        "threshold": 0.8,
        "fhirpath": "name.given",
        "mValue": 0.9,
        "uValue": 0.01,
    }
    fld.update(field_overrides)
    fld = {k: v for k, v in fld.items() if v is not None}
    return {
        "matchingType": "probabilistic",
        "fields": {"given": fld},
        "potentialMatchThreshold": 100,
        "autoMatchThreshold": 101,
    }


def _write(tmp_path: Path, document: Any, name: str = "rules.json") -> Path:
    path = tmp_path / name
    text = document if isinstance(document, str) else json.dumps(document)
    path.write_text(text, encoding="utf-8")
    return path


def _load_error(tmp_path: Path, document: Any) -> RuleSetError:
    path = _write(tmp_path, document)
    with pytest.raises(RuleSetError) as caught:
        load_rules(path)
    error = caught.value
    assert isinstance(error, ConfigError)
    assert error.source == str(path)
    assert str(path) in str(error)
    return error


def _locations(error: RuleSetError) -> list[str]:
    return [p.location for p in error.problems]


# ----------------------------------------------------------------------------- OpenCR's files


def test_the_list_of_opencr_files_is_complete(reference_dir: Path) -> None:
    found = sorted(p.name for p in (reference_dir / "opencr" / "config").glob("decisionRules*"))
    assert found == sorted(OPENCR_RULE_FILES)


@pytest.mark.parametrize("name", OPENCR_RULE_FILES)
def test_opencr_rule_files_load(reference_dir: Path, name: str) -> None:
    rules = load_rules(_config(reference_dir, name))
    matching_type, potential, auto, fields, filters = EXPECTED[name]
    assert rules.source == str(_config(reference_dir, name))
    assert len(rules.rule_sets) == 1
    rs = rules.rule_sets[0]
    assert rs.index == 0
    assert rs.matching_type == matching_type
    assert rs.probabilistic == (matching_type == "probabilistic")
    assert rs.potential_threshold == potential
    assert rs.auto_threshold == auto
    assert [f.name for f in rs.fields] == fields
    assert len(rs.fields) == len(fields)
    assert [flt.name for flt in rs.filters] == filters
    assert rs.filters[0].fhirpath == "gender"
    assert rs.filters[0].value_type == "code"
    assert rs.phonetic_blocks == ()
    assert rules.warnings == ()


def test_opencr_decision_rules_details(reference_dir: Path) -> None:
    rs = load_rules(_config(reference_dir, "decisionRules.json")).rule_sets[0]
    by_name = {f.name: f for f in rs.fields}
    assert by_name["given"].algorithm == "jaro-winkler-similarity"
    assert by_name["given"].threshold == 0.8
    assert by_name["given"].fhirpath == "name.where(use='official').given"
    assert by_name["family"].threshold == 0.9
    assert by_name["birthdate"].algorithm == "exact"
    assert by_name["birthdate"].threshold == 1.0
    assert by_name["birthdate"].value_type == "date"
    assert by_name["phone"].value_type == "phone"
    assert by_name["nationalid"].value_type == "identifier"
    assert by_name["given"].value_type == "text"
    assert all(f.weight == 1.0 for f in rs.fields)
    assert all(f.null_one == "moderate" and f.null_both == "moderate" for f in rs.fields)
    assert rs.max_score() == 6.0


def test_opencr_probabilistic_template_details(reference_dir: Path) -> None:
    rs = load_rules(_config(reference_dir, "decisionRulesProbabilisticTemplate.json")).rule_sets[0]
    family = rs.fields[1]
    assert family.algorithm == "damerau-levenshtein"
    assert family.threshold == 3
    assert len(family.levels) == 1
    level = family.levels[0]
    assert level.m == 0.9346
    assert level.u == 0.0018975910650996456
    assert level.weight == pytest.approx(math.log10(0.9346 / 0.0018975910650996456))
    assert family.else_weight == pytest.approx(
        math.log10((1 - 0.9346) / (1 - 0.0018975910650996456))
    )
    assert rs.max_score() == pytest.approx(
        BASE_SCORE
        + math.log10(0.9172 / 0.003628206379557255)
        + math.log10(0.9346 / 0.0018975910650996456)
        + math.log10(0.99 / 0.00277670269535094)
    )


def test_opencr_test_rules_have_no_null_handling(reference_dir: Path) -> None:
    rs = load_rules(_config(reference_dir, "decisionRulesTest.json")).rule_sets[0]
    assert all(f.null_one is None and f.null_both is None for f in rs.fields)


def test_camel_case_null_handling_keys_are_honoured(reference_dir: Path) -> None:
    raw = json.loads(_config(reference_dir, "decisionRulesE2E.json").read_text(encoding="utf-8"))
    assert "nullHandling" in raw["rules"][0]["fields"]["given"]
    assert "null_handling" not in raw["rules"][0]["fields"]["given"]
    rs = parse_rules(raw).rule_sets[0]
    assert all(f.null_one == "moderate" and f.null_both == "moderate" for f in rs.fields)
    # Values other than the default, to be sure the keys are read (not defaulted).
    fields = raw["rules"][0]["fields"]
    fields["given"]["nullHandling"] = "greedy"
    fields["given"]["nullHandlingBothFields"] = "conservative"
    fields["family"]["nullHandling"] = "conservative"
    del fields["family"]["nullHandlingBothFields"]
    del fields["phone"]["nullHandling"], fields["phone"]["nullHandlingBothFields"]
    raw["rules"][0]["nullHandling"] = "greedy"
    raw["rules"][0]["nullHandlingBothFields"] = "conservative"
    rs = parse_rules(raw).rule_sets[0]
    given, family, phone = rs.fields
    assert (given.null_one, given.null_both) == ("greedy", "conservative")
    # "nullHandling by itself is used with either one value or both null"
    assert (family.null_one, family.null_both) == ("conservative", "conservative")
    # rule-level defaults, camel-case too
    assert (phone.null_one, phone.null_both) == ("greedy", "conservative")


def test_rule_level_null_handling_is_the_default_for_fields() -> None:
    doc = {"rules": [_rule_set(null_handling="greedy", null_handling_both="conservative")]}
    doc["rules"][0]["fields"]["family"]["null_handling"] = "moderate"
    given, family = parse_rules(doc).rule_sets[0].fields
    assert (given.null_one, given.null_both) == ("greedy", "conservative")
    assert family.null_one == "moderate"


# ----------------------------------------------------------------------------- legacy form

LEGACY = {
    "rules": {
        "givenName": {
            "algorithm": "jaro-winkler",
            "threshold": 0.89,
            "path": "name.where(use='official').last().given",
            "type": "string",
        },
        "familyName": {
            "algorithm": "jaro-winkler",
            "threshold": 0.89,
            "path": "name.where(use='official').last().family",
            "type": "string",
        },
        "gender": {"algorithm": "exact", "path": "gender", "type": "string"},
        "birthDate": {"algorithm": "exact", "path": "birthDate", "type": "date"},
    }
}


def test_legacy_object_form_is_one_deterministic_rule_set() -> None:
    rules = parse_rules(copy.deepcopy(LEGACY))
    assert len(rules.rule_sets) == 1
    rs = rules.rule_sets[0]
    assert rs.matching_type == "deterministic"
    assert [f.name for f in rs.fields] == ["givenName", "familyName", "gender", "birthDate"]
    assert rs.potential_threshold == rs.auto_threshold == 4.0
    given = rs.fields[0]
    assert given.algorithm == "jaro-winkler"
    assert given.threshold == 0.89
    assert given.fhirpath == "name.where(use='official').last().given"
    assert rs.fields[2].value_type == "code"
    assert rs.fields[3].value_type == "date"
    assert rules.warnings == ()


def test_legacy_form_needs_every_field_to_agree() -> None:
    scorer = Scorer(FeatureExtractor(parse_rules(copy.deepcopy(LEGACY))))
    a = {
        "name": [{"use": "official", "given": ["Namaalwa"], "family": "Gideon"}],
        "gender": "male",
        "birthDate": "1974-12-25",
    }
    b = copy.deepcopy(a)
    b["name"][0]["given"] = ["Namalwa"]
    result = scorer.score(scorer.extractor.extract(a), scorer.extractor.extract(b))
    assert result is not None
    assert (result.score, result.decision) == (4.0, "auto")
    b["birthDate"] = "1974-12-26"
    result = scorer.exact_score(scorer.extractor.extract(a), scorer.extractor.extract(b))
    assert result is not None
    assert (result.score, result.decision) == (3.0, "none")


def test_legacy_form_errors_name_the_field(tmp_path: Path) -> None:
    doc = copy.deepcopy(LEGACY)
    doc["rules"]["givenName"]["algorithm"] = "jaro-wrinkler"
    error = _load_error(tmp_path, doc)
    assert _locations(error) == ["rules.givenName.algorithm"]


# ----------------------------------------------------------------------------- default rules


def test_default_rules_load() -> None:
    rules = default_rules()
    assert isinstance(rules, DecisionRules)
    assert rules.source == "default rules"
    assert rules.warnings == ()
    assert len(rules.rule_sets) == 1
    rs = rules.rule_sets[0]
    assert rs.probabilistic
    assert rs.potential_threshold == 103
    assert rs.auto_threshold == 105
    assert {f.name for f in rs.fields if f.group == "household"} == {
        "family",
        "phone",
        "addressLine",
    }
    assert {f.name for f in rs.fields if f.group == "location"} == {"city", "postalCode"}
    names = [f.name for f in rs.fields]
    assert "identifier" in names
    assert rs.fields[names.index("identifier")].is_identifier_set
    assert len(rs.fields[names.index("given")].levels) >= 3
    assert rs.fields[names.index("given")].levels[0].term_frequency
    assert rs.fields[names.index("given")].words == "first"
    assert rs.fields[names.index("middle")].words == "rest"
    assert rs.fields[names.index("middle")].null_one == "moderate"
    assert rs.fields[names.index("postalCode")].value_type == "code"
    assert rs.blocking[0] == ("identifier",)
    assert rs.max_score() > rs.auto_threshold


def test_infer_value_type() -> None:
    assert infer_value_type("birthDate") == "date"
    assert infer_value_type("deceasedDateTime") == "date"
    assert infer_value_type("telecom.where(system='phone').value") == "phone"
    assert infer_value_type("telecom.where(system='email').value") == "text"
    assert infer_value_type("identifier.where(system='x').value") == "identifier"
    assert infer_value_type("gender") == "code"
    assert infer_value_type("name.given") == "text"


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("document", "location", "fragment"),
    [
        pytest.param(
            {"rules": [_rule_set(fields={"given": {"algorithm": "jaro", "fhirpath": "name"}})]},
            "rules[0].fields.given.algorithm",
            "unknown algorithm 'jaro'",
            id="unknown-algorithm",
        ),
        pytest.param(
            {"rules": [_rule_set(fields={"given": {"algorithm": "exact", "fhirpath": "a..b"}})]},
            "rules[0].fields.given.fhirpath",
            "does not parse",
            id="bad-fhirpath",
        ),
        pytest.param(
            {"rules": [_rule_set(fields={"given": {"algorithm": "exact"}})]},
            "rules[0].fields.given.fhirpath",
            "required",
            id="missing-fhirpath",
        ),
        pytest.param(
            {
                "rules": [
                    _rule_set(
                        fields={
                            "given": {
                                "algorithm": "jaro-winkler-similarity",
                                "threshold": "0.8",
                                "fhirpath": "name.given",
                            }
                        }
                    )
                ]
            },
            "rules[0].fields.given.threshold",
            "must be a number",
            id="threshold-string",
        ),
        pytest.param(
            {
                "rules": [
                    _rule_set(
                        fields={
                            "given": {
                                "algorithm": "levenshtein",
                                "threshold": True,
                                "fhirpath": "name.given",
                            }
                        }
                    )
                ]
            },
            "rules[0].fields.given.threshold",
            "must be a number",
            id="threshold-bool",
        ),
        pytest.param(
            {
                "rules": [
                    _rule_set(
                        fields={
                            "given": {
                                "algorithm": "jaro-winkler",
                                "threshold": 1.5,
                                "fhirpath": "name.given",
                            }
                        }
                    )
                ]
            },
            "rules[0].fields.given.threshold",
            "outside [0, 1]",
            id="threshold-out-of-range",
        ),
        pytest.param(
            {
                "rules": [
                    _rule_set(
                        fields={
                            "given": {
                                "algorithm": "levenshtein",
                                "threshold": -1,
                                "fhirpath": "name.given",
                            }
                        }
                    )
                ]
            },
            "rules[0].fields.given.threshold",
            "at least 0",
            id="negative-distance",
        ),
        pytest.param(
            {
                "rules": [
                    _rule_set(
                        fields={"given": {"algorithm": "levenshtein", "fhirpath": "name.given"}}
                    )
                ]
            },
            "rules[0].fields.given.threshold",
            "required",
            id="missing-threshold",
        ),
        pytest.param(
            {"rules": [_rule_set(potentialMatchThreshold=5, autoMatchThreshold=3)]},
            "rules[0].autoMatchThreshold",
            "below the potential-match threshold",
            id="auto-below-potential",
        ),
        pytest.param(
            {"rules": [_rule_set(potentialMatchThreshold=None)]},
            "rules[0].potentialMatchThreshold",
            "must be a number",
            id="potential-null",
        ),
        pytest.param(
            {"rules": [_prob_rule_set(mValue=None)]},
            "rules[0].fields.given.mValue",
            "required",
            id="missing-mValue",
        ),
        pytest.param(
            {"rules": [_prob_rule_set(mValue=1.0)]},
            "rules[0].fields.given.mValue",
            "outside (0, 1)",
            id="mValue-1",
        ),
        pytest.param(
            {"rules": [_prob_rule_set(uValue=0)]},
            "rules[0].fields.given.uValue",
            "outside (0, 1)",
            id="uValue-0",
        ),
        pytest.param(
            {"rules": [_prob_rule_set(null_handling="lenient")]},
            "rules[0].fields.given.null_handling",
            "conservative, moderate, greedy",
            id="bad-null-handling",
        ),
        pytest.param(
            {"rules": [_prob_rule_set(nullHandlingBothFields="sometimes")]},
            "rules[0].fields.given.nullHandlingBothFields",
            "not 'sometimes'",
            id="bad-camel-null-handling",
        ),
        pytest.param(
            {"rules": [_rule_set(null_handling="nope")]},
            "rules[0].null_handling",
            "must be one of",
            id="bad-rule-null-handling",
        ),
        pytest.param({"other": []}, "", "missing 'rules'", id="missing-rules"),
        pytest.param([], "", "JSON object", id="not-an-object"),
        pytest.param({"rules": []}, "rules", "non-empty list", id="empty-rules"),
        pytest.param(
            {"rules": [_rule_set(matchingType="fuzzy")]},
            "rules[0].matchingType",
            "'deterministic' or 'probabilistic'",
            id="bad-matching-type",
        ),
        pytest.param(
            {"rules": [_prob_rule_set(algorithm="phonetic", threshold=None)]},
            "rules[0].fields.given.algorithm",
            "deterministic rule sets only",
            id="phonetic-in-probabilistic",
        ),
        pytest.param(
            {
                "rules": [
                    _rule_set(
                        fields={
                            "given": {
                                "fhirpath": "name.given",
                                "levels": [{"algorithm": "exact", "mValue": 0.9, "uValue": 0.1}],
                            }
                        }
                    )
                ]
            },
            "rules[0].fields.given.levels",
            "probabilistic rule sets only",
            id="levels-in-deterministic",
        ),
        pytest.param(
            {"rules": [_rule_set(blocking=[["given"], ["surname"]])]},
            "rules[0].blocking[1]",
            "'surname' is not a scored field",
            id="blocking-unknown-field",
        ),
        pytest.param(
            {"rules": [_rule_set(blocking="given")]},
            "rules[0].blocking",
            "list of lists",
            id="blocking-not-a-list",
        ),
        pytest.param(
            {
                "rules": [
                    _rule_set(
                        fields={"g": {"algorithm": "exact", "fhirpath": "x", "valueType": "blob"}}
                    )
                ]
            },
            "rules[0].fields.g.valueType",
            "must be one of",
            id="bad-value-type",
        ),
        pytest.param(
            {"rules": [_rule_set(filters={"gender": {"fhirpath": "gender)"}})]},
            "rules[0].filters.gender.fhirpath",
            "does not parse",
            id="bad-filter-fhirpath",
        ),
        pytest.param(
            {
                "rules": [
                    {
                        "matchingType": "probabilistic",
                        "fields": {
                            "g": {
                                "fhirpath": "name.given",
                                "levels": [
                                    {"algorithm": "exact", "mValue": 0.6, "uValue": 0.1},
                                    {
                                        "algorithm": "jaro-winkler",
                                        "threshold": 0.9,
                                        "mValue": 0.5,
                                        "uValue": 0.1,
                                    },
                                ],
                            }
                        },
                        "potentialMatchThreshold": 100,
                        "autoMatchThreshold": 101,
                    }
                ]
            },
            "rules[0].fields.g.levels",
            "add up to 1 or more",
            id="levels-m-sum-too-big",
        ),
    ],
)
def test_load_rules_reports_the_location(
    tmp_path: Path, document: Any, location: str, fragment: str
) -> None:
    error = _load_error(tmp_path, document)
    assert location in _locations(error), error.problems
    messages = [p.message for p in error.problems if p.location == location]
    assert any(fragment in m for m in messages), messages
    assert f"{location}: " in str(error) if location else fragment in str(error)


def test_not_json_reports_line_and_column(tmp_path: Path) -> None:
    # the '}' after "matchingType": is the 22nd character of line 3
    error = _load_error(tmp_path, '{\n  "rules": [\n    {"matchingType": },\n  ]\n}\n')
    assert len(error.problems) == 1
    problem = error.problems[0]
    assert problem.location == "line 3, column 22"
    assert problem.message.startswith("not JSON")
    assert "line 3, column 22" in str(error)


def test_missing_file_is_a_rule_set_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(RuleSetError, match="cannot read file") as caught:
        load_rules(path)
    assert str(path) in str(caught.value)


def test_several_problems_are_reported_at_once(tmp_path: Path) -> None:
    document = {
        "rules": [
            _rule_set(
                fields={
                    "given": {"algorithm": "jaro-wrinkler", "fhirpath": "name.given"},
                    "family": {"algorithm": "exact", "fhirpath": "name..family"},
                    "phone": {"algorithm": "levenshtein", "threshold": "2", "fhirpath": "tel"},
                },
                potentialMatchThreshold=3,
                autoMatchThreshold=2,
            ),
            _prob_rule_set(mValue=1.5, uValue=0),
        ]
    }
    error = _load_error(tmp_path, document)
    locations = _locations(error)
    assert set(locations) >= {
        "rules[0].fields.given.algorithm",
        "rules[0].fields.family.fhirpath",
        "rules[0].fields.phone.threshold",
        "rules[0].autoMatchThreshold",
        "rules[1].fields.given.mValue",
        "rules[1].fields.given.uValue",
    }
    assert f"{len(error.problems)} problem(s)" in str(error)
    for location in locations:
        assert location in str(error)


def test_unknown_keys_are_warnings_not_errors() -> None:
    doc = {"rules": [_rule_set(colour="blue")]}
    doc["rules"][0]["fields"]["given"]["espath"] = "given"  # known, ignored
    doc["rules"][0]["fields"]["given"]["shade"] = 3
    rules = parse_rules(doc)
    assert sorted(rules.warnings) == [
        "rules[0].fields.given: unknown key 'shade' ignored",
        "rules[0]: unknown key 'colour' ignored",
    ]


def test_unreachable_threshold_is_a_warning() -> None:
    rules = parse_rules({"rules": [_rule_set(potentialMatchThreshold=3, autoMatchThreshold=3)]})
    assert len(rules.warnings) == 1
    assert "no pair can reach the potential-match threshold 3" in rules.warnings[0]


def test_unknown_fhirpath_function_is_a_rule_set_error(tmp_path: Path) -> None:
    doc = {"rules": [_rule_set(fields={"given": {"algorithm": "exact", "fhirpath": "name.foo()"}})]}
    error = _load_error(tmp_path, doc)
    assert _locations(error) == ["rules[0].fields.given.fhirpath"]


# ----------------------------------------------------------------------------- round trip


def _all_scores(rules: DecisionRules, patients: list[dict[str, Any]]) -> list[Any]:
    scorer = Scorer(FeatureExtractor(rules))
    features = [scorer.extractor.extract(p) for p in patients]
    out = []
    for a in features:
        for b in features:
            out.append(scorer.score(a, b))
            out.append([(r.score, r.decision, r.blocked_by) for r in scorer.explain(a, b)])
    return out


@pytest.mark.parametrize("name", [*OPENCR_RULE_FILES, "default"])
def test_round_trip_gives_equal_scores(reference_dir: Path, name: str) -> None:
    rules = default_rules() if name == "default" else load_rules(_config(reference_dir, name))
    again = parse_rules(json.loads(json.dumps(rules.to_json())))
    assert len(again.rule_sets) == len(rules.rule_sets)
    for old, new in zip(rules.rule_sets, again.rule_sets, strict=True):
        assert [f.name for f in new.fields] == [f.name for f in old.fields]
        assert new.fields == old.fields
        assert new.filters == old.filters
        assert (new.potential_threshold, new.auto_threshold) == (
            old.potential_threshold,
            old.auto_threshold,
        )
        assert new.blocking == old.blocking
    patients = _demo_patients(reference_dir)
    # and variations, so that not every pair agrees everywhere
    extra = copy.deepcopy(patients[0])
    extra["gender"] = "female"
    extra["name"][0]["family"] = "Gidion"
    del extra["telecom"]
    patients.append(extra)
    assert _all_scores(again, patients) == _all_scores(rules, patients)


def test_round_trip_of_phonetic_block_and_weights() -> None:
    doc = {
        "rules": [
            _rule_set(
                fields={
                    "sound": {"algorithm": "phonetic", "fhirpath": "name.family"},
                    "given": {
                        "algorithm": "levenshtein",
                        "threshold": 2,
                        "weight": 2.5,
                        "fhirpath": "name.given",
                    },
                },
                potentialMatchThreshold=2,
                autoMatchThreshold=2.5,
            )
        ]
    }
    rules = parse_rules(doc)
    rs = rules.rule_sets[0]
    assert [f.name for f in rs.phonetic_blocks] == ["sound"]
    assert [f.name for f in rs.fields] == ["given"]
    again = parse_rules(rules.to_json()).rule_sets[0]
    assert again.phonetic_blocks == rs.phonetic_blocks
    assert again.fields == rs.fields
    assert again.fields[0].weight == 2.5


def test_round_trip_keeps_explicit_else_of_single_level() -> None:
    doc = {
        "rules": [
            {
                "matchingType": "probabilistic",
                "fields": {
                    "given": {
                        "fhirpath": "name.given",
                        "levels": [{"algorithm": "exact", "mValue": 0.9, "uValue": 0.1}],
                        "else": {"mValue": 0.02, "uValue": 0.7},
                    }
                },
                "potentialMatchThreshold": 100,
                "autoMatchThreshold": 101,
            }
        ]
    }
    field = parse_rules(doc).rule_sets[0].fields[0]
    assert (field.else_m, field.else_u) == (0.02, 0.7)
    again = parse_rules(parse_rules(doc).to_json()).rule_sets[0].fields[0]
    assert (again.else_m, again.else_u) == (0.02, 0.7)


def test_round_trip_keeps_filter_value_type() -> None:
    doc = {
        "rules": [_rule_set(filters={"city": {"fhirpath": "address.city", "valueType": "code"}})]
    }
    rules = parse_rules(doc)
    assert rules.rule_sets[0].filters[0].value_type == "code"
    again = parse_rules(rules.to_json())
    assert again.rule_sets[0].filters[0].value_type == "code"


def _identifier_levels(*levels: dict[str, Any]) -> dict[str, Any]:
    return {
        "rules": [
            {
                "matchingType": "probabilistic",
                "fields": {"identifier": {"fhirpath": "identifier", "levels": list(levels)}},
                "potentialMatchThreshold": 100,
                "autoMatchThreshold": 101,
            }
        ]
    }


def test_shared_identifier_levels_round_trip_with_their_edits() -> None:
    doc = _identifier_levels(
        {"algorithm": "shared-identifier", "mValue": 0.87, "uValue": 0.0001},
        {"algorithm": "shared-identifier", "threshold": 1, "mValue": 0.03, "uValue": 0.001},
    )
    field = parse_rules(doc).rule_sets[0].fields[0]
    assert field.is_identifier_set
    assert [lv.threshold for lv in field.levels] == [0.0, 1.0]
    written = parse_rules(doc).to_json()["rules"][0]["fields"]["identifier"]["levels"]
    assert "threshold" not in written[0]
    assert written[1]["threshold"] == 1
    again = parse_rules(parse_rules(doc).to_json()).rule_sets[0].fields[0]
    assert again == field


def test_shared_identifier_level_problems(tmp_path: Path) -> None:
    error = _load_error(
        tmp_path,
        _identifier_levels(
            {"algorithm": "shared-identifier", "mValue": 0.8, "uValue": 0.0001},
            {"algorithm": "shared-identifier", "threshold": 1.5, "mValue": 0.03, "uValue": 0.01},
            {"algorithm": "shared-identifier", "threshold": -1, "mValue": 0.03, "uValue": 0.01},
        ),
    )
    assert _locations(error) == [
        "rules[0].fields.identifier.levels[1].threshold",
        "rules[0].fields.identifier.levels[2].threshold",
    ]
    mixed = _load_error(
        tmp_path,
        _identifier_levels(
            {"algorithm": "shared-identifier", "mValue": 0.8, "uValue": 0.0001},
            {"algorithm": "levenshtein", "threshold": 1, "mValue": 0.03, "uValue": 0.01},
        ),
    )
    assert _locations(mixed) == ["rules[0].fields.identifier.levels"]
    assert "cannot be mixed" in mixed.problems[0].message


def _family_level(**extra: Any) -> dict[str, Any]:
    level = {"algorithm": "exact", "mValue": 0.9, "uValue": 0.01, **extra}
    return {
        "rules": [
            {
                "matchingType": "probabilistic",
                "fields": {"family": {"fhirpath": "name.family", "levels": [level]}},
                "potentialMatchThreshold": 100,
                "autoMatchThreshold": 101,
            }
        ]
    }


def test_a_term_frequency_floor_without_term_frequency_is_ignored_with_a_warning() -> None:
    rules = parse_rules(_family_level(termFrequency=False, termFrequencyMinimumU=0.01))
    assert rules.rule_sets[0].fields[0].levels[0].tf_minimum_u is None
    assert any(
        "termFrequencyMinimumU: ignored without termFrequency" in warning
        for warning in rules.warnings
    )


def test_term_frequency_floor_round_trips() -> None:
    rules = parse_rules(_family_level(termFrequency=True, termFrequencyMinimumU=0.01))
    level = rules.rule_sets[0].fields[0].levels[0]
    assert level.tf_minimum_u == 0.01
    again = parse_rules(rules.to_json())
    assert again.rule_sets[0].fields[0].levels[0] == level


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"termFrequency": True, "termFrequencyMinimumU": 0}, "outside (0, 1)"),
        ({"termFrequency": True, "termFrequencyMinimumU": 1.5}, "outside (0, 1)"),
        ({"termFrequency": True, "termFrequencyMinimumU": "u"}, "must be a number"),
    ],
)
def test_term_frequency_floor_problems(tmp_path: Path, extra: dict[str, Any], message: str) -> None:
    error = _load_error(tmp_path, _family_level(**extra))
    assert _locations(error) == ["rules[0].fields.family.levels[0].termFrequencyMinimumU"]
    assert message in error.problems[0].message
