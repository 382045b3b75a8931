"""The database blocking index behaves like the in-memory one."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Hashable

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from clientregistry.matching.blocking import BlockingIndex, CandidateSet, MemoryIndex
from clientregistry.store.blocking_index import DatabaseBlockingIndex, key_hash, key_hashes
from clientregistry.store.models import BlockingKey, SourceRecord

MakeRecord = Callable[..., SourceRecord]


def _records(session: Session, make_record: MakeRecord, count: int) -> list[str]:
    ids = [f"r{number:03d}" for number in range(count)]
    session.add_all(make_record(record_id) for record_id in ids)
    session.flush()
    return ids


def test_key_hash() -> None:
    assert key_hash("0|g0|JN") == key_hash("0|g0|JN")
    assert key_hash("a") != key_hash("b")
    hashes = [key_hash(f"key{n}") for n in range(2000)]
    assert all(-(2**63) <= h < 2**63 for h in hashes)
    assert any(h < 0 for h in hashes) and any(h > 0 for h in hashes)
    # fixed forever (stored hashes depend on it): BLAKE2b-64 of the UTF-8 key, big-endian, signed
    assert key_hash("") == int.from_bytes(bytes.fromhex("e4a6a0577479b2b4"), "big", signed=True)
    assert key_hash("0|g0|JN") == -3691073647815588770
    assert key_hashes(["b", "a", "b"]) == sorted({key_hash("a"), key_hash("b")})


def test_is_a_blocking_index(session: Session) -> None:
    index: BlockingIndex = DatabaseBlockingIndex(session)
    assert index.candidates(["x"], 10) == CandidateSet([], False, 0)
    assert index.candidates([], 10) == CandidateSet([], False, 0)


def test_add_candidates_remove(session: Session, make_record: MakeRecord) -> None:
    _records(session, make_record, 3)
    index = DatabaseBlockingIndex(session)
    index.add("r000", ["a", "b"])
    index.add("r001", ["b", "c"])
    index.add("r002", ["c"])
    index.add("r002", ["c"])  # again: no error, no double count
    assert index.candidates(["b", "c"], 10) == CandidateSet(["r001", "r000", "r002"], False, 3)
    assert index.candidates(["a"], 10) == CandidateSet(["r000"], False, 1)
    assert index.candidates(["c", "c", "zzz"], 10) == CandidateSet(["r001", "r002"], False, 2)
    index.remove("r001", ["b"])
    assert index.candidates(["b", "c"], 10) == CandidateSet(["r000", "r001", "r002"], False, 3)
    index.remove_record("r001")
    assert index.candidates(["b", "c"], 10) == CandidateSet(["r000", "r002"], False, 2)
    index.remove("r000", [])
    index.add("r000", [])
    assert session.scalar(select(func.count()).select_from(BlockingKey)) == 3


def test_add_new_records_in_one_statement(session: Session, make_record: MakeRecord) -> None:
    _records(session, make_record, 3)
    index = DatabaseBlockingIndex(session)
    index.add_new([("r000", key_hashes(["a", "b"])), ("r001", key_hashes(["b"])), ("r002", [])])
    assert index.candidates(["b"], 10) == CandidateSet(["r000", "r001"], False, 2)
    assert index.candidates(["a"], 10) == CandidateSet(["r000"], False, 1)
    assert session.scalar(select(func.count()).select_from(BlockingKey)) == 3
    index.add_new([])
    assert session.scalar(select(func.count()).select_from(BlockingKey)) == 3


def test_cap(session: Session, make_record: MakeRecord) -> None:
    ids = _records(session, make_record, 8)
    index = DatabaseBlockingIndex(session)
    for record_id in ids:
        index.add(record_id, ["common"])
    index.add("r005", ["rare"])
    result = index.candidates(["common", "rare"], 3)
    assert result == CandidateSet(["r005", "r000", "r001"], True, 8)
    assert index.candidates(["common"], 8) == CandidateSet(ids, False, 8)
    assert index.candidates(["common"], 7).capped
    with pytest.raises(ValueError):
        index.candidates(["common"], 0)


def test_record_ids_are_strings(session: Session) -> None:
    index = DatabaseBlockingIndex(session)
    with pytest.raises(TypeError):
        index.add(12, ["a"])


def _check_same(
    query: list[str],
    limit: int,
    expected: CandidateSet,
    got: CandidateSet,
    postings: dict[Hashable, set[str]],
) -> None:
    """Same candidates, best first; only the order among records sharing as many keys (and
    which of them make the cut at the cap) may differ."""
    assert (got.capped, got.considered, len(got.ids)) == (
        expected.capped,
        expected.considered,
        len(expected.ids),
    )
    assert len(set(got.ids)) == len(got.ids)
    shared = {record: len(keys & set(query)) for record, keys in postings.items()}
    assert all(shared[record] > 0 for record in got.ids)
    got_counts = [shared[record] for record in got.ids]
    assert got_counts == sorted(got_counts, reverse=True)
    assert got_counts == sorted((shared[record] for record in expected.ids), reverse=True)
    by_count: dict[int, set[Hashable]] = defaultdict(set)
    for record in got.ids:
        by_count[shared[record]].add(record)
    expected_by_count: dict[int, set[Hashable]] = defaultdict(set)
    for record in expected.ids:
        expected_by_count[shared[record]].add(record)
    lowest = got_counts[-1] if got_counts else 0
    for count, records in by_count.items():
        everyone = {r for r, n in shared.items() if n == count}
        if count > lowest or not got.capped:
            assert records == expected_by_count[count] == everyone
        else:
            assert records <= everyone and expected_by_count[count] <= everyone


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_same_as_memory_index(seed: int, session: Session, make_record: MakeRecord) -> None:
    rng = random.Random(seed)
    ids = _records(session, make_record, 60)
    keys = [f"k{n}" for n in range(14)]
    memory = MemoryIndex()
    database = DatabaseBlockingIndex(session)
    postings: dict[Hashable, set[str]] = {}
    for _ in range(400):
        action = rng.random()
        if action < 0.45:
            record = rng.choice(ids)
            if record in postings:
                continue
            chosen = rng.sample(keys, rng.randint(1, 5))
            memory.add(record, chosen)
            database.add(record, chosen)
            postings[record] = set(chosen)
        elif action < 0.6 and postings:
            held = rng.choice(sorted(postings, key=str))
            dropped = sorted(postings[held])
            if rng.random() < 0.5:
                dropped = rng.sample(dropped, rng.randint(1, len(dropped)))
            memory.remove(held, dropped)
            database.remove(held, dropped)
            postings[held] -= set(dropped)
            if not postings[held]:
                del postings[held]
        else:
            query = rng.sample(keys, rng.randint(1, 4))
            limit = rng.randint(1, 25)
            _check_same(
                query,
                limit,
                memory.candidates(query, limit),
                database.candidates(query, limit),
                postings,
            )
