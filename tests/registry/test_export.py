"""Exporting the registry as FHIR NDJSON, and importing an export into an empty registry."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from bulk import backend, context, data_dir
from import_data import people, write_ndjson
from sqlalchemy import select

from clientregistry.registry import export, imports
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.imports import ImportOptions
from clientregistry.registry.setup import init_data_dir
from clientregistry.settings import load_settings
from clientregistry.store.enums import JobOrigin, JobState
from clientregistry.store.models import GoldenRecord, SourceRecord

__all__ = ["backend", "context", "data_dir"]

FreshDatabase = Callable[[str], AbstractContextManager[str]]


def load(context: RegistryContext, path: Path, system: str | None) -> imports.ImportStatus:
    started = imports.start_import(
        context, path, ImportOptions(system=system), origin=JobOrigin.CLI, actor="t"
    )
    status = imports.run_import(context, started.job_id)
    assert status.state is JobState.DONE, status.error
    return status


def persons(context: RegistryContext) -> list[list[tuple[str, str]]]:
    """The persons, each as the (system, record id there) of its records."""
    with context.sessions() as session:
        rows = session.execute(
            select(SourceRecord.golden_id, SourceRecord.client_system, SourceRecord.internal_value)
        ).all()
    groups: dict[str, list[tuple[str, str]]] = {}
    for golden, system, value in rows:
        groups.setdefault(golden, []).append((system, value))
    return sorted(sorted(group) for group in groups.values())


def lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_an_export_imported_into_an_empty_registry_gives_the_same_persons(
    context: RegistryContext, tmp_path: Path, fresh_database: FreshDatabase, backend: str
) -> None:
    group = people(300, seed=13)
    load(context, write_ndjson(tmp_path / "openmrs.ndjson", group[:200]), "openmrs")
    # the lab knows some of the same people (and more), under its own ids
    lab = [{**p, "id": f"lab-{p['id']}"} for p in group[150:]]
    load(context, write_ndjson(tmp_path / "lims.ndjson", lab), "lims")
    before = persons(context)
    assert any(len({s for s, _ in person}) == 2 for person in before)  # across systems
    manifest = export.write_export(context, tmp_path / "export")
    files = {f.kind: tmp_path / "export" / f.name for f in manifest.output}
    sources, goldens = lines(files["source"]), lines(files["golden"])
    assert len(sources) == 350
    assert len(goldens) == len(before)
    assert all(r["link"][0]["type"] == "refer" for r in sources)
    members = {link["other"]["reference"] for g in goldens for link in g.get("link", [])}
    assert members == {f"Patient/{r['id']}" for r in sources}
    with fresh_database(backend) as url:
        empty = tmp_path / "empty"
        init_data_dir(empty, hostnames=[], database_url=url)
        again = RegistryContext.open(load_settings(empty, environ={}))
        try:
            status = load(again, files["source"], None)  # each record as its client tag says
            assert status.counts.created == 350 and status.counts.errors == 0
            skipped = load(again, files["golden"], None)
            assert skipped.counts.skipped == len(goldens) and skipped.counts.created == 0
            assert persons(again) == before
        finally:
            again.close()


def test_since_keeps_what_changed_after(context: RegistryContext, tmp_path: Path) -> None:
    load(context, write_ndjson(tmp_path / "a.ndjson", people(20, seed=1)), "openmrs")
    time.sleep(0.05)
    moment = datetime.now(UTC)
    later = [{**p, "id": f"later-{p['id']}"} for p in people(5, seed=2)]
    load(context, write_ndjson(tmp_path / "b.ndjson", later), "dhis2")
    manifest = export.write_export(context, tmp_path / "since", since=moment)
    counts = {f.kind: f.count for f in manifest.output}
    assert counts["source"] == 5
    with context.sessions() as session:
        changed = session.scalars(
            select(GoldenRecord.id).where(GoldenRecord.last_updated >= moment)
        ).all()
    assert counts.get("golden", 0) == len(changed) > 0
    everything = export.write_export(context, tmp_path / "all")
    assert {f.kind: f.count for f in everything.output}["source"] == 25
