"""Features to JSON and back.

:data:`clientregistry.matching.features.Features` is a tuple of ``str`` (text slots) and
``frozenset[str]`` (identifier-set slots). JSON has no sets, so a set is written as an object
``{"set": [sorted values]}`` (the marker), a string as itself::

    ("jane", frozenset({"b|2", "a|1"}))  <->  ["jane", {"set": ["a|1", "b|2"]}]

Sorting makes the text deterministic: equal features give equal JSON.
"""

from __future__ import annotations

from typing import Any

import orjson

from clientregistry.matching.features import Features

SET_MARKER = "set"


def to_json_value(features: Features) -> list[Any]:
    """The JSON-ready list for ``features``."""
    out: list[Any] = []
    for value in features:
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, frozenset | set):
            out.append({SET_MARKER: sorted(value)})
        else:
            raise TypeError(f"feature values are str or frozenset, not {type(value).__name__}")
    return out


def from_json_value(data: Any) -> Features:
    """The features a :func:`to_json_value` list describes."""
    if not isinstance(data, list):
        raise ValueError("encoded features must be a JSON array")
    out: list[Any] = []
    for value in data:
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, dict) and isinstance(value.get(SET_MARKER), list):
            out.append(frozenset(value[SET_MARKER]))
        else:
            raise ValueError(f"not an encoded feature value: {value!r}")
    return tuple(out)


def encode_features(features: Features) -> str:
    """``features`` as JSON text."""
    return orjson.dumps(to_json_value(features)).decode()


def decode_features(text: str | bytes) -> Features:
    """The features encoded in ``text`` by :func:`encode_features`."""
    return from_json_value(orjson.loads(text))
