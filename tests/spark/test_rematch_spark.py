"""``rematch --engine spark --dry-run``: the plan computed on Spark (local mode) is the
single-machine dry run's, human decisions included, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from pyspark.sql import SparkSession
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registry"))
from bulk import backend, context, data_dir
from import_data import people, write_ndjson

from clientregistry.registry import imports, links, rematch, rules_store
from clientregistry.registry.actor import Actor, Refused
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.imports import ImportOptions
from clientregistry.registry.links import LinkEditor, Resolution
from clientregistry.store.db import transaction
from clientregistry.store.enums import IssueStatus, JobOrigin, JobState, Role
from clientregistry.store.models import MatchIssue, RematchChange, SourceRecord

__all__ = ["backend", "context", "data_dir"]

ADMIN = Actor("admin", Role.ADMIN)
CLI = Path(sys.executable).with_name("clientregistry")


def _rules(potential: float, auto: float, *, term_frequencies: bool = True) -> str:
    """The built-in rules with other thresholds (and without term-frequency adjustment)."""
    text = resources.files("clientregistry.matching").joinpath("default_rules.json").read_text()
    if not term_frequencies:
        text = text.replace('"termFrequency": true', '"termFrequency": false')
    document: dict[str, Any] = json.loads(text)
    document["rules"][0]["potentialMatchThreshold"] = potential
    document["rules"][0]["autoMatchThreshold"] = auto
    return json.dumps(document)


LOOSER = _rules(101.5, 103.0, term_frequencies=False)
STRICTER = _rules(106.0, 112.0, term_frequencies=False)
STRICTER_TF = _rules(106.0, 112.0)


@pytest.fixture
def loaded(
    context: RegistryContext, tmp_path: Path, spark: SparkSession
) -> Iterator[RegistryContext]:
    """A registry of 400 people's records, with a break, a resolved item and a join."""
    path = write_ndjson(tmp_path / "people.ndjson", people(400, seed=9))
    started = imports.start_import(
        context, path, ImportOptions(system="openmrs"), origin=JobOrigin.CLI, actor="t"
    )
    assert imports.run_import(context, started.job_id).state is JobState.DONE
    with context.sessions() as session:
        by_golden: dict[str, list[str]] = {}
        for golden, record_id in session.execute(
            select(SourceRecord.golden_id, SourceRecord.id).order_by(SourceRecord.id)
        ):
            by_golden.setdefault(golden, []).append(record_id)
        issue = session.scalars(
            select(MatchIssue).where(MatchIssue.status == IssueStatus.OPEN).order_by(MatchIssue.id)
        ).first()
    pairs = [ids for ids in by_golden.values() if len(ids) >= 2]
    loners = [ids[0] for ids in by_golden.values() if len(ids) == 1]
    assert pairs and issue is not None and len(loners) >= 2
    _act(context, lambda editor: links.break_record(editor, pairs[0][1]))
    _act(context, lambda editor: links.resolve_issue(editor, issue.id, Resolution.NOT_A_MATCH))
    _act(context, lambda editor: links.join(editor, loners[0], None, loners[1]))
    yield context


def _act(context: RegistryContext, action: Callable[[LinkEditor], Any]) -> None:
    with transaction(context.sessions) as session:
        action(LinkEditor(session, context, "rita"))


def _dry_run(
    context: RegistryContext, rules: str, engine: str, block_limit: int | None = None
) -> rematch.RematchStatus:
    version = rules_store.store_rules(context, ADMIN, rules, "rules.json").id
    job_id = rematch.start_rematch(
        context,
        ADMIN,
        version,
        dry_run=True,
        origin=JobOrigin.CLI,
        engine=engine,
        block_limit=block_limit,
    )
    status = rematch.run_rematch(context, job_id, reload_wait=0)
    assert status.state is JobState.DONE, status.error
    return status


def _plan(context: RegistryContext, job_id: int) -> dict[str, Any]:
    """The plan, with new golden records (fresh ids each run) named by their records."""
    with context.sessions() as session:
        rows = session.scalars(select(RematchChange).where(RematchChange.job_id == job_id)).all()
    members: dict[str, set[str]] = {}
    for row in rows:
        members.setdefault(row.golden_after, set()).add(row.record_id)
    return {
        row.record_id: (
            row.golden_before,
            "new:" + ",".join(sorted(members[row.golden_after]))
            if row.new_golden
            else row.golden_after,
            row.status_before,
            row.status_after,
            sorted((other, kind) for other, kind, _ in row.issues),
            sorted(row.issues_before),
        )
        for row in rows
    }


def test_the_spark_dry_run_reports_what_the_single_machine_one_does(
    loaded: RegistryContext,
) -> None:
    # The plans are the same, change for change (with a break, a join and a resolved item),
    # with term-frequency adjustment too: Spark scores and checks cannot-links with the
    # counts of the records before each one, as the single-machine replay does
    for rules in (LOOSER, STRICTER, STRICTER_TF):
        single = _dry_run(loaded, rules, "local")
        on_spark = _dry_run(loaded, rules, "spark")
        assert single.summary.changes > 0
        assert _plan(loaded, on_spark.id) == _plan(loaded, single.id)
        assert on_spark.summary.to_json() == single.summary.to_json()


def test_a_block_limit_reaches_the_spark_dry_run(loaded: RegistryContext) -> None:
    """Past the largest block the bound changes nothing; at one record a block it must
    change the candidates, so the plan (which the limit reached) differs."""
    single = _dry_run(loaded, STRICTER, "local")
    wide = _dry_run(loaded, STRICTER, "spark", block_limit=1000)
    assert _plan(loaded, wide.id) == _plan(loaded, single.id)
    narrow = _dry_run(loaded, STRICTER, "spark", block_limit=1)
    assert _plan(loaded, narrow.id) != _plan(loaded, single.id)
    with pytest.raises(Refused, match="block limit"):
        rematch.start_rematch(
            loaded, ADMIN, 1, dry_run=True, origin=JobOrigin.CLI, engine="local", block_limit=5
        )


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_spark_engine_makes_dry_runs_only(context: RegistryContext) -> None:
    version = rules_store.store_rules(context, ADMIN, STRICTER, "rules.json").id
    with pytest.raises(Refused, match="dry runs only"):
        rematch.start_rematch(
            context, ADMIN, version, dry_run=False, origin=JobOrigin.CLI, engine="spark"
        )


@pytest.mark.parametrize("backend", ["sqlite"])  # (the same command on both)
def test_rematch_engine_spark_on_the_command_line(
    loaded: RegistryContext, data_dir: Path, tmp_path: Path
) -> None:
    rules = tmp_path / "stricter.json"
    rules.write_text(STRICTER)
    report = tmp_path / "changes.csv"
    common = [str(CLI), "rematch", "--rules", str(rules), "--data-dir", str(data_dir)]
    spark = ["--engine", "spark", "--spark-master", "local[1]"]
    done = subprocess.run(
        [*common, "--dry-run", *spark, "--report", str(report)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "on Spark (local[1])" in done.stderr and "(dry run)" in done.stderr, done.stderr
    assert "moving; persons" in done.stderr
    assert report.read_text().startswith("record_id,")
    refused = subprocess.run(
        [*common, "--engine", "spark"], capture_output=True, text=True, timeout=120, check=False
    )
    assert refused.returncode == 2 and "dry runs only" in refused.stderr, refused.stderr
    local = subprocess.run(
        [*common, "--dry-run", "--block-limit", "5"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert local.returncode == 2, local.stderr
    assert "--block-limit goes with --engine spark" in " ".join(local.stderr.split())
