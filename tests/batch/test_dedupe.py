"""Tests of the in-memory deduplicator behind ``clientregistry dedupe``."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from clientregistry.batch.dedupe import DedupeStats, Deduplicator, potential_path_for
from clientregistry.config import DEFAULT_RECORD_ID_SYSTEMS
from clientregistry.errors import InvalidRecord
from clientregistry.matching.matcher import Matcher
from clientregistry.matching.rules import DecisionRules, default_rules, load_rules, parse_rules


@pytest.fixture(scope="module")
def opencr_dir(reference_dir: Path) -> Path:
    path = reference_dir / "opencr"
    if not (path / "DemoData").is_dir():
        pytest.skip(f"OpenCR demo data not found under {path}")
    return path


@pytest.fixture(scope="module")
def deterministic_rules(opencr_dir: Path) -> DecisionRules:
    return load_rules(opencr_dir / "config" / "decisionRulesDeterministicTemplate.json")


def demo_patients(opencr_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """OpenCR's demo Patients (they have no id: the file name stands in for it)."""
    files = sorted((opencr_dir / "DemoData").glob("patient*.json"))
    assert len(files) == 4
    return [(f.stem, json.loads(f.read_text(encoding="utf-8"))) for f in files]


def person(
    record_id: str, given: str, family: str, phone: str, *identifiers: tuple[str, str]
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": record_id,
        "name": [{"use": "official", "given": [given], "family": family}],
        "telecom": [{"system": "phone", "value": phone}],
    }
    if identifiers:
        resource["identifier"] = [{"system": s, "value": v} for s, v in identifiers]
    return resource


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def test_opencr_demo_patients_form_one_cluster(
    opencr_dir: Path, deterministic_rules: DecisionRules
) -> None:
    matcher = Matcher(deterministic_rules, record_id_systems=DEFAULT_RECORD_ID_SYSTEMS)
    dedup = Deduplicator(matcher)
    results = {rid: dedup.add(rid, resource) for rid, resource in demo_patients(opencr_dir)}

    golden = dict(dedup.golden_ids())
    assert golden["patient1_openmrs"] == "golden-1"
    assert golden["patient2_dhis2"] == "golden-1"
    assert golden["patient3_lims"] == "golden-1"
    # patient4 differs in a given name only; family and phone agree (score 2 = auto).
    assert golden["patient4_lims"] == "golden-1"

    assert results["patient1_openmrs"].golden_id is None  # the first record starts a cluster
    assert results["patient2_dhis2"].golden_id == 0  # internal position of patient1
    assert [c.record_id for c in results["patient3_lims"].auto] == [0, 1]
    assert dedup.review == []
    stats = dedup.stats
    assert (stats.records, stats.clusters, stats.auto_links) == (4, 1, 3)
    assert (stats.potential_matches, stats.conflicts, stats.skipped) == (0, 0, 0)


def test_opencr_demo_patients_with_default_rules(opencr_dir: Path) -> None:
    matcher = Matcher(default_rules(), record_id_systems=DEFAULT_RECORD_ID_SYSTEMS)
    dedup = Deduplicator(matcher)
    for rid, resource in demo_patients(opencr_dir)[:3]:
        dedup.add(rid, resource)
    assert {golden for _, golden in dedup.golden_ids()} == {"golden-1"}


def test_record_id_systems_are_never_compared(opencr_dir: Path) -> None:
    # patient3 and patient4 share their lims record id; under a rule set matching on
    # identifiers only, that must not make them one person when lims is a record-id system.
    rules_json: dict[str, Any] = {
        "rules": [
            {
                "matchingType": "deterministic",
                "fields": {
                    "lims": {
                        "algorithm": "exact",
                        "fhirpath": "identifier.where(system='http://clientregistry.org/lims')"
                        ".value",
                    },
                },
                "potentialMatchThreshold": 1,
                "autoMatchThreshold": 1,
            }
        ]
    }
    patients = demo_patients(opencr_dir)[2:]
    rules = parse_rules(rules_json, source="test")
    with_ids = Deduplicator(Matcher(rules))
    for rid, resource in patients:
        with_ids.add(rid, resource)
    without_ids = Deduplicator(Matcher(rules, record_id_systems=DEFAULT_RECORD_ID_SYSTEMS))
    for rid, resource in patients:
        without_ids.add(rid, resource)
    assert with_ids.stats.clusters == 1
    assert without_ids.stats.clusters == 2


def test_duplicate_id_raises_invalid_record(deterministic_rules: DecisionRules) -> None:
    dedup = Deduplicator(Matcher(deterministic_rules))
    dedup.add("a", person("a", "john", "smith", "111"), line=1)
    with pytest.raises(InvalidRecord) as info:
        dedup.add("a", person("a", "mary", "okello", "222"), line=7)
    assert info.value.line == 7
    assert info.value.record_id == "a"
    assert "duplicate Patient id 'a'" in info.value.message
    # The rejected record left no trace.
    assert dedup.stats.records == 1
    assert dedup.golden_ids() == [("a", "golden-1")]
    # add_prepared checks too.
    with pytest.raises(InvalidRecord):
        dedup.add_prepared("a", dedup.matcher.prepare(person("a", "x", "y", "3")))


def test_potential_matches_and_conflicts_are_kept_for_review(
    tmp_path: Path, deterministic_rules: DecisionRules
) -> None:
    # OpenCR's classification as the registry applies it: conflicts stay apart, for review
    dedup = Deduplicator(Matcher(deterministic_rules), merge_conflicts=False)
    # b agrees with a on the given name only (score 1: potential);
    # c agrees with a on given+family and with b on given+phone (score 2: auto with both).
    dedup.add("a", person("a", "john", "smith", "111"))
    result_b = dedup.add("b", person("b", "johnny", "okello", "222"))
    result_c = dedup.add("c", person("c", "john", "smith", "222"))

    assert result_b.golden_id is None
    assert [c.score.decision for c in result_b.potential] == ["potential"]
    assert result_c.golden_id == 0
    assert len(result_c.conflicts) == 1
    assert dedup.golden_ids() == [("a", "golden-1"), ("b", "golden-2"), ("c", "golden-1")]
    assert [(r.record_id, r.other_id, r.score, r.kind) for r in dedup.review] == [
        ("b", "a", 1.0, "potential"),
        ("c", "b", 2.0, "conflict"),
    ]
    stats = dedup.stats
    assert (stats.records, stats.clusters, stats.auto_links) == (3, 2, 1)
    assert (stats.potential_matches, stats.conflicts) == (1, 1)

    output = tmp_path / "out" / "clusters.csv"
    potential = dedup.write(output)
    assert potential == tmp_path / "out" / "clusters.potential.csv"
    assert read_rows(output) == [
        ["patient_id", "golden_id"],
        ["a", "golden-1"],
        ["b", "golden-2"],
        ["c", "golden-1"],
    ]
    assert read_rows(potential) == [
        ["patient_id", "other_id", "score"],
        ["b", "a", "1.0000"],
        ["c", "b", "2.0000"],
    ]


def test_supported_conflict_joins_the_two_clusters(deterministic_rules: DecisionRules) -> None:
    """By default a record that auto-matches two clusters joins them when the conflicting
    record is itself at least a potential match of the chosen cluster's record."""
    dedup = Deduplicator(Matcher(deterministic_rules))
    dedup.add("a", person("a", "john", "smith", "111"))
    dedup.add("b", person("b", "johnny", "okello", "222"))  # potential match of a
    result_c = dedup.add("c", person("c", "john", "smith", "222"))
    assert result_c.golden_id == 0
    assert len(result_c.conflicts) == 1  # the classification itself is OpenCR's
    assert dedup.golden_ids() == [("a", "golden-1"), ("b", "golden-1"), ("c", "golden-1")]
    assert [(r.record_id, r.other_id, r.kind) for r in dedup.review] == [("b", "a", "potential")]
    assert (dedup.stats.merges, dedup.stats.conflicts, dedup.stats.clusters) == (1, 0, 1)
    # later records see the merged cluster as one golden record: no conflict between them
    result_d = dedup.add("d", person("d", "johnny", "okello", "222"))
    assert result_d.golden_id == 0
    assert result_d.conflicts == []


UNSUPPORTED_RULES = {
    "rules": [
        {
            "matchingType": "deterministic",
            "fields": {
                "given": {"algorithm": "exact", "fhirpath": "name.given"},
                "family": {"algorithm": "exact", "fhirpath": "name.family"},
                "phone": {"algorithm": "exact", "fhirpath": "telecom.value"},
                "birthDate": {"algorithm": "exact", "fhirpath": "birthDate"},
            },
            "potentialMatchThreshold": 2,
            "autoMatchThreshold": 2,
        }
    ]
}


def test_unsupported_conflict_stays_for_review() -> None:
    """c auto-matches a (names) and b (phone and birth date), but a and b have nothing in
    common: the clusters stay apart and the conflict is kept for review."""
    dedup = Deduplicator(Matcher(parse_rules(UNSUPPORTED_RULES)))
    a = person("a", "john", "smith", "111") | {"birthDate": "1990-01-01"}
    b = person("b", "mary", "okello", "222") | {"birthDate": "2000-02-02"}
    c = person("c", "john", "smith", "222") | {"birthDate": "2000-02-02"}
    for record in (a, b, c):
        dedup.add(record["id"], record)
    assert dedup.golden_ids() == [("a", "golden-1"), ("b", "golden-2"), ("c", "golden-1")]
    assert [(r.record_id, r.other_id, r.kind) for r in dedup.review] == [("c", "b", "conflict")]
    assert (dedup.stats.merges, dedup.stats.conflicts) == (0, 1)


def test_write_exact_format_and_input_order(tmp_path: Path) -> None:
    dedup = Deduplicator(Matcher(default_rules()))
    ids = ["z-9", "m-1", "a-5"]
    for rid, name in zip(ids, ["zed", "em", "ay"], strict=True):
        dedup.add(rid, person(rid, name, f"{name}son", f"0{len(name)}{rid}"))
    output = tmp_path / "clusters.csv"
    potential = dedup.write(output)
    # Exactly: header, then one row per record in input order; golden ids numbered in the
    # order clusters were created; "\r\n" line ends as the csv module writes them.
    assert output.read_bytes() == (
        b"patient_id,golden_id\r\nz-9,golden-1\r\nm-1,golden-2\r\na-5,golden-3\r\n"
    )
    assert potential.read_bytes() == b"patient_id,other_id,score\r\n"


def test_write_empty(tmp_path: Path) -> None:
    dedup = Deduplicator(Matcher(default_rules()))
    potential = dedup.write(tmp_path / "deep" / "er" / "c.csv")
    assert read_rows(tmp_path / "deep" / "er" / "c.csv") == [["patient_id", "golden_id"]]
    assert read_rows(potential) == [["patient_id", "other_id", "score"]]


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("clusters.csv", "clusters.potential.csv"),
        ("out/run-1.csv", "out/run-1.potential.csv"),
        ("clusters", "clusters.potential.csv"),
        ("clusters.txt", "clusters.potential.txt"),
    ],
)
def test_potential_path_naming(output: str, expected: str) -> None:
    assert potential_path_for(Path(output)) == Path(expected)


def test_true_pairs_compared_counts_candidates_of_the_same_entity(
    deterministic_rules: DecisionRules,
) -> None:
    entity_of = {"a": "1", "b": "1", "c": "2"}
    dedup = Deduplicator(Matcher(deterministic_rules), entity_of=entity_of)
    dedup.add("a", person("a", "john", "smith", "111"))
    dedup.add("b", person("b", "jon", "smith", "111"))
    dedup.add("c", person("c", "john", "smith", "333"))
    assert dedup.stats.true_pairs_compared == 1
    assert dedup.stats.candidate_pairs >= 3


def test_stats_json() -> None:
    stats = DedupeStats(records=10, clusters=7, auto_links=3, started=0.0, finished=2.0)
    assert stats.seconds == 2.0
    assert stats.records_per_second == 5.0
    data = stats.to_json()
    assert data["records"] == 10
    assert data["records_per_second"] == 5.0
    assert set(data) >= {"records", "skipped", "clusters", "auto_links", "potential_matches"}


def seedling(n: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": f"seedling-{n}",
        "name": [{"family": f"Seedling{n}", "given": ["Sam"]}],
        "gender": "male",
        "birthDate": f"1960-02-{n:02d}",
    }


@pytest.mark.parametrize("cannot_links", [True, False])
def test_clusters_do_not_chain(cannot_links: bool) -> None:
    """The issue's reproduction: each Sam Seedling matches the one born the day before, but
    the 1st and the 17th are no match; with cannot-links they never share a cluster."""
    dedup = Deduplicator(Matcher(default_rules()), cannot_links=cannot_links)
    for n in range(1, 21):
        dedup.add(f"seedling-{n}", seedling(n))
    golden = dict(dedup.golden_ids())
    if not cannot_links:  # what happened before: one chain
        assert len(set(golden.values())) == 1
        return
    assert golden["seedling-1"] != golden["seedling-17"]
    assert golden["seedling-1"] == golden["seedling-2"]
    scorer = dedup.matcher.scorer
    for one in golden:  # no cluster holds two records that are no match
        for other in golden:
            if one < other and golden[one] == golden[other]:
                a = dedup.features[dedup.ids.index(one)]
                b = dedup.features[dedup.ids.index(other)]
                assert scorer.likely(a, b) is not None, (one, other)
    assert dedup.stats.cannot_links > 0


def test_a_different_national_id_never_joins_a_cluster() -> None:
    """Two records with different social security numbers are kept apart even when a third
    record matches both (rules declaring the usual systems unique)."""
    ssn = "http://hl7.org/fhir/sid/us-ssn"
    base = {
        "resourceType": "Patient",
        "name": [{"family": "Okello", "given": ["Grace"]}],
        "gender": "female",
        "birthDate": "1980-03-04",
        "telecom": [{"system": "phone", "value": "0772123456"}],
    }
    raw = default_rules().to_json()
    raw["rules"][0]["fields"]["identifier"]["uniqueSystems"] = "default"
    dedup = Deduplicator(Matcher(parse_rules(raw)))
    dedup.add("a", {**base, "identifier": [{"system": ssn, "value": "111-22-3333"}]})
    dedup.add("b", dict(base))
    dedup.add("c", {**base, "identifier": [{"system": ssn, "value": "999-88-7777"}]})
    golden = dict(dedup.golden_ids())
    assert golden["a"] == golden["b"]
    assert golden["c"] != golden["a"]
    assert sorted((r.record_id, r.other_id, r.kind) for r in dedup.review) == [
        ("c", "a", "conflict"),
        ("c", "b", "conflict"),
    ]
