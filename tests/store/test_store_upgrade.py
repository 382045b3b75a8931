"""Upgrades: ``clientregistry migrate`` brings a database made by the previous release, with
people, links, a reviewer's decision and audit events in it, to this release's schema, and
the registry works on it as before; and the migrations never import live code.

``data/registry-0002.json`` holds every row of a registry the previous release made
(``data/previous_release.py`` says how); the test loads them into a database migrated to
that release's revision, on SQLite and PostgreSQL, as they were.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Boolean, DateTime, MetaData, func, select, text, update

from clientregistry.registry.context import RegistryContext
from clientregistry.registry.pix import PixQuery, cross_reference
from clientregistry.registry.setup import DEMO_SYSTEMS
from clientregistry.registry.submit import Submitter
from clientregistry.settings import CONFIG_FILE, load_settings, render_config
from clientregistry.store.db import create_engine_for, current_revision, head_revision, migrate
from clientregistry.store.db import transaction as store_transaction
from clientregistry.store.enums import MatchStatus
from clientregistry.store.models import AuditEvent, ClientSystem, SourceRecord

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "data" / "registry-0002.json"
MIGRATIONS = HERE.parents[1] / "src" / "clientregistry" / "store" / "migrations" / "versions"
CLI = Path(sys.executable).with_name("clientregistry")
ORDER = [
    "golden_record", "source_record", "source_record_version", "link", "match_issue",
    "broken_match", "blocking_key", "search_token", "term_count", "user_account", "token",
    "audit_event", "client_system",
]  # fmt: skip
"""Parents before children."""


def _value(column: Any, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(column.type, DateTime):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    if isinstance(column.type, Boolean):
        return bool(value)
    return value


def _load_previous_release(url: str) -> dict[str, Any]:
    """A database at the previous release's revision holding the fixture's rows."""
    document = json.loads(FIXTURE.read_text(encoding="utf-8"))
    engine = create_engine_for(url)
    try:
        migrate(engine, document["schema_revision"])
        metadata = MetaData()
        metadata.reflect(engine)
        with engine.begin() as connection:
            for name in ORDER:
                table, data = metadata.tables[name], document["tables"][name]
                rows = [
                    {c: _value(table.c[c], v) for c, v in zip(data["columns"], row, strict=True)}
                    for row in data["rows"]
                ]
                later = [(r["id"], r.pop("replaced_by")) for r in rows if name == "golden_record"]
                if rows:
                    connection.execute(table.insert(), rows)
                for golden, replaced_by in later:  # (a golden record may point at a later one)
                    if replaced_by:
                        statement = update(table).where(table.c.id == golden)
                        connection.execute(statement.values(replaced_by=replaced_by))
                serial = rows and "id" in table.c and isinstance(rows[0]["id"], int)
                if engine.dialect.name == "postgresql" and serial:
                    connection.execute(
                        text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), :n)"),
                        {"n": max(r["id"] for r in rows)},
                    )
    finally:
        engine.dispose()
    return document


@pytest.fixture
def previous(database_url: str, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A data directory as the previous release left it (its config lists the systems)."""
    document = _load_previous_release(database_url)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = render_config(hostnames=[], systems=list(DEMO_SYSTEMS), database_url=database_url)
    (data_dir / CONFIG_FILE).write_text(config, encoding="utf-8")
    return data_dir, document


def _migrate(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), "migrate", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_migrate_upgrades_the_previous_release_with_its_data(previous) -> None:
    data_dir, document = previous
    result = _migrate(data_dir)
    assert result.returncode == 0, result.stderr
    assert f"from revision {document['schema_revision']} to {head_revision()}" in result.stdout
    records = len(document["tables"]["source_record"]["rows"])
    assert f"blocking keys of {records} records again" in result.stdout  # an earlier layout
    again = _migrate(data_dir)
    assert again.returncode == 0 and "up to date" in again.stdout
    assert "derived" not in again.stdout

    context = RegistryContext.open(load_settings(data_dir, environ={}))
    try:
        assert current_revision(context.engine) == head_revision()
        with store_transaction(context.sessions, write=False) as session:
            records = {
                (r.internal_system.rsplit("/", 1)[-1], r.internal_value): r
                for r in session.scalars(select(SourceRecord))
            }
            audited = session.scalar(select(func.count()).select_from(AuditEvent))
            old_ids = session.scalars(select(AuditEvent.request_id)).all()
            systems = session.scalars(select(ClientSystem.name).order_by(ClientSystem.name))
            assert systems.all() == ["dhis2", "lims", "openmrs"]  # imported from config.toml
        assert audited == len(document["tables"]["audit_event"]["rows"])
        assert set(old_ids) == {None}
        woman = records[("openmrs", "1001")].golden_id
        assert records[("lims", "55120")].golden_id == woman
        assert records[("dhis2", "77a")].golden_id != woman  # the reviewer's break held

        with store_transaction(context.sessions, write=False) as session:
            parameters = cross_reference(
                session,
                context.settings,
                PixQuery("http://clientregistry.org/openmrs", "1001", ()),
            ).parameters
        found = [p for p in parameters["parameter"] if p["name"] == "targetIdentifier"]
        assert {"system": "http://clientregistry.org/lims", "value": "55120"} in [
            {k: p["valueIdentifier"][k] for k in ("system", "value")} for p in found
        ]

        newcomer = json.loads((HERE.parents[1] / "examples" / "1-openmrs.json").read_text())
        newcomer["identifier"][0] = {"system": "http://clientregistry.org/dhis2", "value": "new"}
        with store_transaction(context.sessions) as session:
            client = context.settings.systems["dhis2"]
            submitted = Submitter(context).submit(session, newcomer, client)
        # found through the old blocking keys: her and the record the reviewer broke out
        assert submitted.status is MatchStatus.CONFLICT and submitted.conflicts == 1
        assert submitted.golden_id == woman
    finally:
        context.close()


def test_migrate_refuses_an_empty_database_and_a_bad_configuration(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    config = render_config(hostnames=[], systems=[], database_url=url)
    (data_dir / CONFIG_FILE).write_text(config, encoding="utf-8")
    result = _migrate(data_dir)
    assert result.returncode == 2 and "holds no registry" in result.stderr
    (data_dir / CONFIG_FILE).write_text("[server]\nport = -1\n", encoding="utf-8")
    bad = _migrate(data_dir)
    assert bad.returncode == 2 and "port" in bad.stderr and "Traceback" not in bad.stderr


FROZEN_PACKAGES = ("clientregistry.registry", "clientregistry.matching", "clientregistry.fhir")


@pytest.mark.parametrize("path", sorted(MIGRATIONS.glob("0*.py")), ids=lambda p: p.name)
def test_migrations_are_frozen(path: Path) -> None:
    """A migration keeps doing what it did: it never imports the registry's live code."""
    imported: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.append(node.module)
        elif isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
    assert not [m for m in imported if m.startswith(FROZEN_PACKAGES)], imported


def test_revision_0002_fills_the_search_tokens_of_stored_records(database_url: str) -> None:
    engine = create_engine_for(database_url)
    try:
        migrate(engine, "0001")
        resource = {
            "resourceType": "Patient",
            "identifier": [{"system": "http://x.org/id", "value": "A-1"}],
            "name": [{"family": "Núñez", "given": ["Ana  María"]}],
            "birthDate": "1984-01-12",
            "telecom": [{"system": "phone", "value": "0772 410233"}],
            "address": [{"city": "Kampala"}],
        }
        now = datetime.now(UTC)
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO source_record (id, client_system, internal_system, "
                    "internal_value, version, last_updated, resource, features, golden_id, "
                    "match_status, human_adjudicated) VALUES ('r1', 'x', 'http://x.org/id', "
                    "'A-1', 1, :now, :resource, '[]', NULL, 'none', :no)"
                ),
                {"now": now, "resource": json.dumps(resource), "no": False},
            )
        migrate(engine, "0002")
        with engine.connect() as connection:
            tokens = connection.execute(
                text("SELECT kind, value FROM search_token ORDER BY kind, value")
            ).all()
    finally:
        engine.dispose()
    assert [tuple(t) for t in tokens] == [
        ("address-city", "kampala"),
        ("birthdate", "1984-01-12"),
        ("family", "nunez"),
        ("given", "ana maria"),
        ("identifier", "A-1"),
        ("identifier-system", "http://x.org/id"),
        ("name", "ana maria"),
        ("name", "nunez"),
        ("telecom", "0772 410233"),
    ]
