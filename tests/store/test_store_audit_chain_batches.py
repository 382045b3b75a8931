"""Audit events appended many at a time (an import's batch) are linked into the one chain
like single ones, on SQLite and PostgreSQL, also when other writers append at the same time:
the links are numbered without gaps and every hash holds."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from clientregistry.store.audit_chain import CHAINED_COLUMNS, first_broken_link, insert_linked
from clientregistry.store.db import transaction
from clientregistry.store.driver import pipelined
from clientregistry.store.enums import AgentKind, AuditAction
from clientregistry.store.models import AuditChainHead, AuditEvent


def _row(agent: str, n: int) -> dict[str, Any]:
    return {
        "recorded": datetime.now(UTC),
        "action": AuditAction.CREATE,
        "outcome": 0,
        "event_type": "rest-create",
        "agent": agent,
        "agent_kind": AgentKind.SYSTEM,
        "source_address": "10.0.0.7",
        "entity": f"Patient/{agent}-{n}",
        "detail": {"n": n, "name": "Nakato \u00e9"},
        "resource": {"resourceType": "AuditEvent", "n": n},
        "request_id": None,
    }


def _append(factory: sessionmaker[Session], rows: list[dict[str, Any]]) -> None:
    with transaction(factory) as session:
        connection = session.connection()
        with pipelined(connection):
            insert_linked(connection, rows)


def _chain(factory: sessionmaker[Session]) -> tuple[int, Any, int]:
    with factory() as session:
        columns = [AuditEvent.id, AuditEvent.chain_seq, AuditEvent.chain_hash]
        columns += [AuditEvent.__table__.c[name] for name in CHAINED_COLUMNS]
        links = [
            dict(row._mapping)
            for row in session.execute(select(*columns).order_by(AuditEvent.chain_seq))
        ]
        head = session.get(AuditChainHead, 1)
        assert head is not None
        checked, broken = first_broken_link(links, (head.seq, head.hash))
        return checked, broken, head.seq


def test_a_batch_is_linked_in_order(factory: sessionmaker[Session]) -> None:
    _append(factory, [_row("one", 0)])
    _append(factory, [_row("batch", n) for n in range(40)])
    _append(factory, [_row("one", 1)])
    checked, broken, head = _chain(factory)
    assert broken is None
    assert checked == head == 42
    with factory() as session:
        entities = session.scalars(select(AuditEvent.entity).order_by(AuditEvent.chain_seq))
        assert list(entities)[1:41] == [f"Patient/batch-{n}" for n in range(40)]


def test_batches_and_single_events_from_several_writers_keep_one_chain(
    factory: sessionmaker[Session],
) -> None:
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        try:
            for n in range(6):
                if n % 2:
                    _append(factory, [_row(f"w{writer}", n * 100 + i) for i in range(25)])
                else:
                    _append(factory, [_row(f"w{writer}", n)])
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    checked, broken, head = _chain(factory)
    assert broken is None
    assert checked == head == 4 * (3 * 25 + 3)
