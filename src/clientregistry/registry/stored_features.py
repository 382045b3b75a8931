"""Stored records' features and blocking keys, made again when they follow another layout.

A source record keeps the features its resource gave (one value per slot of a layout) and
its blocking keys, so that matching never parses a stored resource again. Both are derived
data, and both depend on the decision rules: a release whose built-in rules read other
fields, or a configuration whose rules now read new ones, leaves stored features describing
other slots than the matcher's (which scored them as garbage, or failed on them).

The layout stored features follow is recorded in
:class:`~clientregistry.store.models.RulesState`, with a digest of how blocking keys are
derived (:meth:`~clientregistry.matching.blocking.Blocker.signature`: a release may add key
groups). Opening a registry with its migrations (``serve``, ``migrate``) compares both with
the matcher's: when either differs, or when the database records none (a database of an
earlier release), every record's features and keys are derived again from its resource, in
batches, the term counts are counted again, and the layout and digest are recorded; an empty
registry only records them. A re-match under way keeps the layout itself
(:mod:`clientregistry.registry.rematch`) and is left to it.

With the layout unchanged, rules may still weigh a field by term frequency that no one has
counted (a release whose default rules do it for postal codes): its counts are made from the
stored features, once, under the registry lock.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from clientregistry.matching.matcher import Matcher
from clientregistry.matching.term_frequency import TermCounts
from clientregistry.registry.rules_in_force import STATE_ID, layout_from_json, layout_to_json
from clientregistry.store.blocking_index import DatabaseBlockingIndex, key_hashes
from clientregistry.store.columns import utcnow
from clientregistry.store.db import transaction
from clientregistry.store.locks import lock_registry
from clientregistry.store.models import BlockingKey, RulesState, SourceRecord
from clientregistry.store.term_counts import (
    count_missing_slots,
    counted_slots,
    mark_counted,
    rebuild_from_counts,
)

log = logging.getLogger(__name__)

BATCH = 1000
"""Records derived again per transaction."""

UPDATE_FEATURES = (
    update(SourceRecord)
    .where(SourceRecord.id == bindparam("record"))
    .values(features=bindparam("new_features", type_=SourceRecord.features.type))
)
"""A record's features replaced: parameters ``record`` and ``new_features`` (executemany)."""


def _recorded(session: Session) -> tuple[RulesState | None, list[Any] | None]:
    state = session.get(RulesState, STATE_ID)
    return state, None if state is None else state.layout


def _record_layout(session: Session, matcher: Matcher) -> None:
    state = session.get(RulesState, STATE_ID)
    if state is None:
        state = RulesState(id=STATE_ID, generation=0)
        session.add(state)
    state.layout = layout_to_json(matcher.extractor.layout)
    state.key_plan = matcher.blocker.signature()
    state.generation = (state.generation or 0) + 1  # every process loads the new term counts
    state.updated_at = utcnow()


def bring_up_to_date(sessions: sessionmaker[Session], matcher: Matcher) -> int | None:
    """Make the stored features and blocking keys follow ``matcher``'s layout and rules (see
    the module notes); the number of records derived again, ``None`` when none had to be."""
    wanted = layout_to_json(matcher.extractor.layout)

    def settled(session: Session) -> tuple[bool, list[Any] | None]:
        state, recorded = _recorded(session)
        if state is not None and state.pending_version is not None:
            return True, recorded  # a re-match is converting them (its matcher has two plans)
        same = recorded is not None and layout_to_json(layout_from_json(recorded)) == wanted
        return (
            same and state is not None and state.key_plan == matcher.blocker.signature(),
            recorded,
        )

    slots = TermCounts(matcher.extractor).slots
    with transaction(sessions, write=False) as session:
        done, recorded = settled(session)
        uncounted = done and bool(set(slots) - counted_slots(session))
    if done:
        if uncounted:
            _count_new_slots(sessions, matcher)
        return None
    with transaction(sessions) as session:
        if settled(session)[0]:
            return None  # (another process did it meanwhile)
        if session.scalar(select(SourceRecord.id).limit(1)) is None:
            _record_layout(session, matcher)
            mark_counted(session, slots)
            return None
    log.warning(
        "the stored records' features and blocking keys follow %s; deriving them again for "
        "the rules in force",
        "no recorded layout (an earlier release)"
        if recorded is None
        else "another layout or other key groups",
    )
    counts = TermCounts(matcher.extractor)
    derived = 0
    last: str | None = None
    while True:
        with transaction(sessions) as session:
            lock_registry(session)
            query = select(SourceRecord.id, SourceRecord.resource).order_by(SourceRecord.id)
            if last is not None:
                query = query.where(SourceRecord.id > last)
            rows = list(session.execute(query.limit(BATCH)))
            if not rows:
                _record_layout(session, matcher)
                rebuild_from_counts(session, counts)
                break
            _derive(session, matcher, counts, rows)
            derived += len(rows)
            last = rows[-1][0]
    log.warning("derived the features and blocking keys of %d records again", derived)
    return derived


def _count_new_slots(sessions: sessionmaker[Session], matcher: Matcher) -> None:
    """Count the stored records into the slots the rules newly weigh by term frequency (the
    layout unchanged: a release or a configuration that adds ``termFrequency`` to a field),
    which no one has counted yet; every process then loads the counts again."""
    with transaction(sessions) as session:
        lock_registry(session)
        state, _ = _recorded(session)
        if state is None or state.pending_version is not None:
            return  # (a re-match counts them when it finishes)
        counted = count_missing_slots(session, TermCounts(matcher.extractor))
        if counted:
            state.generation = (state.generation or 0) + 1  # every process loads them again
            state.updated_at = utcnow()
            log.warning(
                "counted the stored records' values of %d field(s) newly weighed by term frequency",
                len(counted),
            )


def _derive(session: Session, matcher: Matcher, counts: TermCounts, rows: list[Any]) -> None:
    features_rows = []
    keys = []
    for record_id, resource in rows:
        features = matcher.extractor.extract(resource)
        counts.add(features)
        features_rows.append({"record": record_id, "new_features": features})
        keys.append((record_id, key_hashes(matcher.blocker.keys(features))))
    connection = session.connection()
    connection.execute(UPDATE_FEATURES, features_rows)
    ids = [record_id for record_id, _ in keys]
    connection.execute(delete(BlockingKey).where(BlockingKey.record_id.in_(ids)))
    DatabaseBlockingIndex(session).add_new(keys)
