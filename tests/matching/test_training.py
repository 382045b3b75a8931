"""Tests of unsupervised m/u estimation (Splink-style EM) on synthetic data with known truth."""

from __future__ import annotations

import copy
import itertools
import json
import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from clientregistry.matching import training
from clientregistry.matching.matcher import Matcher
from clientregistry.matching.rules import DecisionRules, parse_rules
from clientregistry.matching.scoring import comparison_level
from clientregistry.matching.training import TrainingResult, level_label, train

# ----------------------------------------------------------------------------- synthetic data

ENTITIES = 3000
DUPLICATED = 1500
GIVEN_TYPO = 0.2
FAMILY_TYPO = 0.1
DATE_DIGIT = 0.1
PHONE_MISSING = 0.3
PHONE_TYPO = 0.1
GENDER_FLIP = 0.02
YEARS = range(1950, 1960)
DAYS = range(10, 29)  # two digits, valid in every month
DISTINCT_DATES = len(YEARS) * 12 * len(DAYS)

_ONSETS = ["b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z"]
_VOWELS = ["a", "e", "i", "o", "u"]
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _name_pool(rng: random.Random, size: int, syllables: int) -> list[str]:
    names: set[str] = set()
    while len(names) < size:
        names.add("".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)))
    return sorted(names)


def _typo(rng: random.Random, word: str) -> str:
    """One substituted letter (never the same letter), away from the first."""
    position = rng.randrange(1, len(word))
    letter = rng.choice([c for c in _LETTERS if c != word[position]])
    return word[:position] + letter + word[position + 1 :]


def _digit_error(rng: random.Random, date: str) -> str:
    """The last digit of the day changed (the day stays within 10..28)."""
    day = int(date[8:])
    tens, units = divmod(day, 10)
    choices = [u for u in range(10) if u != units and 10 <= tens * 10 + u <= 28]
    return f"{date[:8]}{tens * 10 + rng.choice(choices):02d}"


def _phone_typo(rng: random.Random, phone: str) -> str:
    position = rng.randrange(len(phone))
    digit = rng.choice([d for d in "0123456789" if d != phone[position]])
    return phone[:position] + digit + phone[position + 1 :]


@dataclass
class Person:
    given: str
    family: str
    birth_date: str
    gender: str
    phone: str
    address: str


def _patient(record_id: str, person: Person, rng: random.Random) -> dict[str, Any]:
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": record_id,
        "name": [{"family": person.family, "given": [person.given]}],
        "birthDate": person.birth_date,
        "gender": person.gender,
        "address": [{"line": [person.address]}],
    }
    if rng.random() >= PHONE_MISSING:
        patient["telecom"] = [{"system": "phone", "value": person.phone}]
    return patient


def synthetic_patients(
    seed: int = 7, relatives: int = 0
) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
    """Patients (shuffled) and the true duplicate pairs: ``ENTITIES`` people, ``DUPLICATED``
    of them twice (with typos), and ``relatives`` more people each sharing the surname, phone
    and address of one of them (never duplicated)."""
    rng = random.Random(seed)
    givens = _name_pool(rng, 400, 2)
    families = _name_pool(rng, 1000, 3)
    streets = _name_pool(rng, 300, 2)

    def birth_date() -> str:
        return f"{rng.choice(YEARS)}-{rng.randint(1, 12):02d}-{rng.choice(DAYS):02d}"

    people = [
        Person(
            rng.choice(givens),
            rng.choice(families),
            birth_date(),
            rng.choice(["male", "female"]),
            "07" + "".join(rng.choice("0123456789") for _ in range(8)),
            f"{rng.randint(1, 200)} {rng.choice(streets)} street",
        )
        for _ in range(ENTITIES)
    ]
    records: list[tuple[int, dict[str, Any]]] = []
    for number, person in enumerate(people):
        records.append((number, _patient(f"p{number}", person, rng)))
    for number in rng.sample(range(ENTITIES), DUPLICATED):
        person = people[number]
        copy_of = Person(
            _typo(rng, person.given) if rng.random() < GIVEN_TYPO else person.given,
            _typo(rng, person.family) if rng.random() < FAMILY_TYPO else person.family,
            _digit_error(rng, person.birth_date)
            if rng.random() < DATE_DIGIT
            else person.birth_date,
            ({"male": "female", "female": "male"}[person.gender])
            if rng.random() < GENDER_FLIP
            else person.gender,
            _phone_typo(rng, person.phone) if rng.random() < PHONE_TYPO else person.phone,
            person.address,
        )
        records.append((number, _patient(f"d{number}", copy_of, rng)))
    for number in range(relatives):
        head = rng.choice(people)
        relative = Person(
            rng.choice(givens),
            head.family,
            birth_date(),
            rng.choice(["male", "female"]),
            head.phone,
            head.address,
        )
        records.append((ENTITIES + number, _patient(f"r{number}", relative, rng)))
    rng.shuffle(records)
    by_entity: dict[int, list[int]] = {}
    for position, (entity, _) in enumerate(records):
        by_entity.setdefault(entity, []).append(position)
    pairs = [(group[0], group[1]) for group in by_entity.values() if len(group) == 2]
    return [patient for _, patient in records], pairs


START_M = 0.5
"""Deliberately poor starting m of every agreeing level: training must move away from it."""

RULES: dict[str, Any] = {
    "rules": [
        {
            "name": "people",
            "matchingType": "probabilistic",
            "null_handling": "moderate",
            "null_handling_both": "moderate",
            "fields": {
                "given": {
                    "fhirpath": "name.first().given",
                    "levels": [
                        {"algorithm": "exact", "mValue": START_M, "uValue": 0.01},
                        {
                            "algorithm": "jaro-winkler-similarity",
                            "threshold": 0.88,
                            "mValue": 0.2,
                            "uValue": 0.02,
                        },
                    ],
                    "else": {"mValue": 0.3, "uValue": 0.97},
                },
                "family": {
                    "fhirpath": "name.first().family",
                    "levels": [
                        {"algorithm": "exact", "mValue": START_M, "uValue": 0.01},
                        # never reached by different short names: its counts are 0
                        {
                            "algorithm": "jaro-winkler-similarity",
                            "threshold": 0.9999,
                            "mValue": 0.1,
                            "uValue": 0.001,
                        },
                        {
                            "algorithm": "jaro-winkler-similarity",
                            "threshold": 0.88,
                            "mValue": 0.1,
                            "uValue": 0.02,
                        },
                    ],
                    "else": {"mValue": 0.3, "uValue": 0.969},
                },
                "birthDate": {
                    "fhirpath": "birthDate",
                    "levels": [
                        {"algorithm": "exact", "mValue": START_M, "uValue": 0.01},
                        {"algorithm": "dateDamerau", "threshold": 1, "mValue": 0.2, "uValue": 0.1},
                    ],
                    "else": {"mValue": 0.3, "uValue": 0.89},
                },
                "gender": {
                    "fhirpath": "gender",
                    "algorithm": "exact",
                    "mValue": 0.6,
                    "uValue": 0.5,
                },
                "phone": {
                    "fhirpath": "telecom.where(system='phone').value",
                    "algorithm": "exact",
                    "mValue": START_M,
                    "uValue": 0.01,
                },
            },
            "blocking": [["given", "family"], ["birthDate"], ["phone"], ["family", "birthDate"]],
            "potentialMatchThreshold": 104,
            "autoMatchThreshold": 106,
        }
    ]
}


@dataclass
class Trained:
    matcher: Matcher
    records: list[tuple[Any, ...]]
    pairs: list[tuple[int, int]]
    result: TrainingResult

    def estimate(self, field: str, level: str) -> training.LevelEstimate:
        found = [e for e in self.result.estimates if (e.field, e.level) == (field, level)]
        assert len(found) == 1, (field, level, self.result.estimates)
        return found[0]


@pytest.fixture(scope="module")
def trained() -> Trained:
    patients, pairs = synthetic_patients()
    matcher = Matcher(parse_rules(copy.deepcopy(RULES)))
    records = [matcher.extractor.extract(patient) for patient in patients]
    # the raw estimate: these rules start from deliberately poor m, so that the trained
    # rules differ from them far more than the checks of a real run let through
    return Trained(matcher, records, pairs, train(matcher, records, checks=False))


# ----------------------------------------------------------------------------- correctness


@pytest.mark.parametrize(
    ("field", "level", "truth"),
    [
        ("given", "exact", 1 - GIVEN_TYPO),
        ("family", "exact", 1 - FAMILY_TYPO),
        ("birthDate", "exact", 1 - DATE_DIGIT),
        ("birthDate", "dateDamerau <= 1", DATE_DIGIT),
        ("gender", "exact", 1 - GENDER_FLIP),
        # among pairs where both have a phone: missing phones are nulls, not disagreements
        ("phone", "exact", 1 - PHONE_TYPO),
    ],
)
def test_learned_m_is_close_to_the_truth(
    trained: Trained, field: str, level: str, truth: float
) -> None:
    estimate = trained.estimate(field, level)
    assert estimate.m == pytest.approx(truth, abs=0.05)


def test_learned_m_matches_the_true_pairs_level_by_level(trained: Trained) -> None:
    """m of every level against the share of the true duplicates' comparisons in it."""
    rs = trained.matcher.rules.rule_sets[0]
    for f in rs.fields:
        slot = trained.matcher.extractor.slot(f)
        counts = [0] * (len(f.levels) + 1)
        for a, b in trained.pairs:
            va, vb = trained.records[a][slot], trained.records[b][slot]
            if va and vb:
                level = comparison_level(f, va, vb)
                assert level is not None
                counts[level] += 1
        labels = [level_label(lv) for lv in f.levels] + ["else"]
        for label, count in zip(labels, counts, strict=True):
            assert trained.estimate(f.name, label).m == pytest.approx(
                count / sum(counts), abs=0.05
            ), (f.name, label)


def test_training_moves_m_away_from_poor_starting_values(trained: Trained) -> None:
    assert trained.estimate("given", "exact").m > START_M + 0.2
    assert trained.estimate("phone", "exact").m > START_M + 0.3


def test_u_of_an_exact_birth_date_is_about_one_over_the_distinct_dates(trained: Trained) -> None:
    u = trained.estimate("birthDate", "exact").u
    assert 0.5 / DISTINCT_DATES < u < 2.0 / DISTINCT_DATES


def test_u_of_gender_is_about_a_half(trained: Trained) -> None:
    assert trained.estimate("gender", "exact").u == pytest.approx(0.5, abs=0.02)


def test_match_probability_is_close_to_the_share_of_duplicate_pairs(trained: Trained) -> None:
    count = len(trained.records)
    truth = DUPLICATED / (count * (count - 1) / 2)
    assert truth / 1.5 < trained.result.match_probability < truth * 1.5


def test_learned_rules_separate_matches_from_non_matches(trained: Trained) -> None:
    rules = trained.result.rules
    scorer = Matcher(rules).scorer
    rs = rules.rule_sets[0]
    records = trained.records

    def score(a: int, b: int) -> float:
        result = scorer.score(records[a], records[b])
        assert result is not None
        return result.score

    true_scores = [score(a, b) for a, b in trained.pairs]
    found = sum(s >= rs.potential_threshold for s in true_scores) / len(true_scores)
    assert found > 0.95

    duplicates = set(trained.pairs) | {(b, a) for a, b in trained.pairs}
    rng = random.Random(3)
    random_pairs = [
        (a, b)
        for a, b in (rng.sample(range(len(records)), 2) for _ in range(20_000))
        if (a, b) not in duplicates
    ]
    false = sum(score(a, b) >= rs.potential_threshold for a, b in random_pairs)
    assert false / len(random_pairs) < 0.001
    assert np.median(true_scores) > np.median([score(a, b) for a, b in random_pairs[:2000]]) + 8


def test_every_probability_is_positive_and_every_weight_finite(trained: Trained) -> None:
    for estimate in trained.result.estimates:
        assert 0.0 < estimate.m < 1.0
        assert 0.0 < estimate.u < 1.0
        assert math.isfinite(estimate.weight)
    never = trained.estimate("family", "jaro-winkler-similarity >= 0.9999")
    assert never.m < 0.01
    assert never.u < 0.001


def test_each_field_s_probabilities_sum_to_one(trained: Trained) -> None:
    for f in trained.result.rules.rule_sets[0].fields:
        assert sum(lv.m for lv in f.levels) + f.else_m == pytest.approx(1.0)
        assert sum(lv.u for lv in f.levels) + f.else_u == pytest.approx(1.0)


def test_single_level_fields_keep_else_at_one_minus_m_and_u(trained: Trained) -> None:
    fields = {f.name: f for f in trained.result.rules.rule_sets[0].fields}
    for name in ("gender", "phone"):
        f = fields[name]
        assert len(f.levels) == 1
        assert f.else_m == 1.0 - f.levels[0].m
        assert f.else_u == 1.0 - f.levels[0].u
        assert trained.estimate(name, "else").m == f.else_m


def test_thresholds_algorithms_and_blocking_are_kept(trained: Trained) -> None:
    before = trained.matcher.rules.rule_sets[0]
    after = trained.result.rules.rule_sets[0]
    assert (after.potential_threshold, after.auto_threshold) == (104, 106)
    assert after.blocking == before.blocking
    for old, new in zip(before.fields, after.fields, strict=True):
        assert new.name == old.name
        assert new.null_one == old.null_one
        assert [(lv.algorithm, lv.threshold, lv.term_frequency) for lv in new.levels] == [
            (lv.algorithm, lv.threshold, lv.term_frequency) for lv in old.levels
        ]


def test_result_reports_its_work(trained: Trained) -> None:
    result = trained.result
    assert result.converged
    assert 1 <= result.iterations <= 50
    assert result.random_pairs == 200_000
    assert [s.blocked_on for s in result.sessions] == [
        ("given", "family"),
        ("birthDate",),
        ("phone",),
        ("family", "birthDate"),
    ]
    assert result.candidate_pairs == sum(s.pairs for s in result.sessions) > DUPLICATED
    assert all(0.0 < s.match_share < 1.0 for s in result.sessions)
    assert len(result.estimates) == 3 + 4 + 3 + 2 + 2
    table = result.table().splitlines()
    assert table[0].split() == ["rule", "set", "field", "level", "m", "u", "weight"]
    assert len(table) == 1 + len(result.estimates)
    assert any(line.split()[:3] == ["1", "birthDate", "dateDamerau"] for line in table)


def test_training_is_deterministic_for_a_seed(trained: Trained) -> None:
    again = train(trained.matcher, trained.records)
    assert again.estimates == trained.result.estimates
    other = train(trained.matcher, trained.records, seed=1)
    assert other.estimates != trained.result.estimates


def test_relatives_sharing_surname_phone_and_address_do_not_fool_training() -> None:
    """Sessions blocked on household fields are mostly relatives, whom EM takes for matches;
    the other sessions outvote them and they are dropped."""
    document = copy.deepcopy(RULES)
    rule_set = document["rules"][0]
    rule_set["fields"]["address"] = {
        "fhirpath": "address.first().line",
        "algorithm": "exact",
        "mValue": START_M,
        "uValue": 0.01,
    }
    rule_set["blocking"] = [
        ["given", "family"],
        ["birthDate"],
        ["phone"],
        ["family", "birthDate"],
        ["family", "address"],
        ["given", "address"],
    ]
    matcher = Matcher(parse_rules(document))
    patients, _ = synthetic_patients(relatives=1500)
    records = [matcher.extractor.extract(p) for p in patients]
    result = train(matcher, records)
    learned = {(e.field, e.level): e.m for e in result.estimates}
    assert learned[("given", "exact")] == pytest.approx(1 - GIVEN_TYPO, abs=0.05)
    assert learned[("birthDate", "exact")] == pytest.approx(1 - DATE_DIGIT, abs=0.05)
    dropped = [s.blocked_on for s in result.sessions if not s.used]
    assert dropped == [("phone",), ("family", "address")]
    count = len(records)
    truth = DUPLICATED / (count * (count - 1) / 2)
    assert truth / 1.5 < result.match_probability < truth * 1.5


# ----------------------------------------------------------------------------- rules out


def test_trained_rules_round_trip_through_json(trained: Trained) -> None:
    document = json.loads(json.dumps(trained.result.rules.to_json()))
    reread = parse_rules(document)
    for old, new in zip(
        trained.result.rules.rule_sets[0].fields, reread.rule_sets[0].fields, strict=True
    ):
        assert [(lv.m, lv.u) for lv in new.levels] == [(lv.m, lv.u) for lv in old.levels]
        assert (new.else_m, new.else_u) == (old.else_m, old.else_u)
    assert Matcher(reread).scorer.score(trained.records[0], trained.records[1]) == Matcher(
        trained.result.rules
    ).scorer.score(trained.records[0], trained.records[1])


def test_deterministic_rule_sets_are_returned_unchanged(trained: Trained) -> None:
    document = copy.deepcopy(RULES)
    deterministic = {
        "name": "exact names and date",
        "matchingType": "deterministic",
        "fields": {
            "given": {"fhirpath": "name.first().given", "algorithm": "exact"},
            "birthDate": {"fhirpath": "birthDate", "algorithm": "exact"},
        },
        "potentialMatchThreshold": 2,
        "autoMatchThreshold": 2,
    }
    document["rules"].insert(0, deterministic)
    rules = parse_rules(document)
    matcher = Matcher(rules)
    patients, _ = synthetic_patients()
    records = [matcher.extractor.extract(p) for p in patients[:1500]]
    result = train(matcher, records, checks=False)
    assert result.rules.rule_sets[0] is rules.rule_sets[0]
    assert result.rules.rule_sets[1] != rules.rule_sets[1]
    assert {e.rule_set for e in result.estimates} == {1}
    assert result.rules.source == rules.source


def test_a_filter_is_respected_when_drawing_pairs() -> None:
    """Under a gender filter every compared pair has the same gender: u of agreeing is ~1."""
    document = copy.deepcopy(RULES)
    document["rules"][0]["filters"] = {"gender": {"fhirpath": "gender"}}
    matcher = Matcher(parse_rules(document))
    patients, _ = synthetic_patients()
    records = [matcher.extractor.extract(p) for p in patients]
    result = train(matcher, records, random_pairs=20_000)
    gender = next(e for e in result.estimates if (e.field, e.level) == ("gender", "exact"))
    assert gender.u > 0.999
    assert gender.m > 0.999
    # the other fields are learned as before
    given = next(e for e in result.estimates if (e.field, e.level) == ("given", "exact"))
    assert given.m == pytest.approx(1 - GIVEN_TYPO, abs=0.05)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("count", [0, 1])
def test_too_few_records_is_a_clear_error(count: int) -> None:
    matcher = Matcher(parse_rules(copy.deepcopy(RULES)))
    patients, _ = synthetic_patients()
    records = [matcher.extractor.extract(p) for p in patients[:count]]
    with pytest.raises(ValueError, match=f"at least 2 records to form pairs; got {count}"):
        train(matcher, records)


def test_rules_without_probabilistic_rule_sets_are_a_clear_error() -> None:
    rules = parse_rules(
        {
            "rules": [
                {
                    "matchingType": "deterministic",
                    "fields": {"given": {"fhirpath": "name.given", "algorithm": "exact"}},
                    "potentialMatchThreshold": 1,
                    "autoMatchThreshold": 1,
                }
            ]
        }
    )
    matcher = Matcher(rules)
    with pytest.raises(ValueError, match="no probabilistic rule set"):
        train(matcher, [matcher.extractor.extract({"resourceType": "Patient"})] * 3)


def test_records_without_likely_duplicates_are_a_clear_error() -> None:
    matcher = Matcher(parse_rules(copy.deepcopy(RULES)))
    patients = [
        {
            "resourceType": "Patient",
            "name": [{"family": f"family{i}", "given": [f"given{i}"]}],
            "birthDate": f"19{50 + i}-01-01",
        }
        for i in range(10)
    ]
    with pytest.raises(ValueError, match="no two of the 10 records agree exactly on given"):
        train(matcher, [matcher.extractor.extract(p) for p in patients])


@pytest.mark.parametrize("option", ["random_pairs", "max_iterations", "max_pairs"])
def test_nonsense_options_are_refused(trained: Trained, option: str) -> None:
    with pytest.raises(ValueError, match=f"{option} must be at least 1"):
        train(trained.matcher, trained.records, **{option: 0})


# ----------------------------------------------------------------------------- comparison levels

LEVEL_RULES: dict[str, Any] = {
    "rules": [
        {
            "matchingType": "probabilistic",
            "fields": {
                "given": {
                    "fhirpath": "name.first().given",
                    "levels": [
                        {"algorithm": "exact", "mValue": 0.7, "uValue": 0.01},
                        {
                            "algorithm": "jaro-winkler-similarity",
                            "threshold": 0.9,
                            "mValue": 0.1,
                            "uValue": 0.01,
                        },
                        {
                            "algorithm": "jaro-winkler-similarity",
                            "threshold": 0.85,
                            "swappedWith": "family",
                            "mValue": 0.05,
                            "uValue": 0.001,
                        },
                        {"algorithm": "soundex", "mValue": 0.05, "uValue": 0.01},
                        {
                            "algorithm": "levenshtein",
                            "threshold": 2,
                            "mValue": 0.05,
                            "uValue": 0.05,
                        },
                    ],
                    "else": {"mValue": 0.05, "uValue": 0.919},
                },
                "family": {
                    "fhirpath": "name.first().family",
                    "levels": [
                        {"algorithm": "exact", "mValue": 0.7, "uValue": 0.01},
                        {
                            "algorithm": "jaro-winkler-similarity",
                            "threshold": 0.85,
                            "swappedWith": "given",
                            "mValue": 0.05,
                            "uValue": 0.001,
                        },
                        {"algorithm": "qgram", "threshold": 3, "mValue": 0.1, "uValue": 0.05},
                    ],
                    "else": {"mValue": 0.15, "uValue": 0.939},
                },
                "birthDate": {
                    "fhirpath": "birthDate",
                    "levels": [
                        {"algorithm": "exact", "mValue": 0.8, "uValue": 0.001},
                        {"algorithm": "dateDamerau", "threshold": 1, "mValue": 0.1, "uValue": 0.01},
                    ],
                    "else": {"mValue": 0.1, "uValue": 0.989},
                },
                "identifier": {
                    "fhirpath": "identifier",
                    "algorithm": "shared-identifier",
                    "mValue": 0.9,
                    "uValue": 0.001,
                },
            },
            "potentialMatchThreshold": 104,
            "autoMatchThreshold": 106,
        }
    ]
}


def _level_patients() -> list[dict[str, Any]]:
    rng = random.Random(11)
    names = ["anna", "anne", "ana", "hannah", "smith", "smyth", "smithe", "jones", "jonas", ""]
    dates = ["1980-01-02", "1980-01-03", "1980-02-01", "1981-01-02", ""]
    systems = ["urn:a", "urn:b"]
    patients = []
    for _ in range(300):
        given, family = rng.choice(names), rng.choice(names)
        patient: dict[str, Any] = {"resourceType": "Patient", "name": [{}]}
        if given:
            patient["name"][0]["given"] = [given]
        if family:
            patient["name"][0]["family"] = family
        if date := rng.choice(dates):
            patient["birthDate"] = date
        patient["identifier"] = [
            {"system": rng.choice(systems), "value": str(rng.randint(1, 3))}
            for _ in range(rng.randint(0, 2))
        ]
        patients.append(patient)
    return patients


def test_vectorised_levels_equal_comparison_level() -> None:
    """The array computation gives the scorer's own comparison level for every pair,
    including swapped names, phonetic and distance levels, identifier sets and nulls."""
    rules: DecisionRules = parse_rules(copy.deepcopy(LEVEL_RULES))
    matcher = Matcher(rules)
    records = [matcher.extractor.extract(p) for p in _level_patients()]
    rs = rules.rule_sets[0]
    trainer = training._Trainer(matcher, records, 10, 1, 1e-4, 10, 0)
    pairs = np.array(list(itertools.permutations(range(len(records)), 2)))
    left, right = pairs[:, 0], pairs[:, 1]
    by_name = {f.name: f for f in rs.fields}
    seen: dict[str, set[int]] = {}
    for i, f in enumerate(rs.fields):
        got = trainer.levels(rs, i, left, right).tolist()
        slot = matcher.extractor.slot(f)
        partner = next((lv.swapped_with for lv in f.levels if lv.swapped_with), None)
        other = matcher.extractor.slot(by_name[partner]) if partner else None
        expected = []
        for a, b in zip(left.tolist(), right.tolist(), strict=True):
            va, vb = records[a][slot], records[b][slot]
            if not va or not vb:
                expected.append(-1)
                continue
            cross = (
                {partner: (records[a][other], records[b][other])}
                if other is not None and partner is not None
                else None
            )
            level = comparison_level(f, va, vb, cross)
            expected.append(-1 if level is None else level)
        assert got == expected, f.name
        seen[f.name] = set(got)
    # the data reach every level, so the comparison above means something
    assert seen["given"] == {-1, 0, 1, 2, 3, 4, 5}
    assert seen["family"] == {-1, 0, 1, 2, 3}
    assert seen["birthDate"] == {-1, 0, 1, 2}
    assert seen["identifier"] == {-1, 0, 1}


# ----------------------------------------------------------------------------- pair sampling


def _groups_of(*sizes: int) -> tuple[np.ndarray, np.ndarray]:
    members = np.arange(sum(sizes), dtype=np.int64)[::-1].copy()
    return members, np.array(sizes, dtype=np.int64)


def test_every_pair_is_taken_when_the_budget_allows() -> None:
    groups = _groups_of(3, 1, 4, 2)
    left, right, total = training._sample_pairs(groups, 100, np.random.default_rng(0))
    assert total == 3 + 0 + 6 + 1 == len(left)
    found = {frozenset(pair) for pair in zip(left.tolist(), right.tolist(), strict=True)}
    members = groups[0].tolist()
    expected = {
        frozenset(pair)
        for group in (members[0:3], members[4:8], members[8:10])
        for pair in itertools.combinations(group, 2)
    }
    assert found == expected


def test_sampled_pairs_are_distinct_records_of_one_group_uniformly() -> None:
    groups = _groups_of(20, 300)
    left, right, total = training._sample_pairs(groups, 20_000, np.random.default_rng(0))
    assert total == 190 + 44_850
    assert len(left) == 20_000
    assert not (left == right).any()
    members = groups[0]
    group_of = {member: 0 if k < 20 else 1 for k, member in enumerate(members.tolist())}
    assert all(
        group_of[a] == group_of[b] for a, b in zip(left.tolist(), right.tolist(), strict=True)
    )
    small = sum(group_of[a] == 0 for a in left.tolist())
    assert small == pytest.approx(20_000 * 190 / total, rel=0.3)
    counts = np.bincount(np.concatenate([left, right]), minlength=320)[members[20:]]
    assert counts.min() > 0.6 * counts.mean()


def test_groups_follow_filters_and_present_keys() -> None:
    rules = parse_rules(copy.deepcopy(RULES))
    matcher = Matcher(rules)
    patients = [
        {"resourceType": "Patient", "gender": "male", "birthDate": "1980-01-01"},
        {"resourceType": "Patient", "gender": "male", "birthDate": "1980-01-01"},
        {"resourceType": "Patient", "gender": "female", "birthDate": "1980-01-01"},
        {"resourceType": "Patient", "birthDate": "1980-01-01"},
        {"resourceType": "Patient"},
        {"resourceType": "Patient"},
    ]
    records = [matcher.extractor.extract(p) for p in patients]
    columns = training._Columns(records)
    rs = rules.rule_sets[0]
    gender = matcher.extractor.slot(next(f for f in rs.fields if f.name == "gender"))
    date = matcher.extractor.slot(next(f for f in rs.fields if f.name == "birthDate"))
    members, sizes = training._groups(columns, (gender,), (date,), len(records))
    offsets = np.cumsum(sizes) - sizes
    groups = sorted(
        sorted(members[o : o + s].tolist()) for o, s in zip(offsets, sizes, strict=True)
    )
    # the two without a birth date are in no group; no gender is a filter value of its own
    assert groups == [[0, 1], [2], [3]]


def test_level_labels_name_algorithm_threshold_and_swap() -> None:
    rules = parse_rules(copy.deepcopy(LEVEL_RULES))
    fields = {f.name: f for f in rules.rule_sets[0].fields}
    assert [level_label(lv) for lv in fields["given"].levels] == [
        "exact",
        "jaro-winkler-similarity >= 0.9",
        "jaro-winkler-similarity >= 0.85 swapped with family",
        "soundex",
        "levenshtein <= 2",
    ]
    assert [level_label(lv) for lv in fields["identifier"].levels] == ["shared-identifier"]


# ----------------------------------------------------------------------------- checks


def test_a_model_far_from_the_given_rules_is_not_trusted(trained: Trained) -> None:
    """The rules of this module start from a poor m: what EM learns links far more pairs than
    they do, which without labels cannot be told from fitting relatives; the rules given are
    kept, with a warning, and the table still shows what was learned."""
    result = train(trained.matcher, trained.records)
    assert result.kept_given
    assert result.rules is trained.matcher.rules
    assert result.links is not None
    assert result.links.new_share > training.MAX_NEW_LINKS
    assert any("the rules given are kept" in w for w in result.warnings)
    assert result.estimates == trained.result.estimates


def test_a_model_close_to_the_given_rules_is_used() -> None:
    """Trained from the rules the raw estimate gives, the next estimate is close to them:
    it is used, with no warning."""
    patients, _ = synthetic_patients()
    first = Matcher(parse_rules(copy.deepcopy(RULES)))
    records = [first.extractor.extract(p) for p in patients]
    learned = train(first, records, checks=False).rules
    again = train(Matcher(learned), records)
    assert not again.kept_given and again.warnings == []
    assert again.links is not None and again.links.new_share <= training.MAX_NEW_LINKS
    assert again.rules is not learned


def test_a_field_every_record_agrees_on_keeps_its_m_and_u() -> None:
    """Everyone is female: agreeing on gender says nothing (weight about 0), which would
    turn the rules' +0.08 for agreeing into nothing or less; the field is kept as it was."""
    patients, _ = synthetic_patients()
    for patient in patients:
        patient["gender"] = "female"
    document = copy.deepcopy(RULES)
    document["rules"][0]["fields"]["gender"]["uValue"] = 0.3
    matcher = Matcher(parse_rules(document))
    records = [matcher.extractor.extract(p) for p in patients]
    result = train(matcher, records)
    assert any("field gender" in w for w in result.warnings)
    gender = next(f for f in result.rules.rule_sets[0].fields if f.name == "gender")
    given = next(f for f in matcher.rules.rule_sets[0].fields if f.name == "gender")
    assert gender == given


def test_a_term_frequency_floor_keeps_its_ratio_to_the_trained_u() -> None:
    """A floor equal to u (term frequencies that only lower the weight) stays equal to the
    trained u; a floor a tenth of u stays a tenth of it."""
    rules = parse_rules(
        {
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
                                    "termFrequencyMinimumU": 0.01,
                                },
                                {
                                    "algorithm": "levenshtein",
                                    "threshold": 1,
                                    "mValue": 0.05,
                                    "uValue": 0.02,
                                    "termFrequency": True,
                                    "termFrequencyMinimumU": 0.002,
                                },
                            ],
                            "else": {"mValue": 0.05, "uValue": 0.97},
                        }
                    },
                    "potentialMatchThreshold": 100,
                    "autoMatchThreshold": 101,
                }
            ]
        }
    )
    field = rules.rule_sets[0].fields[0]
    trained = training._trained_field(
        field, np.array([0.8, 0.1, 0.1]), np.array([0.004, 0.05, 0.946])
    )
    first, second = trained.levels
    assert first.u == pytest.approx(0.004) and first.tf_minimum_u == pytest.approx(0.004)
    assert second.u == pytest.approx(0.05) and second.tf_minimum_u == pytest.approx(0.005)
