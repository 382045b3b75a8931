"""The tamper-evident audit trail: every audit event is a link of one hash chain, on SQLite
and PostgreSQL, whoever writes it (a submission, a batch, a lookup, a person through the ORM,
several threads at once); ``verify`` names the first row changed or missing; an auditor
exports a date range; the migration links the events recorded before it."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text
from typer.testing import CliRunner

from clientregistry.cli import app
from clientregistry.registry import audit
from clientregistry.registry.actor import record_action
from clientregistry.registry.atna_event import CHAIN_EXTENSION
from clientregistry.registry.audit_integrity import (
    ExportFormat,
    export_events,
    parse_moment,
    verify_chain,
)
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.setup import init_data_dir
from clientregistry.registry.submit import Submitter
from clientregistry.settings import load_settings
from clientregistry.store.audit_chain import GENESIS, link_hash
from clientregistry.store.db import migrate, transaction
from clientregistry.store.enums import AgentKind, AuditAction
from clientregistry.store.models import AuditChainHead, AuditEvent

FreshDatabase = Callable[[str], AbstractContextManager[str]]
runner = CliRunner()


@pytest.fixture(params=["sqlite", "postgresql"])
def context(
    request: pytest.FixtureRequest, tmp_path: Path, fresh_database: FreshDatabase
) -> Iterator[RegistryContext]:
    with fresh_database(request.param) as url:
        init_data_dir(tmp_path / "data", hostnames=[], database_url=url)
        context = RegistryContext.open(load_settings(tmp_path / "data", environ={}))
        try:
            yield context
        finally:
            context.close()


def submit(context: RegistryContext, system: str, value: str, family: str) -> None:
    config = context.settings.systems[system]
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": config.internal_id_system, "value": value}],
        "name": [{"family": family, "given": ["Grace"]}],
        "birthDate": "1980-02-01",
        "gender": "female",
    }
    with transaction(context.sessions) as session:
        Submitter(context).submit(session, patient, config)


def lookup(context: RegistryContext, agent: str, when: datetime | None = None) -> None:
    with transaction(context.sessions) as session:
        row = audit.event_row(
            action=AuditAction.READ,
            outcome=0,
            interaction="search-type",
            agent=agent,
            agent_kind=AgentKind.SYSTEM,
            source_address="10.0.0.7",
            entity=None,
            detail={"transaction": "ITI-78", "query": "family=Nakato", "results": 1},
            now=when,
        )
        audit.insert_events(session.connection(), [row])


def person_action(context: RegistryContext) -> None:
    with transaction(context.sessions) as session:
        record_action(
            session,
            agent="rita",
            source_address="127.0.0.1",
            event_type="break",
            action=AuditAction.UPDATE,
            entity="Patient/1",
            detail={"reason": "twins"},
        )


def events(context: RegistryContext) -> list[AuditEvent]:
    with context.sessions() as session:
        return list(session.scalars(select(AuditEvent).order_by(AuditEvent.chain_seq)))


def execute(context: RegistryContext, sql: str, **params: Any) -> None:
    with transaction(context.sessions) as session:
        session.execute(text(sql), params)


def test_every_writer_appends_a_link_that_verifies(context: RegistryContext) -> None:
    submit(context, "openmrs", "om-1", "Nakato")
    lookup(context, "openmrs")
    person_action(context)
    submit(context, "dhis2", "d-1", "Nakato")
    rows = events(context)
    assert [e.chain_seq for e in rows] == list(range(1, len(rows) + 1))
    previous = GENESIS
    for event in rows:
        row = {c.name: getattr(event, c.name) for c in AuditEvent.__table__.columns}
        assert event.chain_hash == link_hash(previous, event.chain_seq or 0, row)
        previous = event.chain_hash
    result = verify_chain(context.sessions)
    assert result.ok and result.checked == len(rows) == result.head
    with context.sessions() as session:
        head = session.get(AuditChainHead, 1)
        assert head is not None and (head.seq, head.hash) == (len(rows), previous)


def test_a_changed_column_is_named(context: RegistryContext) -> None:
    for n in range(5):
        lookup(context, f"system-{n}")
    victim = events(context)[2]
    execute(context, "UPDATE audit_event SET agent = 'mallory' WHERE id = :id", id=victim.id)
    result = verify_chain(context.sessions)
    assert result.broken is not None
    assert (result.broken.id, result.broken.seq) == (victim.id, 3)
    assert result.broken.recorded == victim.recorded
    assert "content" in result.broken.reason and result.checked == 2


def test_a_changed_detail_is_found_too(context: RegistryContext) -> None:
    for n in range(3):
        lookup(context, f"system-{n}")
    victim = events(context)[0]
    execute(
        context,
        "UPDATE audit_event SET detail = :detail WHERE id = :id",
        id=victim.id,
        detail='{"transaction":"ITI-78","query":"family=Other","results":1}',
    )
    broken = verify_chain(context.sessions).broken
    assert broken is not None and broken.id == victim.id


def test_a_deleted_row_is_found(context: RegistryContext) -> None:
    for n in range(5):
        lookup(context, f"system-{n}")
    rows = events(context)
    execute(context, "DELETE FROM audit_event WHERE id = :id", id=rows[1].id)
    broken = verify_chain(context.sessions).broken
    assert broken is not None
    assert broken.id == rows[2].id and broken.seq == 2 and "missing" in broken.reason


def test_deleting_the_last_rows_is_found(context: RegistryContext) -> None:
    for n in range(4):
        lookup(context, f"system-{n}")
    rows = events(context)
    execute(context, "DELETE FROM audit_event WHERE chain_seq >= 3")
    broken = verify_chain(context.sessions).broken
    assert broken is not None
    assert broken.id == rows[1].id and "missing" in broken.reason


def test_concurrent_writers_keep_one_chain(context: RegistryContext) -> None:
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for i in range(15):
                if i % 5 == 0:
                    submit(context, "openmrs", f"om-{n}-{i}", f"Family{n}x{i}")
                else:
                    lookup(context, f"system-{n}")
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    result = verify_chain(context.sessions)
    assert result.ok and result.checked == 60 == result.head


def test_export_of_a_date_range(context: RegistryContext, tmp_path: Path) -> None:
    day = datetime(2026, 11, 3, 9, 0, tzinfo=UTC)
    for n, when in enumerate([day - timedelta(days=1), day, day + timedelta(hours=5)]):
        lookup(context, f"system-{n}", when)
    lookup(context, "later", day + timedelta(days=1, minutes=1))
    start, end = parse_moment("2026-11-03", end=False), parse_moment("2026-11-03", end=True)
    output = tmp_path / "export.ndjson"
    with output.open("w", encoding="utf-8") as file:
        count = export_events(context.sessions, start, end, ExportFormat.NDJSON, file)
    lines = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert count == 2 == len(lines)
    assert [r["id"] for r in lines] == ["cr-2", "cr-3"]
    assert [r["agent"][0]["who"]["display"] for r in lines] == ["system-1", "system-2"]
    assert all(r["resourceType"] == "AuditEvent" for r in lines)
    assert lines[0]["subtype"][1]["code"] == "ITI-78"
    extension = lines[0]["extension"][0]
    assert extension["url"] == CHAIN_EXTENSION and extension["valueString"].startswith("2:")
    csv_out = tmp_path / "export.csv"
    with csv_out.open("w", encoding="utf-8", newline="") as file:
        assert export_events(context.sessions, start, end, ExportFormat.CSV, file) == 2
    table = csv_out.read_text(encoding="utf-8").splitlines()
    assert table[0].startswith("id,chain_seq,chain_hash,recorded") and len(table) == 3


def test_the_commands(context: RegistryContext, tmp_path: Path) -> None:
    data_dir = context.settings.data_dir
    env = {"CR_DATA_DIR": str(data_dir)}
    if context.settings.database_url:
        env["CR_DATABASE_URL"] = context.settings.database_url
    for n in range(3):
        lookup(context, f"system-{n}")
    done = runner.invoke(app, ["audit", "verify", "--data-dir", str(data_dir)], env=env)
    assert done.exit_code == 0, done.output
    assert "OK: 3 audit events" in done.output
    output = tmp_path / "trail.ndjson"
    today = datetime.now(UTC).date().isoformat()
    done = runner.invoke(
        app,
        ["audit", "export", "--from", today, "--to", today, "--output", str(output)],
        env=env,
    )
    assert done.exit_code == 0, done.output
    assert len(output.read_text(encoding="utf-8").splitlines()) == 3
    victim = events(context)[1]
    execute(context, "UPDATE audit_event SET outcome = 4 WHERE id = :id", id=victim.id)
    done = runner.invoke(app, ["audit", "verify"], env=env)
    assert done.exit_code == 1
    assert f"audit event {victim.id} recorded {victim.recorded.isoformat()}" in done.output
    done = runner.invoke(
        app, ["audit", "export", "--from", "yesterday", "--to", today, "-o", str(output)], env=env
    )
    assert done.exit_code == 2 and "not a date" in done.output


def test_the_migration_links_the_events_recorded_before_it(
    tmp_path: Path, fresh_database: FreshDatabase
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate(engine, "0006")
    with engine.begin() as connection:
        for n in range(3):
            connection.execute(
                text(
                    "INSERT INTO audit_event (recorded, action, outcome, event_type, agent,"
                    " agent_kind, detail, resource) VALUES (:recorded, 'R', 0, 'read', :agent,"
                    " 'system', :detail, NULL)"
                ),
                {
                    "recorded": f"2026-01-0{n + 1} 10:00:00.123456",
                    "agent": f"old-{n}",
                    "detail": json.dumps({"n": n, "score": 0.1 * n}),
                },
            )
    migrate(engine)
    from clientregistry.store.db import session_factory

    sessions = session_factory(engine)
    result = verify_chain(sessions)
    assert result.ok and result.checked == 3 == result.head
    with transaction(sessions) as session:
        record_action(
            session,
            agent="rita",
            source_address=None,
            event_type="break",
            action=AuditAction.UPDATE,
            entity=None,
            detail={},
        )
        assert session.scalar(select(func.max(AuditEvent.chain_seq))) == 4
    assert verify_chain(sessions).ok
    engine.dispose()


def test_without_a_head_events_are_kept_and_verify_says_so(context: RegistryContext) -> None:
    lookup(context, "before")
    execute(context, "DELETE FROM audit_chain_head")
    lookup(context, "after")  # recorded all the same (outside the chain)
    assert {e.agent for e in events(context)} == {"before", "after"}
    broken = verify_chain(context.sessions).broken
    assert broken is not None and broken.reason in ("no chain head", "not in the chain")
