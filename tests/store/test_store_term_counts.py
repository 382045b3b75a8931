"""Term counts: upserts on both databases and loading into TermCounts."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clientregistry.matching.features import FeatureExtractor
from clientregistry.matching.rules import default_rules
from clientregistry.matching.term_frequency import TermCounts
from clientregistry.store.db import transaction
from clientregistry.store.models import TermCount
from clientregistry.store.term_counts import (
    bump,
    bump_features,
    bump_many,
    load_term_counts,
    rebuild,
)


def _table(session: Session) -> dict[tuple[int, str], int]:
    rows = session.execute(select(TermCount.slot, TermCount.value, TermCount.count))
    return {(slot, value): count for slot, value, count in rows}


@pytest.fixture
def term_counts() -> TermCounts:
    counts = TermCounts(FeatureExtractor(default_rules()))
    assert counts.slots, "the default rules use term frequencies"
    return counts


def test_bump_upserts(factory: sessionmaker[Session]) -> None:
    with transaction(factory) as session:
        bump(session, 1, "nakato", 1)
        bump(session, 1, "nakato", 2)
        bump(session, 1, "okello", 1)
        bump(session, 2, "nakato", 5)
    with transaction(factory) as session:
        bump(session, 1, "nakato", -1)
        bump_many(session, [(1, "okello", 1), (1, "okello", 1), (3, "x", 1), (3, "x", -1)])
        bump_many(session, [])
    with factory() as session:
        assert _table(session) == {(1, "nakato"): 2, (1, "okello"): 3, (2, "nakato"): 5}


def test_load(factory: sessionmaker[Session], term_counts: TermCounts) -> None:
    slot = term_counts.slots[0]
    with transaction(factory) as session:
        bump_many(session, [(slot, "nakato", 60), (slot, "okello", 3), (slot, "gone", 0)])
        bump(session, slot, "gone", 1)
        bump(session, slot, "gone", -1)
        bump(session, 999, "other slot", 4)
    with factory() as session:
        assert load_term_counts(session, term_counts) is term_counts
    assert term_counts.tf(slot, "okello") == pytest.approx(3 / 63)
    assert term_counts.tf(slot, "unknown") == pytest.approx(1 / 63)


def test_bump_features_and_rebuild(factory: sessionmaker[Session], term_counts: TermCounts) -> None:
    width = max(term_counts.slots) + 1
    first = tuple("nakato" if slot in term_counts.slots else "" for slot in range(width))
    second = tuple("okello" if slot in term_counts.slots else "" for slot in range(width))
    with transaction(factory) as session:
        bump_features(session, term_counts, first, 1)
        bump_features(session, term_counts, first, 1)
        bump_features(session, term_counts, second, 1)
        bump_features(session, term_counts, second, -1)
    with factory() as session:
        table = _table(session)
    assert {key: n for key, n in table.items() if n} == {
        (slot, "nakato"): 2 for slot in term_counts.slots
    }
    with transaction(factory) as session:
        rebuild(session, term_counts, [second, first, second])
    with factory() as session:
        table = _table(session)
    expected = {(slot, "okello"): 2 for slot in term_counts.slots}
    expected.update({(slot, "nakato"): 1 for slot in term_counts.slots})
    expected.update({(slot, ""): 0 for slot in term_counts.slots})  # marked: counted in full
    assert table == expected
