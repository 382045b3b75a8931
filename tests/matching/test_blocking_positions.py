"""PositionIndex: the in-memory index of ``dedupe``, held to a plain reference."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from clientregistry.matching.blocking import CandidateSet, MemoryIndex, PositionIndex


def _reference(
    postings: dict[str, list[int]],
    keys: list[str],
    limit: int,
    single_limit: int,
    block_limit: int,
) -> CandidateSet:
    """What PositionIndex promises, written plainly: records sharing two or more keys most
    shared first (ties first seen), then at most ``single_limit`` sharing one key, smallest
    blocks first and each newest first; a block read as far as its newest ``block_limit``."""
    blocks = [
        (min(len(postings[k]), block_limit + 1), postings[k][-block_limit:])
        for k in keys
        if k in postings
    ]
    counts: dict[int, int] = {}
    for _, block in blocks:
        for record in block:
            counts[record] = counts.get(record, 0) + 1
    if not counts:
        return CandidateSet([], False, 0)
    shared = sorted((r for r in counts if counts[r] > 1), key=lambda r: -counts[r])
    singles: list[int] = []
    for _, block in sorted(blocks, key=lambda item: item[0]):
        singles += [r for r in reversed(block) if counts[r] == 1]
    chosen = shared + singles[:single_limit] if len(shared) < limit else shared
    return CandidateSet(chosen[:limit], len(chosen) > limit, len(counts))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(st.sampled_from("abcdefgh"), max_size=5), max_size=40),
    st.integers(min_value=1, max_value=12),
    st.integers(min_value=0, max_value=4),
    st.integers(min_value=1, max_value=6),
)
def test_candidates_are_the_reference_choice(
    records: list[list[str]], limit: int, single_limit: int, block_limit: int
) -> None:
    index = PositionIndex(single_limit=single_limit, block_limit=block_limit, capacity=4)
    postings: dict[str, list[int]] = {}
    for position, record_keys in enumerate(records):
        keys = list(dict.fromkeys(record_keys))
        expected = _reference(postings, keys, limit, single_limit, block_limit)
        assert index.find_then_add(position, keys, limit) == expected
        for key in keys:
            postings.setdefault(key, []).append(position)
    assert len(index) == len(postings)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.sampled_from("abcdefg"), max_size=4), max_size=30))
def test_find_then_add_is_candidates_then_add(records: list[list[str]]) -> None:
    one, two = PositionIndex(capacity=2), PositionIndex(capacity=2)
    for position, record_keys in enumerate(records):
        keys = list(dict.fromkeys(record_keys))
        expected = one.candidates(keys, 5)
        one.add(position, keys)
        assert two.find_then_add(position, keys, 5) == expected
    assert len(one) == len(two)


def test_shared_keys_rank_as_the_memory_index_does() -> None:
    """Without records sharing just one key, the choice is MemoryIndex's (the registry's)."""
    memory, positions = MemoryIndex(), PositionIndex(single_limit=0)
    rows: list[list[str]] = [["a", "b"], ["a", "b", "c"], ["b", "c"], ["a", "c"], ["c", "d"]]
    for position, keys in enumerate(rows):
        memory.add(position, keys)
        positions.add(position, keys)
    expected = [r for r in memory.candidates(["a", "b", "c"], 10).ids if r != 4]
    assert positions.candidates(["a", "b", "c"], 10).ids == expected == [1, 0, 3, 2]


def test_one_key_candidates_come_from_the_rarest_keys_newest_first() -> None:
    index = PositionIndex(single_limit=3)
    for position in range(50):
        index.add(position, ["common name"])
    index.add(50, ["rare name"])
    index.add(51, ["same phone"])
    index.add(52, ["same phone", "common name"])
    found = index.candidates(["common name", "rare name", "same phone"], 200)
    # 52 shares two keys; then three sharing one: the one-record block, the two-record block
    # (52 is taken), the newest of the common name; its other 48 records are never scored
    assert found == CandidateSet([52, 50, 51, 49], False, 53)


def test_a_block_is_read_as_far_as_its_newest_records() -> None:
    index = PositionIndex(single_limit=10, block_limit=4)
    for position in range(10):
        index.add(position, ["k", "j"])
    found = index.candidates(["k", "j"], 200)
    assert found.ids == [6, 7, 8, 9]
    assert found.considered == 4


def test_the_cap_cuts_shared_records_and_says_so() -> None:
    index = PositionIndex()
    for position in range(6):
        index.add(position, ["x", "y"])
    assert index.candidates(["x", "y"], 4) == CandidateSet([0, 1, 2, 3], True, 6)


def test_the_table_grows_and_keeps_every_key() -> None:
    index = PositionIndex(capacity=2)
    for position in range(3000):
        index.add(position, [f"key {position}", f"pair {position // 2}"])
    assert len(index) == 3000 + 1500
    for position in (0, 1, 1777, 2999):
        found = index.candidates([f"key {position}", f"pair {position // 2}"], 10)
        mate = position ^ 1
        assert found.ids == [position, mate] if mate < position else [position, mate]
    assert index.candidates(["nowhere"], 10) == CandidateSet([], False, 0)
    assert index.candidates([], 10) == CandidateSet([], False, 0)
