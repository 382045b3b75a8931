"""Term counts in the database: load them into a :class:`TermCounts`, bump them as records
come and go.

``term_count`` holds ``(slot, value) -> count`` for the feature slots whose levels use term
frequencies. Slot numbers are positions in the :class:`FeatureExtractor` of the decision rules
in force: when the rules change, slots may mean other fields, so rebuild the table then
(:func:`rebuild`).

Each slot counted over every record also holds a marker row (value ``""``, count 0; no
feature value is empty), so that a slot the rules newly weigh by term frequency, whose
counts no one has made yet, is told apart from one whose records all lack a value
(:func:`counted_slots`, :func:`count_missing_slots`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from clientregistry.matching.features import Features
from clientregistry.matching.term_frequency import TermCounts
from clientregistry.store.dialect import dialect_name, insert_for
from clientregistry.store.driver import DriverInsert
from clientregistry.store.models import SourceRecord, TermCount

_UPSERTS: dict[str, DriverInsert] = {}
"""The counting upsert per dialect name, built once."""
_PAGE = 5000
"""Rows written per statement, and records read per query when counting."""


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
    """Add each ``(slot, value, delta)``, in one statement (one per :data:`_PAGE` rows).

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
    if len(rows) <= _PAGE:  # a submission's few rows: as before, one statement
        statement.execute(session.connection(), rows)
        return
    for start in range(0, len(rows), _PAGE):
        statement.execute(session.connection(), rows[start : start + _PAGE])


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


_MARKER = ""
"""The value of a slot's marker row (see the module notes)."""


def rebuild(session: Session, counts: TermCounts, features: Iterable[Features]) -> None:
    """Replace the table's contents with the counts of ``features`` (all records held)."""
    session.execute(delete(TermCount))
    summed: Counter[tuple[int, str]] = Counter()
    for record in features:
        for slot, value, delta in feature_deltas(counts, record, 1):
            summed[(slot, value)] += delta
    bump_many(session, ((slot, value, n) for (slot, value), n in summed.items()))
    mark_counted(session, counts.slots)


def rebuild_from_counts(session: Session, counts: TermCounts) -> None:
    """Replace the table's contents with ``counts`` (every record held, counted already)."""
    session.execute(delete(TermCount))
    bump_many(session, ((slot, value, n) for slot, value, n in counts.items() if n > 0))
    mark_counted(session, counts.slots)


def mark_counted(session: Session, slots: Iterable[int]) -> None:
    """Record that ``slots`` hold the counts of every record (their marker rows)."""
    marked = session.scalars(select(TermCount.slot).where(TermCount.value == _MARKER))
    wanted = sorted(set(slots) - set(marked))
    if wanted:
        session.execute(
            insert(TermCount), [{"slot": slot, "value": _MARKER, "count": 0} for slot in wanted]
        )


def counted_slots(session: Session) -> set[int]:
    """The slots the table holds anything for (counts or a marker row)."""
    return set(session.scalars(select(TermCount.slot).distinct()))


def count_missing_slots(session: Session, counts: TermCounts) -> list[int]:
    """Count every stored record into those of ``counts``' slots that the table holds
    nothing for (rules that newly weigh a field by term frequency) and mark them counted; the
    slots counted. The caller holds the registry lock, so no submission counts meanwhile."""
    missing = sorted(set(counts.slots) - counted_slots(session))
    if not missing:
        return []
    wanted = set(missing)
    summed: Counter[tuple[int, str]] = Counter()
    last: str | None = None
    while True:
        query = select(SourceRecord.id, SourceRecord.features).order_by(SourceRecord.id)
        if last is not None:
            query = query.where(SourceRecord.id > last)
        rows = list(session.execute(query.limit(_PAGE)))
        if not rows:
            break
        for _, features in rows:
            for slot, value, _ in feature_deltas(counts, features, 1):
                if slot in wanted:
                    summed[(slot, value)] += 1
        last = rows[-1][0]
    bump_many(session, ((slot, value, n) for (slot, value), n in summed.items()))
    mark_counted(session, missing)
    return missing
