"""Source records and people as the lookups read them.

A source record is read as :class:`Stored` (its columns, without the matching features): by
condition in id order (:func:`source_records`), a batch at a time from a cursor
(:func:`scan_records`) or as the caller goes (:func:`stream_records`).
:func:`source_resources` gives them in the FHIR form ``GET Patient/<id>`` gives. A person is a
:class:`Person`: a golden record with its source records (:func:`people`).
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from clientregistry.fhir.patient import golden_record_resource
from clientregistry.registry.submit import RecordSnapshot, replaced_records, source_resource
from clientregistry.settings import Settings
from clientregistry.store.enums import MatchStatus
from clientregistry.store.models import BrokenMatch, GoldenRecord, SourceRecord


@dataclass(frozen=True, slots=True)
class Stored:
    """A source record as the lookups read it (no features)."""

    id: str
    client_system: str
    internal_system: str
    internal_value: str
    version: int
    last_updated: datetime
    resource: dict[str, Any]
    golden_id: str | None
    match_status: MatchStatus
    replaced_by: str | None = None
    """The record that subsumed this one (a merge)."""


_STORED_COLUMNS = (
    SourceRecord.id,
    SourceRecord.client_system,
    SourceRecord.internal_system,
    SourceRecord.internal_value,
    SourceRecord.version,
    SourceRecord.last_updated,
    SourceRecord.resource,
    SourceRecord.golden_id,
    SourceRecord.match_status,
    SourceRecord.replaced_by,
)


def _stored(row: Any) -> Stored:
    return Stored(*row)


def patient_identifiers(resource: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Identifiers of a Patient that have a system and a value."""
    out = []
    for ident in resource.get("identifier") or ():
        if (
            isinstance(ident, dict)
            and isinstance(ident.get("system"), str)
            and isinstance(ident.get("value"), str)
            and ident["value"]
        ):
            out.append(ident)
    return out


def source_records(session: Session, where: Sequence[ColumnElement[bool]]) -> list[Stored]:
    rows = session.execute(select(*_STORED_COLUMNS).where(*where).order_by(SourceRecord.id))
    return [_stored(row) for row in rows]


def scan_records(
    session: Session,
    where: Sequence[ColumnElement[bool]],
    *,
    after: str | None = None,
    batch: int = 500,
) -> Iterator[Stored]:
    """Source records passing ``where``, in id order after ``after``, a batch at a time.

    Without conditions this walks the primary key in the database's order (and stops as soon
    as the caller does). With conditions, a walk in key order would visit every row through
    the index; instead one scan collects the ids that pass, which are then read in batches in
    Python's order (the same order on every page of a query, as the path taken depends only
    on the query's parameters).
    """
    ids = sorted(session.scalars(select(SourceRecord.id).where(*where))) if where else None
    return records_in_id_order(session, ids, after=after, batch=batch)


def records_in_id_order(
    session: Session, ids: Sequence[str] | None, *, after: str | None = None, batch: int = 500
) -> Iterator[Stored]:
    """The source records of ``ids`` (sorted; None: every record) in id order after
    ``after``, read a batch at a time (see :func:`scan_records`)."""
    if ids is not None:
        start = bisect.bisect_right(ids, after) if after is not None else 0
        for first in range(start, len(ids), batch):
            chunk = ids[first : first + batch]
            found = {r.id: r for r in source_records(session, [SourceRecord.id.in_(chunk)])}
            yield from (found[i] for i in chunk if i in found)
        return
    last = after
    while True:
        statement = select(*_STORED_COLUMNS).order_by(SourceRecord.id).limit(batch)
        if last is not None:
            statement = statement.where(SourceRecord.id > last)
        rows = [_stored(row) for row in session.execute(statement)]
        yield from rows
        if len(rows) < batch:
            return
        last = rows[-1].id


def stream_records(
    session: Session, where: Sequence[ColumnElement[bool]], *, batch: int = 500
) -> Iterator[Stored]:
    """Source records passing ``where`` in no particular order, read as the caller goes."""
    statement = select(*_STORED_COLUMNS).where(*where).execution_options(yield_per=batch)
    result = session.execute(statement)
    try:
        for row in result:
            yield _stored(row)
    finally:
        result.close()


def broken_matches(session: Session, ids: Collection[str]) -> dict[str, set[str]]:
    """Broken matches of each of ``ids``."""
    out: dict[str, set[str]] = {i: set() for i in ids}
    if not ids:
        return out
    rows = session.execute(
        select(BrokenMatch.record_a, BrokenMatch.record_b).where(
            or_(BrokenMatch.record_a.in_(ids), BrokenMatch.record_b.in_(ids))
        )
    )
    for a, b in rows:
        if a in out:
            out[a].add(b)
        if b in out:
            out[b].add(a)
    return out


def source_resources(
    session: Session, settings: Settings, records: Sequence[Stored]
) -> list[dict[str, Any]]:
    """The FHIR form of source records (as ``GET Patient/<id>`` gives them)."""
    broken = broken_matches(session, [r.id for r in records])
    replaces = replaced_records(session, [r.id for r in records])
    out = []
    for r in records:
        record = RecordSnapshot(
            id=r.id,
            version=r.version,
            last_updated=r.last_updated,
            resource=r.resource,
            client_system=r.client_system,
            golden_id=r.golden_id,
            match_status=r.match_status,
            replaced_by=r.replaced_by,
        )
        client = settings.systems.get(r.client_system)
        out.append(source_resource(record, client, broken[r.id], replaces[r.id]))
    return out


@dataclass(frozen=True, slots=True)
class Person:
    """A golden record and its source records."""

    golden: GoldenRecord
    members: list[Stored]

    def resource(self, *, with_identifiers: bool = False) -> dict[str, Any]:
        """The golden record (no demographics); with the identifiers of its source records
        when asked (identifiers are not demographics)."""
        out = golden_record_resource(
            self.golden.id,
            self.golden.version,
            self.golden.last_updated,
            [m.id for m in self.members],
            self.golden.replaced_by,
            active=self.golden.active,
        )
        if not with_identifiers:
            return out
        seen: set[tuple[str, str]] = set()
        identifiers = []
        for member in self.members:
            for ident in patient_identifiers(member.resource):
                key = (ident["system"], ident["value"])
                if key not in seen:
                    seen.add(key)
                    identifiers.append(ident)
        if not identifiers:
            return out
        shaped = {k: out[k] for k in ("resourceType", "id", "meta")}
        shaped["identifier"] = identifiers
        shaped.update((k, v) for k, v in out.items() if k not in shaped)
        return shaped


def people(session: Session, golden_ids: Iterable[str]) -> dict[str, Person]:
    """Golden records by id, each with its source records (in id order)."""
    ids = sorted(set(golden_ids))
    if not ids:
        return {}
    goldens = session.scalars(select(GoldenRecord).where(GoldenRecord.id.in_(ids))).all()
    out = {g.id: Person(g, []) for g in goldens}
    for member in source_records(session, [SourceRecord.golden_id.in_(ids)]):
        assert member.golden_id is not None
        out[member.golden_id].members.append(member)
    return out


__all__ = [
    "Person",
    "Stored",
    "broken_matches",
    "patient_identifiers",
    "people",
    "records_in_id_order",
    "scan_records",
    "source_records",
    "source_resources",
    "stream_records",
]
