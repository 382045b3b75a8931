"""Features to JSON and back."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clientregistry.store.features_codec import decode_features, encode_features

feature_values = st.one_of(st.text(), st.frozensets(st.text(), max_size=5))


@given(st.lists(feature_values, max_size=8).map(tuple))
def test_round_trip(features: tuple[object, ...]) -> None:
    assert decode_features(encode_features(features)) == features


def test_sets_are_sorted_and_marked() -> None:
    text = encode_features(("jane", frozenset({"b|2", "a|1"}), frozenset()))
    assert json.loads(text) == ["jane", {"set": ["a|1", "b|2"]}, {"set": []}]
    assert encode_features((frozenset({"a", "b"}),)) == encode_features((frozenset({"b", "a"}),))


def test_decoded_types() -> None:
    features = decode_features('["x", {"set": ["a"]}]')
    assert features == ("x", frozenset({"a"}))
    assert isinstance(features[1], frozenset)


def test_rejects_other_values() -> None:
    with pytest.raises(TypeError):
        encode_features(("x", 3))
    with pytest.raises(ValueError):
        decode_features('{"set": []}')
    with pytest.raises(ValueError):
        decode_features('[["a"]]')
