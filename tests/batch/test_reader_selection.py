"""The reader process chooses candidates selectively (``dedupe``'s way, which the registry and
its re-match share) unless told to take every record sharing a key."""

from __future__ import annotations

from clientregistry.batch.pipeline import Reader
from clientregistry.matching.blocking import MemoryIndex, PositionIndex
from clientregistry.matching.matcher import Matcher
from clientregistry.matching.rules import default_rules


def _patient(n: int) -> dict[str, object]:
    # all named John Smith (one shared key); birth dates and phones of their own
    return {
        "resourceType": "Patient",
        "name": [{"family": "Smith", "given": ["John"]}],
        "birthDate": f"{1900 + n}-{1 + n % 12:02d}-{1 + n % 28:02d}",
        "telecom": [{"system": "phone", "value": f"555{n:07d}"}],
    }


def test_selective_reading_takes_few_one_key_candidates_and_whole_blocks_all() -> None:
    matcher = Matcher(default_rules())
    selective, registry = Reader(matcher), Reader(matcher, selective=False)
    assert isinstance(selective.index, PositionIndex)
    assert isinstance(registry.index, MemoryIndex)
    for n in range(60):
        one = selective.prepare(f"p{n}", _patient(n), False)
        other = registry.prepare(f"p{n}", _patient(n), False)
        assert one is not None and other is not None
    # the last record: whole blocks score every earlier John Smith; the selective way the
    # newest eight (none shares a second key)
    assert other[1].ids == list(range(59))
    assert one[1].ids == list(range(58, 50, -1))
    assert one[1].considered == other[1].considered == 59
    assert not one[1].capped
