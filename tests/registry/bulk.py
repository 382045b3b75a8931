"""Fixtures and helpers of the bulk tests (imports, exports, re-matches): a fresh registry
per backend, and the registry's state as the tests compare it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from clientregistry.registry.context import RegistryContext
from clientregistry.registry.setup import init_data_dir
from clientregistry.settings import load_settings
from clientregistry.store.enums import IssueStatus
from clientregistry.store.models import MatchIssue, SourceRecord

FreshDatabase = Callable[[str], AbstractContextManager[str]]

__all__ = ["backend", "context", "data_dir", "state"]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def data_dir(backend: str, tmp_path: Path, fresh_database: FreshDatabase) -> Iterator[Path]:
    with fresh_database(backend) as url:
        directory = tmp_path / "data"
        init_data_dir(directory, hostnames=[], database_url=url)
        yield directory


@pytest.fixture
def context(data_dir: Path) -> Iterator[RegistryContext]:
    context = RegistryContext.open(load_settings(data_dir, environ={}))
    try:
        yield context
    finally:
        context.close()


def state(context: RegistryContext) -> dict[str, Any]:
    """The registry as the tests compare it: records by their internal identifier, the
    persons they make up, their match status and the open review items."""
    with context.sessions() as session:
        rows = session.execute(
            select(
                SourceRecord.id,
                SourceRecord.internal_value,
                SourceRecord.golden_id,
                SourceRecord.match_status,
                SourceRecord.version,
            )
        ).all()
        issues = session.execute(
            select(MatchIssue.record_id, MatchIssue.other_record_id, MatchIssue.kind).where(
                MatchIssue.status == IssueStatus.OPEN
            )
        ).all()
    value_of = {record_id: value for record_id, value, *_ in rows}
    persons: dict[str, set[str]] = {}
    for _, value, golden, _, _ in rows:
        persons.setdefault(golden, set()).add(value)
    return {
        "records": sorted(value for _, value, *_ in rows),
        "persons": sorted(sorted(group) for group in persons.values()),
        "status": sorted((value, str(status)) for _, value, _, status, _ in rows),
        "versions": sorted((value, version) for _, value, _, _, version in rows),
        "issues": sorted((value_of[a], value_of[b], str(kind)) for a, b, kind in issues),
    }
