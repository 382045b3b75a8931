"""Tests of pairwise precision, recall and F1 against the truth."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clientregistry.batch.evaluate import (
    PairwiseScores,
    evaluate_files,
    pairwise_scores,
    read_two_columns,
)
from clientregistry.errors import InvalidRecord


def clusters_of(*groups: str, prefix: str = "g") -> dict[str, str]:
    """``clusters_of("ab", "c")`` -> {a: g0, b: g0, c: g1}."""
    return {record: f"{prefix}{i}" for i, group in enumerate(groups) for record in group}


def test_over_merged_cluster() -> None:
    # Predicted {a,b,c}: pairs ab, ac, bc; truth {a,b},{c}: pair ab. One correct of three.
    scores = pairwise_scores(clusters_of("abc"), clusters_of("ab", "c", prefix="e"))
    assert scores.predicted_pairs == 3
    assert scores.true_pairs == 1
    assert scores.correct_pairs == 1
    assert scores.precision == pytest.approx(1 / 3)
    assert scores.recall == 1.0
    assert scores.f1 == pytest.approx(2 * (1 / 3) / (1 / 3 + 1))  # 0.5
    assert scores.f1 == pytest.approx(0.5)
    assert scores.records == 3
    assert scores.missing_from_truth == 0


def test_under_merged_clusters() -> None:
    # Predicted {a,b},{c},{d}; truth {a,b,c,d}: 1 predicted pair, correct; 6 true pairs.
    scores = pairwise_scores(clusters_of("ab", "c", "d"), clusters_of("abcd"))
    assert (scores.predicted_pairs, scores.true_pairs, scores.correct_pairs) == (1, 6, 1)
    assert scores.precision == 1.0
    assert scores.recall == pytest.approx(1 / 6)
    assert scores.f1 == pytest.approx(2 / 7)


def test_mixed_case() -> None:
    # Predicted {a,b,c},{d,e}; truth {a,b},{c,d,e}.
    # predicted pairs: ab ac bc de (4); true pairs: ab cd ce de (4); correct: ab de (2).
    scores = pairwise_scores(clusters_of("abc", "de"), clusters_of("ab", "cde"))
    assert (scores.predicted_pairs, scores.true_pairs, scores.correct_pairs) == (4, 4, 2)
    assert scores.precision == pytest.approx(0.5)
    assert scores.recall == pytest.approx(0.5)
    assert scores.f1 == pytest.approx(0.5)


def test_perfect_clustering_with_different_labels() -> None:
    scores = pairwise_scores(
        clusters_of("ab", "cde", "f"), clusters_of("ab", "cde", "f", prefix="x")
    )
    assert (scores.precision, scores.recall, scores.f1) == (1.0, 1.0, 1.0)
    assert (scores.predicted_pairs, scores.correct_pairs) == (4, 4)


def test_no_pairs_anywhere() -> None:
    scores = pairwise_scores(clusters_of("a", "b"), clusters_of("a", "b"))
    assert (scores.precision, scores.recall, scores.f1) == (1.0, 1.0, 1.0)
    assert scores.predicted_pairs == scores.true_pairs == 0


def test_all_wrong() -> None:
    scores = pairwise_scores(clusters_of("ab", "cd"), clusters_of("ac", "bd"))
    assert (scores.precision, scores.recall, scores.f1) == (0.0, 0.0, 0.0)


def test_records_missing_from_truth_are_counted_and_left_out() -> None:
    clusters = clusters_of("abx", "cy")
    truth = clusters_of("ab", "c", "z")  # x and y are not in the truth; z is not clustered
    scores = pairwise_scores(clusters, truth)
    assert scores.missing_from_truth == 2
    assert scores.records == 3
    assert (scores.predicted_pairs, scores.true_pairs, scores.correct_pairs) == (1, 1, 1)
    assert scores.f1 == 1.0


def test_to_json() -> None:
    scores = pairwise_scores(clusters_of("abc"), clusters_of("ab", "c"))
    assert scores.to_json() == {
        "precision": 0.333333,
        "recall": 1.0,
        "f1": 0.5,
        "true_pairs": 1,
        "predicted_pairs": 3,
        "correct_pairs": 1,
        "records": 3,
        "missing_from_truth": 0,
    }


def brute_force(clusters: dict[str, str], truth: dict[str, str]) -> tuple[int, int, int]:
    common = sorted(r for r in clusters if r in truth)
    predicted = true = correct = 0
    for a, b in itertools.combinations(common, 2):
        same_cluster = clusters[a] == clusters[b]
        same_entity = truth[a] == truth[b]
        predicted += same_cluster
        true += same_entity
        correct += same_cluster and same_entity
    return predicted, true, correct


labels = st.dictionaries(
    st.sampled_from("abcdefghijkl"), st.sampled_from("0123"), min_size=0, max_size=12
)


@given(labels, labels)
def test_counts_agree_with_brute_force(clusters: dict[str, str], truth: dict[str, str]) -> None:
    scores = pairwise_scores(clusters, truth)
    assert (scores.predicted_pairs, scores.true_pairs, scores.correct_pairs) == brute_force(
        clusters, truth
    )
    assert 0.0 <= scores.precision <= 1.0
    assert 0.0 <= scores.recall <= 1.0
    assert 0.0 <= scores.f1 <= 1.0
    assert scores.records + scores.missing_from_truth == len(clusters)


# --------------------------------------------------------------------------- files


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_evaluate_files(tmp_path: Path) -> None:
    clusters = write(
        tmp_path / "clusters.csv",
        "patient_id,golden_id\na,golden-1\nb,golden-1\nc,golden-1\nx,golden-2\n",
    )
    truth = write(tmp_path / "truth.csv", "patient_id,entity_id\na,1\nb,1\nc,2\n")
    scores = evaluate_files(clusters, truth)
    assert isinstance(scores, PairwiseScores)
    assert scores.precision == pytest.approx(1 / 3)
    assert scores.recall == 1.0
    assert scores.missing_from_truth == 1


def test_read_two_columns_ignores_other_columns_and_order(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "entity_id,extra,patient_id\n1,q,a\n2,r,b\n")
    assert read_two_columns(path, "patient_id", "entity_id") == {"a": "1", "b": "2"}


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("patient_id,entity\na,1\n", 1, "no column 'entity_id'"),
        ("id,entity_id\na,1\n", 1, "no column 'patient_id'"),
        ("", 1, "no column 'patient_id'"),
        ("patient_id,entity_id\na,1\nb,\n", 3, "empty patient_id or entity_id"),
        ("patient_id,entity_id\na,1\n,2\n", 3, "empty patient_id or entity_id"),
    ],
)
def test_bad_truth_csv(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    clusters = write(tmp_path / "clusters.csv", "patient_id,golden_id\na,g\n")
    truth = write(tmp_path / "truth.csv", text)
    with pytest.raises(InvalidRecord) as info:
        evaluate_files(clusters, truth)
    assert info.value.line == line
    assert fragment in info.value.message
    assert str(truth) in info.value.message


def test_bad_clusters_csv_names_its_columns(tmp_path: Path) -> None:
    clusters = write(tmp_path / "clusters.csv", "patient,golden_id\na,g\n")
    truth = write(tmp_path / "truth.csv", "patient_id,entity_id\na,1\n")
    with pytest.raises(InvalidRecord) as info:
        evaluate_files(clusters, truth)
    assert "no column 'patient_id' (columns: patient, golden_id)" in info.value.message


def test_missing_file(tmp_path: Path) -> None:
    truth = write(tmp_path / "truth.csv", "patient_id,entity_id\na,1\n")
    with pytest.raises(InvalidRecord) as info:
        evaluate_files(tmp_path / "nope.csv", truth)
    assert "cannot read" in info.value.message
    assert "nope.csv" in info.value.message


def test_truth_sharing_no_ids_is_an_error(tmp_path: Path) -> None:
    """The wrong truth file (or ids written differently) would score P = R = 1 over nothing."""
    clusters = write(tmp_path / "clusters.csv", "patient_id,golden_id\na,g1\nb,g1\n")
    truth = write(tmp_path / "truth.csv", "patient_id,entity_id\nrec-a,1\nrec-b,1\n")
    with pytest.raises(InvalidRecord) as info:
        evaluate_files(clusters, truth)
    assert "shares no patient_id" in info.value.message
    assert str(truth) in info.value.message and str(clusters) in info.value.message
    assert "rec-a" in info.value.message and "a, b" in info.value.message


def test_empty_clusters_file_is_an_error(tmp_path: Path) -> None:
    clusters = write(tmp_path / "clusters.csv", "patient_id,golden_id\n")
    truth = write(tmp_path / "truth.csv", "patient_id,entity_id\na,1\n")
    with pytest.raises(InvalidRecord) as info:
        evaluate_files(clusters, truth)
    assert "no records" in info.value.message
