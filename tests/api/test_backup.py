"""Backup and restore: ``clientregistry backup`` while the server runs, ``restore`` into a
new data directory and an empty database, on SQLite and PostgreSQL; the restored registry
holds the same persons, links, review decisions, audit trail, systems and certificates, and
serves them. Refusals change nothing."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from registry_servers import CLI, RegistryServer, _server_environment, running_server
from sqlalchemy import MetaData, select

from clientregistry.store.db import create_engine_for

TABLES = [
    "golden_record", "source_record", "source_record_version", "link", "match_issue",
    "broken_match", "blocking_key", "search_token", "term_count", "user_account", "token",
    "audit_event", "client_system", "alembic_version",
]  # fmt: skip


def _rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in key order."""
    engine = create_engine_for(url)
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        found = {}
        with engine.connect() as connection:
            for name in TABLES:
                table = metadata.tables[name]
                order = list(table.primary_key.columns) or list(table.columns)
                found[name] = [tuple(r) for r in connection.execute(select(table).order_by(*order))]
        return found
    finally:
        engine.dispose()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``clientregistry ARGS`` (with its own --data-dir, unlike ``RegistryServer.cli``)."""
    return subprocess.run(
        [str(CLI), *args],
        env=_server_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _fill(server: RegistryServer, fhir) -> None:
    """People, links and audit events."""
    person = fhir.person()
    for system in ("openmrs", "dhis2", "lims"):
        response = server.submit(system, fhir.patient(system, demographics=person))
        assert response.status_code == 201, response.text
    twin = dict(person, name=[{"family": person["name"][0]["family"], "given": ["Zed"]}])
    assert server.submit("openmrs", fhir.patient("openmrs", demographics=twin)).status_code == 201
    assert server.read("hie", "Patient/none").status_code == 404  # a refused read, audited


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_backup_taken_while_serving_restores_identically(
    backend: str, tmp_path: Path, fresh_database, fhir
) -> None:
    archive = tmp_path / "backups" / "registry.tar.gz"
    with running_server(tmp_path / "source", backend, fresh_database) as server:
        _fill(server, fhir)
        taken = server.cli("backup", "--output", str(archive))
        assert taken.returncode == 0, taken.stderr
        assert "CA's private key" in taken.stdout
        assert archive.stat().st_mode & 0o077 == 0  # its owner's only
        source_url = server.database_url or f"sqlite:///{server.data_dir / 'registry.db'}"
        before = _rows(source_url)
        certificates = _files(server.certs_dir)
        config = (server.data_dir / "config.toml").read_text()
        # the server went on serving while the backup was taken
        after = server.submit("openmrs", fhir.patient("openmrs"))
        assert after.status_code == 201

        with fresh_database(backend) as target_url:
            restored = tmp_path / "restored"
            args = ["restore", "--input", str(archive), "--data-dir", str(restored)]
            if target_url:
                args += ["--database-url", target_url]
            done = _cli(*args)
            assert done.returncode == 0, done.stderr
            restored_url = target_url or f"sqlite:///{restored / 'registry.db'}"
            assert _rows(restored_url) == before
            assert _files(restored / "certs") == certificates
            if target_url:
                assert f'url = "{target_url}"' in (restored / "config.toml").read_text()
            else:
                assert (restored / "config.toml").read_text() == config
            assert before["source_record"] and before["link"] and before["audit_event"]
            assert before["client_system"] and before["blocking_key"]


def test_restore_refuses_what_it_cannot_do_and_keeps_nothing(
    tmp_path: Path, launch_server: Callable[..., RegistryServer]
) -> None:
    server = launch_server("sqlite")
    archive = tmp_path / "b.tar.gz"
    assert server.cli("backup", "--output", str(archive)).returncode == 0

    def restore(*args: str) -> Any:
        return _cli("restore", "--input", *args)

    busy = restore(str(archive), "--data-dir", str(server.data_dir))
    assert busy.returncode == 2 and "not empty" in busy.stderr

    not_a_backup = tmp_path / "x.tar.gz"
    not_a_backup.write_bytes(b"hello")
    garbage = restore(str(not_a_backup), "--data-dir", str(tmp_path / "n"))
    assert garbage.returncode == 2 and "cannot read the backup" in garbage.stderr

    into_postgres = restore(
        str(archive), "--data-dir", str(tmp_path / "p"), "--database-url", "postgresql://x@h/db"
    )
    assert into_postgres.returncode == 2 and "restore into the same kind" in into_postgres.stderr
    assert not (tmp_path / "p").exists()

    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(archive, arcname="../escape")
    refused = restore(str(evil), "--data-dir", str(tmp_path / "e"))
    assert refused.returncode == 2 and "unexpected member" in refused.stderr
    assert not (tmp_path / "escape").exists() and not (tmp_path / "e").exists()

    newer = tmp_path / "newer.tar.gz"
    with tarfile.open(archive) as old, tarfile.open(newer, "w:gz") as tar:
        for member in old.getmembers():
            data = old.extractfile(member)
            if member.name == "clientregistry-backup.json" and data is not None:
                manifest = json.loads(data.read())
                manifest["schema_revision"] = "9999"
                body = json.dumps(manifest).encode()
                member.size = len(body)
                tar.addfile(member, io.BytesIO(body))
            else:
                tar.addfile(member, data)
    too_new = restore(str(newer), "--data-dir", str(tmp_path / "t"))
    assert too_new.returncode == 2 and "unknown to this release" in too_new.stderr
    assert not (tmp_path / "t").exists()
    assert "Traceback" not in too_new.stderr + refused.stderr


def test_a_backup_into_the_data_directory_is_refused(
    launch_server: Callable[..., RegistryServer],
) -> None:
    server = launch_server("sqlite")
    inside = server.data_dir / "backup.tar.gz"
    result = server.cli("backup", "--output", str(inside))
    assert result.returncode == 2 and "inside the data directory" in result.stderr
    assert not inside.exists()
