"""Term counts in the database: load them into a :class:`TermCounts`, bump them as records
come and go.

``term_count`` holds ``(slot, value) -> count`` for the feature slots whose levels use term
frequencies. Slot numbers are positions in the :class:`FeatureExtractor` of the decision rules
in force: when the rules change, slots may mean other fields, so rebuild the table then
(:func:`rebuild`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from clientregistry.matching.features import Features
from clientregistry.matching.term_frequency import TermCounts
from clientregistry.store.dialect import dialect_name, insert_for
from clientregistry.store.driver import DriverInsert
from clientregistry.store.models import TermCount

_UPSERTS: dict[str, DriverInsert] = {}
"""The counting upsert per dialect name, built once."""


def load_term_counts(session: Session, counts: TermCounts) -> TermCounts:
    """Fill ``counts`` (every slot it tracks) from the table; returns it."""
    per_slot: dict[int, Counter[str]] = {slot: Counter() for slot in counts.slots}
    if per_slot:
        rows = session.execute(
            select(TermCount.slot, TermCount.value, TermCount.count).where(
                TermCount.slot.in_(list(per_slot)), TermCount.count > 0
            )
        )
        for slot, value, count in rows:
            per_slot[slot][value] = count
    for slot, counter in per_slot.items():
        counts.set_counts(slot, counter)
    return counts


def bump(session: Session, slot: int, value: str, delta: int) -> None:
    """Add ``delta`` (may be negative) to the count of ``value`` in ``slot``."""
    bump_many(session, [(slot, value, delta)])


def bump_many(session: Session, deltas: Iterable[tuple[int, str, int]]) -> None:
    """Add each ``(slot, value, delta)``, in one statement.

    Deltas for the same row are summed first (PostgreSQL refuses to update a row twice in one
    statement), and rows are written in (slot, value) order, so concurrent transactions lock
    them in the same order and cannot deadlock on them.
    """
    summed: Counter[tuple[int, str]] = Counter()
    for slot, value, delta in deltas:
        summed[(slot, value)] += delta
    rows = [
        {"slot": slot, "value": value, "count": delta}
        for (slot, value), delta in sorted(summed.items())
        if delta
    ]
    if not rows:
        return
    name = dialect_name(session)
    statement = _UPSERTS.get(name)
    if statement is None:
        insert = insert_for(session, TermCount)
        statement = _UPSERTS[name] = DriverInsert(
            insert.on_conflict_do_update(
                index_elements=[TermCount.slot, TermCount.value],
                set_={"count": TermCount.count + insert.excluded["count"]},
            )
        )
    statement.execute(session.connection(), rows)


def feature_deltas(
    counts: TermCounts, features: Features, delta: int
) -> list[tuple[int, str, int]]:
    """The ``(slot, value, delta)`` a record's features bring to ``counts``' slots."""
    return [
        (slot, value, delta)
        for slot in counts.slots
        if isinstance(value := features[slot], str) and value
    ]


def bump_features(session: Session, counts: TermCounts, features: Features, delta: int) -> None:
    """Count a record in (``delta=1``) or out (``delta=-1``) of the table, as
    ``TermCounts.add`` / ``remove`` do in memory."""
    bump_many(session, feature_deltas(counts, features, delta))


def rebuild(session: Session, counts: TermCounts, features: Iterable[Features]) -> None:
    """Replace the table's contents with the counts of ``features`` (all records held)."""
    session.execute(delete(TermCount))
    summed: Counter[tuple[int, str]] = Counter()
    for record in features:
        for slot, value, delta in feature_deltas(counts, record, 1):
            summed[(slot, value)] += delta
    bump_many(session, ((slot, value, n) for (slot, value), n in summed.items()))


def rebuild_from_counts(session: Session, counts: TermCounts) -> None:
    """Replace the table's contents with ``counts`` (every record held, counted already)."""
    session.execute(delete(TermCount))
    bump_many(session, ((slot, value, n) for slot, value, n in counts.items() if n > 0))
