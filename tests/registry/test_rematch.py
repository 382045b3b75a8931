"""Re-matching the registry under new rules: the dry run's plan, applying it, human decisions
kept, rules switched over in every process, a new field, and a job killed and continued."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from bulk import backend, context, data_dir, state
from import_data import people, write_ndjson
from sqlalchemy import select

from clientregistry.registry import imports, links, rematch, rules_store
from clientregistry.registry.actor import Actor, Refused
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.imports import ImportOptions
from clientregistry.registry.links import LinkEditor, Resolution
from clientregistry.registry.setup import init_data_dir
from clientregistry.registry.stored_features import bring_up_to_date
from clientregistry.settings import load_settings
from clientregistry.store.db import transaction
from clientregistry.store.enums import IssueStatus, JobOrigin, JobState, Role
from clientregistry.store.models import (
    BrokenMatch,
    GoldenRecord,
    MatchIssue,
    RematchChange,
    RulesState,
    SourceRecord,
)

__all__ = ["backend", "context", "data_dir"]

ADMIN = Actor("admin", Role.ADMIN)
CLI = Path(sys.executable).with_name("clientregistry")


def default_document() -> dict[str, Any]:
    text = resources.files("clientregistry.matching").joinpath("default_rules.json").read_text()
    document: dict[str, Any] = json.loads(text)
    return document


def thresholds(potential: float, auto: float) -> str:
    """The built-in rules with other thresholds."""
    document = default_document()
    document["rules"][0]["potentialMatchThreshold"] = potential
    document["rules"][0]["autoMatchThreshold"] = auto
    return json.dumps(document)


LOOSER = thresholds(101.5, 103.0)
"""Potential matches become auto matches: persons merge."""
STRICTER = thresholds(106.0, 112.0)
"""Weak auto matches become potential: persons split."""


def load(context: RegistryContext, tmp_path: Path, n: int = 500, seed: int = 9) -> None:
    path = write_ndjson(tmp_path / f"people-{n}-{seed}.ndjson", people(n, seed=seed))
    started = imports.start_import(
        context, path, ImportOptions(system="openmrs"), origin=JobOrigin.CLI, actor="t"
    )
    assert imports.run_import(context, started.job_id).state is JobState.DONE


def run(context: RegistryContext, rules: str, *, dry_run: bool) -> rematch.RematchStatus:
    version = rules_store.store_rules(context, ADMIN, rules, "rules.json").id
    job_id = rematch.start_rematch(context, ADMIN, version, dry_run=dry_run, origin=JobOrigin.CLI)
    status = rematch.run_rematch(context, job_id, reload_wait=0)
    assert status.state is JobState.DONE, status.error
    return status


def plan(context: RegistryContext, job_id: int) -> dict[str, RematchChange]:
    with context.sessions() as session:
        rows = session.scalars(select(RematchChange).where(RematchChange.job_id == job_id))
        return {row.record_id: row for row in rows}


def registry(context: RegistryContext) -> dict[str, Any]:
    """Each record's golden record and status, the open review items (unordered pairs)."""
    with context.sessions() as session:
        records = {
            record_id: (golden, str(status))
            for record_id, golden, status in session.execute(
                select(SourceRecord.id, SourceRecord.golden_id, SourceRecord.match_status)
            )
        }
        issues = {
            (frozenset((a, b)), str(kind))
            for a, b, kind in session.execute(
                select(MatchIssue.record_id, MatchIssue.other_record_id, MatchIssue.kind).where(
                    MatchIssue.status == IssueStatus.OPEN
                )
            )
        }
    return {"records": records, "issues": issues}


def partition(golden_of: dict[str, str]) -> list[list[str]]:
    groups: dict[str, list[str]] = {}
    for record_id, golden in golden_of.items():
        groups.setdefault(golden, []).append(record_id)
    return sorted(sorted(group) for group in groups.values())


# ----------------------------------------------------------------------------- the plan


def test_the_same_rules_change_nothing(context: RegistryContext, tmp_path: Path) -> None:
    load(context, tmp_path)
    status = run(context, json.dumps(default_document()), dry_run=True)
    assert status.summary.changes == 0 and status.summary.records == 500
    assert status.summary.persons_before == status.summary.persons_after


@pytest.mark.parametrize("rules", [LOOSER, STRICTER], ids=["looser", "stricter"])
def test_a_dry_run_reports_exactly_what_applying_it_changes(
    context: RegistryContext, tmp_path: Path, rules: str
) -> None:
    load(context, tmp_path)
    before = registry(context)
    with context.sessions() as session:
        before_issues = {
            i: (frozenset((a, b)), str(kind))
            for i, a, b, kind in session.execute(
                select(
                    MatchIssue.id, MatchIssue.record_id, MatchIssue.other_record_id, MatchIssue.kind
                )
            )
        }
    dry = run(context, rules, dry_run=True)
    assert registry(context) == before  # a dry run changes nothing
    planned = plan(context, dry.id)
    summary = dry.summary
    assert summary.changes == len(planned) > 0
    if rules == LOOSER:
        assert summary.persons_merged > 0 and summary.persons_after < summary.persons_before
    else:
        assert summary.persons_split > 0 and summary.persons_after > summary.persons_before
    applied = run(context, rules, dry_run=False)
    after = registry(context)
    assert applied.summary.to_json() == summary.to_json()
    assert applied.applied == len(planned)
    # every record is where the plan put it: the same records move, into the same persons
    moved = {r for r, (golden, _) in after["records"].items() if golden != before["records"][r][0]}
    assert moved == {
        r for r, change in planned.items() if change.golden_after != change.golden_before
    }
    expected = {r: golden for r, (golden, _) in before["records"].items()}
    expected.update({r: change.golden_after for r, change in planned.items()})
    assert partition({r: g for r, (g, _) in after["records"].items()}) == partition(expected)
    for record_id, change in planned.items():
        assert after["records"][record_id][1] == change.status_after.value
    unchanged = set(before["records"]) - set(planned)
    assert all(after["records"][r][1] == before["records"][r][1] for r in unchanged)
    # review items: those closed are gone, those opened are there
    closed = {before_issues[i] for change in planned.values() for i in change.issues_before}
    opened = {
        (frozenset((r, other)), kind)
        for r, change in planned.items()
        for other, kind, _ in change.issues
    }
    assert opened <= after["issues"]
    assert not closed & after["issues"]
    assert len(after["issues"]) == len(before["issues"]) - len(closed) + len(opened)
    # and the registry now matches as the new rules do: matching again changes nothing
    assert run(context, rules, dry_run=True).summary.changes == 0


def test_emptied_golden_records_are_retired(context: RegistryContext, tmp_path: Path) -> None:
    load(context, tmp_path)
    applied = run(context, LOOSER, dry_run=False)
    assert applied.summary.persons_retired > 0
    with context.sessions() as session:
        retired = session.scalars(select(GoldenRecord).where(GoldenRecord.active.is_(False))).all()
        live = set(session.scalars(select(SourceRecord.golden_id)))
    assert len(retired) == applied.summary.persons_retired
    assert all(golden.replaced_by in live for golden in retired)
    assert not live & {golden.id for golden in retired}


# ----------------------------------------------------------------------------- human decisions


def _act(context: RegistryContext, action: Any) -> Any:
    with transaction(context.sessions) as session:
        return action(LinkEditor(session, context, "rita"))


def test_human_decisions_survive_a_rematch(context: RegistryContext, tmp_path: Path) -> None:
    load(context, tmp_path, n=600)
    with context.sessions() as session:
        linked = session.execute(
            select(SourceRecord.golden_id, SourceRecord.id).order_by(SourceRecord.id)
        ).all()
        by_golden: dict[str, list[str]] = {}
        for golden, record_id in linked:
            by_golden.setdefault(golden, []).append(record_id)
        pairs = [ids for ids in by_golden.values() if len(ids) >= 2]
        issue = session.scalars(
            select(MatchIssue).where(MatchIssue.status == IssueStatus.OPEN).order_by(MatchIssue.id)
        ).first()
        loners = [ids[0] for ids in by_golden.values() if len(ids) == 1]
    assert len(pairs) >= 2 and issue is not None
    # a break: the first pair is not one person
    broken_out = pairs[0][1]
    _act(context, lambda editor: links.break_record(editor, broken_out))
    # a resolved review item: not a match
    pair = frozenset((issue.record_id, issue.other_record_id))
    _act(context, lambda e: links.resolve_issue(e, issue.id, Resolution.NOT_A_MATCH))
    # a join: two people nothing links
    joined, host = loners[0], loners[1]
    _act(context, lambda editor: links.join(editor, joined, None, host))
    with context.sessions() as session:
        host_golden = session.get(SourceRecord, host).golden_id  # type: ignore[union-attr]
    dry = run(context, LOOSER, dry_run=True)
    assert dry.summary.persons_merged > 0  # the looser rules merge people...
    run(context, LOOSER, dry_run=False)
    with context.sessions() as session:
        golden = {r: g for r, g in session.execute(select(SourceRecord.id, SourceRecord.golden_id))}
        reopened = session.scalars(
            select(MatchIssue).where(
                MatchIssue.status == IssueStatus.OPEN,
                MatchIssue.record_id.in_(pair),
                MatchIssue.other_record_id.in_(pair),
            )
        ).all()
        still_broken = session.scalars(select(BrokenMatch)).all()
    # ... but not those people say are not one person, nor those people put together
    assert golden[broken_out] != golden[pairs[0][0]]
    a, b = sorted(pair)
    assert golden[a] != golden[b] and not reopened
    assert golden[joined] == golden[host] == host_golden
    assert len(still_broken) >= 2


# ----------------------------------------------------------------------------- the switch


def test_every_process_follows_the_rules_put_in_force(
    context: RegistryContext, data_dir: Path, tmp_path: Path
) -> None:
    load(context, tmp_path, n=100)
    worker = RegistryContext.open(load_settings(data_dir, environ={}), serving=True)
    worker.start()  # a server's worker: follows the rules in force by itself
    try:
        assert worker.matcher.rules.rule_sets[0].auto_threshold == 105
        run(context, STRICTER, dry_run=False)
        deadline = time.monotonic() + 5
        while worker.matcher.rules.rule_sets[0].auto_threshold != 112:
            assert time.monotonic() < deadline, "the worker did not follow the new rules"
            time.sleep(0.05)
        assert worker.in_force is not None and worker.in_force.active.version is not None
        # and a process opened later starts with them
        later = RegistryContext.open(load_settings(data_dir, environ={}))
        try:
            assert later.matcher.rules.rule_sets[0].auto_threshold == 112
        finally:
            later.close()
    finally:
        worker.close()


def test_restoring_the_previous_rules(context: RegistryContext, tmp_path: Path) -> None:
    load(context, tmp_path, n=200)
    assert rules_store.previous_version(context) is None
    original = state(context)
    run(context, STRICTER, dry_run=False)
    assert state(context)["persons"] != original["persons"]
    previous = rules_store.previous_version(context)
    assert previous is not None
    job_id = rematch.start_rematch(context, ADMIN, previous, dry_run=False, origin=JobOrigin.CLI)
    assert rematch.run_rematch(context, job_id, reload_wait=0).state is JobState.DONE
    assert context.matcher.rules.rule_sets[0].auto_threshold == 105
    restored = state(context)
    assert restored["persons"] == original["persons"]
    versions = rules_store.list_versions(context, ADMIN)
    assert [v.created_by for v in versions if v.active] == ["configuration"]


def test_a_new_field_gives_every_record_its_features(
    context: RegistryContext, tmp_path: Path
) -> None:
    load(context, tmp_path, n=200)
    document = default_document()
    fields = document["rules"][0]["fields"]
    fields["district"] = {
        "fhirpath": "address.first().district",
        "algorithm": "exact",
        "mValue": 0.9,
        "uValue": 0.1,
    }
    before = context.matcher.extractor.slot_count
    status = run(context, json.dumps(document), dry_run=False)
    assert status.state is JobState.DONE
    assert context.matcher.extractor.slot_count == before + 1
    with context.sessions() as session:
        lengths = {len(f) for f in session.scalars(select(SourceRecord.features))}
    assert lengths == {before + 1}
    # the switch recorded the new rules' key plan: opening the registry derives nothing again
    with context.sessions() as session:
        state = session.get(RulesState, 1)
        assert state is not None and state.key_plan == context.matcher.blocker.signature()
    assert bring_up_to_date(context.sessions, context.matcher) is None
    # and the registry goes on matching: a known person is found again
    client = context.settings.systems["dhis2"]
    patient = people(1, seed=9)[0]
    patient["identifier"] = [{"system": client.internal_id_system, "value": "again-1"}]
    from clientregistry.registry.submit import Submitter

    with transaction(context.sessions) as session:
        result = Submitter(context).submit(session, patient, client)
    assert result.score is not None  # linked to the person p-1 is


def test_rules_that_are_not_valid_are_refused_with_the_checks_messages(
    context: RegistryContext,
) -> None:
    bad = default_document()
    bad["rules"][0]["fields"]["given"]["levels"][0]["algorithm"] = "jaro"
    with pytest.raises(Refused) as refused:
        rules_store.store_rules(context, ADMIN, json.dumps(bad), "bad.json")
    assert refused.value.status == 400
    assert "unknown algorithm 'jaro'" in refused.value.message
    checked = rules_store.check_rules(b"{not json", "x.json")
    assert checked.messages() == [
        "x.json: the decision rules are not valid",
        "  - line 1, column 2: not JSON: Expecting property name enclosed in double quotes",
    ]
    good = rules_store.check_rules(json.dumps(default_document()), "d.json")
    assert good.ok and good.messages()[-1] == "d.json: OK"
    assert "blocking keys:" in good.messages()


# ----------------------------------------------------------------------------- kill -9


def test_a_rematch_killed_at_random_points_ends_as_an_uninterrupted_one(
    data_dir: Path, tmp_path: Path, fresh_database: Any, backend: str
) -> None:
    rules = tmp_path / "looser.json"
    rules.write_text(LOOSER)
    path = write_ndjson(tmp_path / "people.ndjson", people(500, seed=4))

    def cli(directory: Path, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [str(CLI), *args, "--data-dir", str(directory)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
        )

    def finish(process: subprocess.Popen[bytes]) -> None:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()

    def persons(directory: Path) -> Any:
        opened = RegistryContext.open(load_settings(directory, environ={}))
        try:
            return state(opened)
        finally:
            opened.close()

    with fresh_database(backend) as url:
        whole = tmp_path / "whole"
        init_data_dir(whole, hostnames=[], database_url=url)
        finish(cli(whole, "import", str(path), "--system", "openmrs"))
        finish(cli(whole, "rematch", "--rules", str(rules)))
        expected = persons(whole)
    finish(cli(data_dir, "import", str(path), "--system", "openmrs"))
    rng = random.Random(5)
    for delay in (1.5, 3.0, 4.5):
        process = cli(data_dir, "rematch", "--rules", str(rules))
        time.sleep(delay + rng.uniform(0, 0.5))
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=30)
    finish(cli(data_dir, "rematch", "--rules", str(rules)))
    assert persons(data_dir) == expected
