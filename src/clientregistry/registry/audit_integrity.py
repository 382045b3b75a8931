"""Checking and handing over the audit trail: :func:`verify_chain` walks the hash chain
(:mod:`clientregistry.store.audit_chain`) and names the first broken link;
:func:`export_events` writes the events of a time range for an auditor, as FHIR AuditEvent
NDJSON (:mod:`clientregistry.registry.atna_event`) or CSV, in chain order.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import Enum, StrEnum
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clientregistry.registry.atna_event import atna_resource
from clientregistry.store.audit_chain import (
    CHAINED_COLUMNS,
    BrokenLink,
    chain_head,
    chain_rows,
    first_broken_link,
)
from clientregistry.store.db import transaction
from clientregistry.store.models import AuditEvent

EXPORT_BATCH = 2000


class ExportFormat(StrEnum):
    NDJSON = "ndjson"
    CSV = "csv"


CSV_COLUMNS = ("id", "chain_seq", "chain_hash", *CHAINED_COLUMNS)


@dataclass(frozen=True, slots=True)
class Verification:
    """What :func:`verify_chain` found: how many links hold, and the first that does not."""

    checked: int
    broken: BrokenLink | None
    head: int

    @property
    def ok(self) -> bool:
        return self.broken is None


def verify_chain(sessions: sessionmaker[Session]) -> Verification:
    """Walk the whole chain in one read transaction (a consistent snapshot)."""
    with transaction(sessions, write=False) as session:
        connection = session.connection()
        head = chain_head(connection)
        checked, broken = first_broken_link(chain_rows(connection), head)
    return Verification(checked, broken, head[0] if head else 0)


def parse_moment(text: str, *, end: bool) -> datetime:
    """A ``--from``/``--to`` bound: a date (``2026-12-07``: its start, or for ``end`` the start
    of the next day, so the day is included) or an ISO 8601 time (UTC unless it says)."""
    text = text.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day, time(), tzinfo=UTC)
            return moment + timedelta(days=1) if end else moment
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a date or time: {text!r} (use 2026-12-07 or ISO 8601)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _rows(
    sessions: sessionmaker[Session], start: datetime, end: datetime
) -> Iterator[dict[str, Any]]:
    table = AuditEvent.__table__
    columns = [table.c[name] for name in CSV_COLUMNS]
    after = -1
    with transaction(sessions, write=False) as session:
        while True:
            statement = (
                select(*columns)
                .where(
                    AuditEvent.recorded >= start,
                    AuditEvent.recorded < end,
                    AuditEvent.chain_seq > after,
                )
                .order_by(AuditEvent.chain_seq)
                .limit(EXPORT_BATCH)
            )
            rows = [dict(row._mapping) for row in session.execute(statement)]
            if not rows:
                return
            yield from rows
            after = rows[-1]["chain_seq"]


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, dict | list):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return str(value)


def export_lines(
    sessions: sessionmaker[Session],
    start: datetime,
    end: datetime,
    export_format: ExportFormat,
    observer: str = "clientregistry",
) -> Iterator[str]:
    """The export, line by line (each ending in a newline), events recorded in
    ``[start, end)`` in chain order; CSV starts with its header."""
    if export_format is ExportFormat.NDJSON:
        for row in _rows(sessions, start, end):
            yield orjson.dumps(atna_resource(row, observer)).decode() + "\n"
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    yield buffer.getvalue()
    for row in _rows(sessions, start, end):
        buffer.seek(0)
        buffer.truncate()
        writer.writerow([_csv_value(row[name]) for name in CSV_COLUMNS])
        yield buffer.getvalue()


def export_events(
    sessions: sessionmaker[Session],
    start: datetime,
    end: datetime,
    export_format: ExportFormat,
    output: io.TextIOBase | Any,
    observer: str = "clientregistry",
) -> int:
    """Write :func:`export_lines` to ``output``; the number of events written."""
    count = -1 if export_format is ExportFormat.CSV else 0
    for line in export_lines(sessions, start, end, export_format, observer):
        output.write(line)
        count += 1
    return max(count, 0)
