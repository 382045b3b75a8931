"""Term frequencies: how common each value of a field is among the records held.

Agreement on a rare surname says more than agreement on a common one. Fields whose levels ask
for ``termFrequency`` replace the level's u with the value's relative frequency, as Splink does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from clientregistry.matching.features import FeatureExtractor, Features


class TermCounts:
    """Value counts for the slots that need them, updated as records come and go."""

    def __init__(self, extractor: FeatureExtractor) -> None:
        slots = set()
        for rs in extractor.rules.rule_sets:
            for f in rs.fields:
                if any(level.term_frequency for level in f.levels):
                    slots.add(extractor.slot(f))
        self.slots = tuple(sorted(slots))
        self._counts: dict[int, Counter[str]] = {slot: Counter() for slot in self.slots}
        self._totals: dict[int, int] = dict.fromkeys(self.slots, 0)

    def add(self, features: Features, times: int = 1) -> None:
        for slot in self.slots:
            value = features[slot]
            if value:
                self._counts[slot][value] += times
                self._totals[slot] += times

    def remove(self, features: Features) -> None:
        self.add(features, times=-1)

    def set_counts(self, slot: int, counts: Counter[str]) -> None:
        """Replace one slot's counts (the registry loads them from its database)."""
        self._counts[slot] = counts
        self._totals[slot] = sum(counts.values())

    def items(self) -> Iterator[tuple[int, str, int]]:
        """Every ``(slot, value, count)`` counted (text values only, as the table holds)."""
        for slot in self.slots:
            for value, count in self._counts[slot].items():
                if isinstance(value, str):
                    yield slot, value, count

    def tf(self, slot: int, value: str) -> float | None:
        """Relative frequency of ``value`` in ``slot``; ``None`` when too little is known."""
        total = self._totals.get(slot, 0)
        if total < 50:
            return None
        count = self._counts[slot].get(value, 0)
        return (count if count > 1 else 1) / total  # max(count, 1), without the call
