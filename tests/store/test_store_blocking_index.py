"""The database blocking index chooses candidates as ``dedupe``'s index does
(:func:`~clientregistry.matching.blocking.select_candidates`), with record ids for positions."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from clientregistry.matching.blocking import (
    BlockingIndex,
    CandidateSet,
    PositionIndex,
    select_candidates,
)
from clientregistry.store.blocking_index import (
    Block,
    DatabaseBlockingIndex,
    key_hash,
    key_hashes,
    ordered_key_hashes,
    rank_new_records,
)
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
    assert ordered_key_hashes(["b", "a", "b"]) == [key_hash("b"), key_hash("a")]


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
    # sharing two keys first; then one key: the smaller block first (ties in key order),
    # each newest first
    assert index.candidates(["b", "c"], 10) == CandidateSet(["r001", "r000", "r002"], False, 3)
    assert index.candidates(["a"], 10) == CandidateSet(["r000"], False, 1)
    assert index.candidates(["c", "c", "zzz"], 10) == CandidateSet(["r002", "r001"], False, 2)
    index.remove("r001", ["b"])
    assert index.candidates(["b", "c"], 10) == CandidateSet(["r000", "r002", "r001"], False, 3)
    assert index.candidates(["c", "b"], 10) == CandidateSet(["r000", "r002", "r001"], False, 3)
    index.remove_record("r001")
    assert index.candidates(["b", "c"], 10) == CandidateSet(["r000", "r002"], False, 2)
    index.remove("r000", [])
    index.add("r000", [])
    assert session.scalar(select(func.count()).select_from(BlockingKey)) == 3


def test_add_new_records_in_one_statement(session: Session, make_record: MakeRecord) -> None:
    _records(session, make_record, 3)
    index = DatabaseBlockingIndex(session)
    index.add_new([("r000", key_hashes(["a", "b"])), ("r001", key_hashes(["b"])), ("r002", [])])
    assert index.candidates(["b"], 10) == CandidateSet(["r001", "r000"], False, 2)
    assert index.candidates(["a"], 10) == CandidateSet(["r000"], False, 1)
    assert session.scalar(select(func.count()).select_from(BlockingKey)) == 3
    index.add_new([])
    assert session.scalar(select(func.count()).select_from(BlockingKey)) == 3


def test_cap(session: Session, make_record: MakeRecord) -> None:
    ids = _records(session, make_record, 12)
    index = DatabaseBlockingIndex(session)
    for record_id in ids:
        index.add(record_id, ["common"])
    index.add("r005", ["rare"])
    result = index.candidates(["common", "rare"], 3)
    assert result == CandidateSet(["r005", "r011", "r010"], True, 12)
    # one key in common: the newest eight (the single limit) of the block, and not capped
    # when those fit, however many more the block holds
    newest = ids[::-1][:8]
    assert index.candidates(["common"], 8) == CandidateSet(newest, False, 12)
    assert index.candidates(["common"], 7) == CandidateSet(newest[:7], True, 12)
    assert index.candidates(["common"], 20, single_limit=20) == CandidateSet(ids[::-1], False, 12)
    # only the block's newest records count: r005 shares two keys, but "common" is read
    # only as far as its newest four records
    found = index.candidates(["common", "rare"], 20, block_limit=4)
    assert found == CandidateSet(["r005", "r011", "r010", "r009", "r008"], False, 5)
    for bad in ({"limit": 0}, {"block_limit": 0}, {"single_limit": 0}):
        with pytest.raises(ValueError):
            index.candidates(["common"], **{"limit": 5, **bad})


def test_record_ids_are_strings(session: Session) -> None:
    index = DatabaseBlockingIndex(session)
    with pytest.raises(TypeError):
        index.add(12, ["a"])


def _reference(
    postings: dict[str, set[str]],
    query: list[str],
    limit: int,
    block_limit: int,
    single_limit: int,
) -> CandidateSet:
    """The choice made from the postings as ``dedupe``'s index makes it: each of the query's
    keys (distinct, in order) a block of its newest ``block_limit`` records, oldest first."""
    blocks, sizes = [], []
    for key in dict.fromkeys(query):
        block = sorted(record for record, keys in postings.items() if key in keys)
        if block:
            blocks.append(block[-block_limit:])
            sizes.append(min(len(block), block_limit + 1))
    return select_candidates(blocks, sizes, limit, single_limit)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_same_as_the_reference_choice(seed: int, session: Session, make_record: MakeRecord) -> None:
    rng = random.Random(seed)
    ids = _records(session, make_record, 60)
    keys = [f"k{n}" for n in range(14)]
    database = DatabaseBlockingIndex(session)
    postings: dict[str, set[str]] = {}
    checked = 0
    for _ in range(400):
        action = rng.random()
        if action < 0.45:
            record = rng.choice(ids)
            if record in postings:
                continue
            chosen = rng.sample(keys, rng.randint(1, 5))
            database.add(record, chosen)
            postings[record] = set(chosen)
        elif action < 0.6 and postings:
            held = rng.choice(sorted(postings))
            dropped = sorted(postings[held])
            if rng.random() < 0.5:
                dropped = rng.sample(dropped, rng.randint(1, len(dropped)))
            database.remove(held, dropped)
            postings[held] -= set(dropped)
            if not postings[held]:
                del postings[held]
        else:
            query = [rng.choice(keys) for _ in range(rng.randint(1, 5))]
            limit, block_limit, single_limit = (
                rng.randint(1, 25),
                rng.randint(1, 12),
                rng.randint(1, 6),
            )
            expected = _reference(postings, query, limit, block_limit, single_limit)
            got = database.candidates(
                query, limit, block_limit=block_limit, single_limit=single_limit
            )
            assert got == expected, (query, limit, block_limit, single_limit)
            checked += bool(expected.ids)
    assert checked > 20


def _draw_keys(rng: random.Random, common: list[str], rare: list[str]) -> list[str]:
    """One to four distinct keys, each common or rare as often."""
    drawn = (rng.choice(common if rng.random() < 0.5 else rare) for _ in range(4))
    return list(dict.fromkeys(drawn))[: rng.randint(1, 4)]


def test_same_as_dedupes_index(session: Session, make_record: MakeRecord) -> None:
    """Records added in id order: the registry's choice is ``PositionIndex``'s, record ids
    for positions."""
    rng = random.Random(7)
    ids = _records(session, make_record, 400)
    common, rare = [f"k{n}" for n in range(6)], [f"rare{n}" for n in range(60)]
    database = DatabaseBlockingIndex(session)
    positions = PositionIndex(block_limit=10)
    sizes: dict[str, int] = defaultdict(int)
    for position, record in enumerate(ids):
        chosen = _draw_keys(rng, common, rare)
        expected = positions.find_then_add(position, chosen, 12)
        got = database.candidates(chosen, 12, block_limit=10)
        assert got == CandidateSet(
            [ids[p] for p in expected.ids], expected.capped, expected.considered
        )
        database.add(record, chosen)
        for key in chosen:
            sizes[key] += 1
    assert min(sizes[key] for key in common) > 30  # the common blocks outgrew the limit


def test_newest_postings(session: Session, make_record: MakeRecord) -> None:
    ids = _records(session, make_record, 6)
    index = DatabaseBlockingIndex(session)
    for record_id in ids:
        index.add(record_id, ["a"])
    index.add("r002", ["b"])
    found = index.newest_postings(key_hashes(["a", "b", "c"]), 4)
    assert found == {
        key_hash("a"): Block(5, ["r002", "r003", "r004", "r005"]),  # read as far as 5
        key_hash("b"): Block(1, ["r002"]),
    }


@pytest.mark.parametrize("seed", [1, 2])
def test_a_batch_ranks_its_records_as_the_query_would_one_by_one(
    seed: int, session: Session, make_record: MakeRecord
) -> None:
    """``rank_new_records`` (an import's batch: one read of the newest postings, then the
    batch's records added in memory) answers for each new record what the candidates query
    answers once the records before it are stored, also where blocks outgrow the limit and
    where new ids sort among the stored ones."""
    rng = random.Random(seed)
    common, rare = [f"k{n}" for n in range(4)], [f"rare{n}" for n in range(40)]

    ids = _records(session, make_record, 260)
    stored, new = ids[:200], ids[200:]
    if seed == 2:  # ids that do not follow creation order (records a client named)
        stored = rng.sample(ids, 200)
        new = [record for record in ids if record not in stored]
        rng.shuffle(new)
    database = DatabaseBlockingIndex(session)
    for record in stored:
        database.add(record, _draw_keys(rng, common, rare))
    keys = [_draw_keys(rng, common, rare) for _ in new]
    hashes = [ordered_key_hashes(k) for k in keys]
    options = {"block_limit": 9, "single_limit": 3}
    blocks = database.newest_postings(sorted({h for hs in hashes for h in hs}), 9)
    ranked = rank_new_records(blocks, new, hashes, 5, **options)
    capped = 0
    for record, record_keys, got in zip(new, keys, ranked, strict=True):
        expected = database.candidates(record_keys, 5, **options)
        assert got == expected.ids
        capped += expected.capped
        database.add(record, record_keys)
    assert capped  # the limit bit, and the common blocks hold far more than 9
