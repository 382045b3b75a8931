"""Packed features come back equal to the features stored."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from clientregistry.batch.packed import PackedFeatures
from clientregistry.matching.matcher import Matcher
from clientregistry.matching.rules import default_rules

_MATCHER = Matcher(default_rules())
_SETS = [is_set for _, _, is_set, _ in _MATCHER.extractor.layout]
_TEXT = st.text(alphabet=st.sampled_from("ab |-\x1e\x1fé"), max_size=6)


def _features() -> st.SearchStrategy[tuple[object, ...]]:
    return st.tuples(*(st.frozensets(_TEXT, max_size=3) if is_set else _TEXT for is_set in _SETS))


@settings(max_examples=300, deadline=None)
@given(st.lists(_features(), max_size=8))
def test_features_come_back_equal(rows: list[tuple[object, ...]]) -> None:
    store = PackedFeatures(_MATCHER.extractor)
    for row in rows:
        store.append(row)
    assert len(store) == len(rows)
    assert [store[i] for i in range(len(rows))] == rows
    assert list(store) == rows
    assert store[1:3] == rows[1:3]


def test_real_features_are_packed_into_one_string() -> None:
    patient = {
        "resourceType": "Patient",
        "name": [{"family": "Smith", "given": ["Mary", "Ann"]}],
        "birthDate": "1980-02-03",
        "gender": "female",
        "identifier": [
            {"system": "urn:a", "value": "1"},
            {"system": "urn:b", "value": "2"},
        ],
    }
    features = _MATCHER.extractor.extract(patient)
    store = PackedFeatures(_MATCHER.extractor)
    store.append(features)
    store.append(())  # a duplicate id's empty features: kept as they are
    assert isinstance(store._items[0], str)
    assert store[0] == features
    assert store[-1] == ()
