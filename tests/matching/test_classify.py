"""Tests of OpenCR's classification of one submission against its scored candidates."""

from __future__ import annotations

from collections.abc import Hashable

import pytest

from clientregistry.matching.classify import Candidate, Classification, classify
from clientregistry.matching.scoring import PairScore


def _candidate(record: Hashable, golden: Hashable, decision: str, strength: float) -> Candidate:
    # a deterministic rule set with auto threshold 6: strength = score - 6
    score = PairScore(6.0 + strength, decision, 0)  # type: ignore[arg-type]
    return Candidate(record, golden, score, strength)


def _ids(candidates: list[Candidate]) -> list[Hashable]:
    return [c.record_id for c in candidates]


def test_no_candidates() -> None:
    result = classify([])
    assert result == Classification(None, [], [], [])


def test_best_auto_match_decides_the_golden_record() -> None:
    result = classify(
        [
            _candidate("r1", "g1", "auto", 0.5),
            _candidate("r2", "g2", "auto", 2.0),
            _candidate("r3", "g3", "potential", -1.0),
        ]
    )
    assert result.golden_id == "g2"
    assert _ids(result.auto) == ["r2"]
    assert _ids(result.conflicts) == ["r1"]  # auto under another golden record
    assert _ids(result.potential) == ["r3"]


def test_tie_prefers_the_current_golden_record() -> None:
    candidates = [
        _candidate("r1", "g1", "auto", 1.0),
        _candidate("r2", "g2", "auto", 1.0),
    ]
    assert classify(candidates, current_golden="g2").golden_id == "g2"
    assert classify(candidates, current_golden="g1").golden_id == "g1"
    # without a current golden among the leaders, the first leader wins
    assert classify(candidates).golden_id == "g1"
    assert classify(candidates, current_golden="g9").golden_id == "g1"
    result = classify(candidates, current_golden="g2")
    assert _ids(result.auto) == ["r2"]
    assert _ids(result.conflicts) == ["r1"]


def test_current_golden_does_not_beat_a_stronger_match() -> None:
    candidates = [
        _candidate("r1", "g1", "auto", 1.0),
        _candidate("r2", "g2", "auto", 1.5),
    ]
    result = classify(candidates, current_golden="g1")
    assert result.golden_id == "g2"
    assert _ids(result.conflicts) == ["r1"]


def test_auto_matches_under_another_golden_record_are_conflicts() -> None:
    result = classify(
        [
            _candidate("r1", "g1", "auto", 3.0),
            _candidate("r2", "g1", "auto", 1.0),
            _candidate("r3", "g2", "auto", 2.0),
            _candidate("r4", "g3", "auto", 0.0),
        ]
    )
    assert result.golden_id == "g1"
    assert _ids(result.auto) == ["r1", "r2"]
    assert _ids(result.conflicts) == ["r3", "r4"]
    assert result.potential == []


def test_potential_matches_under_the_chosen_golden_count_as_auto() -> None:
    result = classify(
        [
            _candidate("r1", "g1", "auto", 1.0),
            _candidate("r2", "g1", "potential", -1.0),
            _candidate("r3", "g2", "potential", -0.5),
        ]
    )
    assert result.golden_id == "g1"
    assert _ids(result.auto) == ["r1", "r2"]
    assert _ids(result.potential) == ["r3"]
    assert result.conflicts == []


def test_no_auto_match_gives_no_golden_and_lists_potentials() -> None:
    result = classify(
        [
            _candidate("r1", "g1", "potential", -1.5),
            _candidate("r2", "g2", "potential", -0.5),
            _candidate("r3", "g3", "none", -5.0),
        ],
        current_golden="g1",
    )
    assert result.golden_id is None
    assert result.auto == []
    assert result.conflicts == []
    assert _ids(result.potential) == ["r2", "r1"]  # strongest first; 'none' left out


def test_broken_matches_are_dropped() -> None:
    candidates = [
        _candidate("r1", "g1", "auto", 2.0),
        _candidate("r2", "g2", "auto", 1.0),
        _candidate("r3", "g1", "potential", -1.0),
    ]
    result = classify(candidates, broken={"r1"})
    assert result.golden_id == "g2"
    assert _ids(result.auto) == ["r2"]
    assert _ids(result.potential) == ["r3"]
    assert result.conflicts == []
    result = classify(candidates, broken=["r1", "r2"])
    assert result.golden_id is None
    assert _ids(result.potential) == ["r3"]
    assert classify(candidates, broken={"r1", "r2", "r3"}) == Classification(None)


def test_none_decisions_are_ignored_even_under_the_chosen_golden() -> None:
    result = classify(
        [
            _candidate("r1", "g1", "auto", 1.0),
            _candidate("r2", "g1", "none", -float("inf")),
        ]
    )
    assert _ids(result.auto) == ["r1"]
    assert result.potential == [] and result.conflicts == []


def test_lists_are_ordered_by_strength() -> None:
    result = classify(
        [
            _candidate("weak", "g1", "potential", -1.0),
            _candidate("strong", "g1", "auto", 4.0),
            _candidate("middle", "g1", "auto", 2.0),
            _candidate("c-low", "g2", "auto", 0.5),
            _candidate("c-high", "g3", "auto", 3.0),
        ]
    )
    assert result.golden_id == "g1"
    assert _ids(result.auto) == ["strong", "middle", "weak"]
    assert _ids(result.conflicts) == ["c-high", "c-low"]


@pytest.mark.parametrize("current", [None, "g1", "g2"])
def test_every_kept_candidate_is_listed_once(current: str | None) -> None:
    candidates = [
        _candidate("a", "g1", "auto", 1.0),
        _candidate("b", "g2", "auto", 1.0),
        _candidate("c", "g2", "potential", -1.0),
        _candidate("d", "g3", "potential", -2.0),
        _candidate("e", "g1", "none", -9.0),
    ]
    result = classify(candidates, current_golden=current)
    listed = _ids(result.auto) + _ids(result.conflicts) + _ids(result.potential)
    assert sorted(listed) == ["a", "b", "c", "d"]
    assert all(c.golden_id == result.golden_id for c in result.auto)
    assert all(c.golden_id != result.golden_id for c in result.conflicts + result.potential)
