"""Records' features held packed, one string each, for files of millions of records.

A record's :data:`~clientregistry.matching.features.Features` (a tuple of strings and
frozensets) takes about 900 bytes in memory; ``clientregistry dedupe`` keeps every record's
features in both of its processes. Packed into one string (values joined by a separator,
identifier sets by another) a record takes about 200. A record is unpacked, into a tuple equal
to the one stored, when it is read: a candidate being scored, a cluster member being checked.
A record that does not come back equal (a value holding a separator character) is kept as its
tuple.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import overload

from clientregistry.matching.features import FeatureExtractor, Features

_FIELD = "\x1f"
_ITEM = "\x1e"
_EMPTY: frozenset[str] = frozenset()


def _codec(sets: Sequence[bool]) -> tuple[Callable[[Features], str], Callable[[str], Features]]:
    """Functions packing and unpacking features whose slots are sets where ``sets`` says."""
    parts = [
        f"(frozenset(p[{i}].split({_ITEM!r})) if p[{i}] else EMPTY)" if is_set else f"p[{i}]"
        for i, is_set in enumerate(sets)
    ]
    values = [f"{_ITEM!r}.join(f[{i}])" if is_set else f"f[{i}]" for i, is_set in enumerate(sets)]
    source = (
        "def pack(f):\n"
        f"    return {_FIELD!r}.join(({', '.join(values)},))\n"
        "def unpack(s):\n"
        f"    p = s.split({_FIELD!r})\n"
        f"    return ({', '.join(parts)},)\n"
    )
    names: dict[str, object] = {"EMPTY": _EMPTY}
    exec(compile(source, "<packed features>", "exec"), names)
    return names["pack"], names["unpack"]  # type: ignore[return-value]


class PackedFeatures(Sequence[Features]):
    """A growing list of records' features, each packed into one string."""

    def __init__(self, extractor: FeatureExtractor) -> None:
        sets = [is_set for _, _, is_set, _ in extractor.layout]
        self._slots = len(sets)
        self._pack, self._unpack = _codec(sets)
        self._items: list[str | Features] = []

    def __len__(self) -> int:
        return len(self._items)

    def append(self, features: Features) -> None:
        item: str | Features = features
        if len(features) == self._slots:
            try:
                packed = self._pack(features)
            except TypeError:  # a value of another type than the layout says: keep the tuple
                packed = None
            if packed is not None and self._unpack(packed) == features:  # no separator inside
                item = packed
        self._items.append(item)

    @overload
    def __getitem__(self, index: int) -> Features: ...

    @overload
    def __getitem__(self, index: slice) -> list[Features]: ...

    def __getitem__(self, index: int | slice) -> Features | list[Features]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self._items)))]
        item = self._items[index]
        return self._unpack(item) if isinstance(item, str) else item

    def __iter__(self) -> Iterator[Features]:
        unpack = self._unpack
        for item in self._items:
            yield unpack(item) if isinstance(item, str) else item
