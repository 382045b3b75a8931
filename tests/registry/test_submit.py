"""The submit use case in-process: create, update, re-matching (``replaced-by``), automatic,
potential and conflicting matches, on a registry made by ``init_data_dir`` (SQLite)."""

from __future__ import annotations

import functools
import itertools
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from clientregistry.fhir.errors import FhirError
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.read import read_patient
from clientregistry.registry.setup import init_data_dir
from clientregistry.registry.submit import SubmitResult, Submitter
from clientregistry.settings import ClientSystemConfig, Settings, load_settings
from clientregistry.store.db import transaction
from clientregistry.store.enums import IssueKind, IssueStatus, LinkKind, MatchStatus
from clientregistry.store.models import (
    BrokenMatch,
    GoldenRecord,
    Link,
    MatchIssue,
    SearchToken,
    SourceRecord,
    SourceRecordVersion,
)

FreshDatabase = Callable[[str], AbstractContextManager[str]]
"""The ``fresh_database`` fixture of ``tests/conftest.py``."""
GOLDEN_CODE = "5c827da5-4858-4f3d-a50c-62ece001efea"
POTENTIAL_TAG = {
    "system": "http://openclientregistry.org/fhir/matchIssues",
    "code": "potentialMatches",
}
CONFLICT_TAG = {
    "system": "http://openclientregistry.org/fhir/matchIssues",
    "code": "conflictMatches",
}
AUTO_TAG = {"system": "http://openclientregistry.org/fhir/automatch", "code": "autoMatches"}

GRACE = {
    "name": [{"family": "Okello", "given": ["Grace"]}],
    "birthDate": "1980-03-04",
    "gender": "female",
}
SARAH = {**GRACE, "name": [{"family": "Okello", "given": ["Sarah"]}]}
"""Grace's family name, birth date and gender with another given name: a potential match of
Grace under the default rules (about 104.6; potential ≥ 103, auto ≥ 105)."""
PETER = {
    "name": [{"family": "Mugisha", "given": ["Peter"]}],
    "birthDate": "1955-11-30",
    "gender": "male",
    "telecom": [{"system": "phone", "value": "0772123456"}],
}


@pytest.fixture(scope="session")
def template_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ``init`` (CA, certificates, migrated SQLite database) copied for every test."""
    data_dir = tmp_path_factory.mktemp("template") / "data"
    init_data_dir(data_dir, hostnames=[])
    return data_dir


@pytest.fixture
def settings(template_data_dir: Path, tmp_path: Path) -> Settings:
    data_dir = tmp_path / "data"
    shutil.copytree(template_data_dir, data_dir)
    return load_settings(data_dir, environ={})


@pytest.fixture
def context(settings: Settings) -> Iterator[RegistryContext]:
    context = RegistryContext.open(settings)
    yield context
    context.close()


class Registry:
    """Submitting as a system, each submission in a transaction of its own."""

    def __init__(self, context: RegistryContext) -> None:
        self.context = context

    def system(self, name: str) -> ClientSystemConfig:
        return self.context.settings.systems[name]

    def submit(
        self, system: str, value: str, demographics: dict[str, Any], **kw: Any
    ) -> SubmitResult:
        config = self.system(system)
        patient = {
            "resourceType": "Patient",
            "identifier": [{"system": config.internal_id_system, "value": value}],
            **demographics,
        }
        with transaction(self.context.sessions) as session:
            return Submitter(self.context).submit(session, patient, config, **kw)

    def get(self, model: type, key: Any) -> Any:
        with self.context.sessions() as session:
            return session.get(model, key)

    def rows(self, statement: Any) -> list[Any]:
        with self.context.sessions() as session:
            return list(session.scalars(statement).all())

    def read(self, patient_id: str) -> tuple[dict[str, Any], bool]:
        with self.context.sessions() as session:
            return read_patient(session, self.context.settings, patient_id)


@pytest.fixture
def registry(context: RegistryContext) -> Registry:
    return Registry(context)


def tag_codes(resource: dict[str, Any]) -> list[str]:
    return [t["code"] for t in resource["meta"].get("tag", [])]


def test_first_submission_creates_a_record_and_a_golden_record(registry: Registry) -> None:
    result = registry.submit("openmrs", "om-1", GRACE)
    assert result.created is True
    assert result.version == 1
    assert result.status is MatchStatus.NONE
    assert (result.score, result.rule_set, result.potential, result.conflicts) == (None, None, 0, 0)
    resource = result.resource
    assert resource["id"] == result.record_id
    assert resource["meta"]["versionId"] == "1"
    assert resource["meta"]["tag"] == [
        {
            "system": "http://openclientregistry.org/fhir/clientid",
            "code": "openmrs",
            "display": "OpenMRS",
        }
    ]
    assert resource["link"] == [
        {"other": {"reference": f"Patient/{result.golden_id}"}, "type": "refer"}
    ]
    assert resource["name"] == GRACE["name"]

    record = registry.get(SourceRecord, result.record_id)
    assert (record.client_system, record.internal_system, record.internal_value) == (
        "openmrs",
        "http://clientregistry.org/openmrs",
        "om-1",
    )
    assert record.golden_id == result.golden_id
    golden = registry.get(GoldenRecord, result.golden_id)
    assert golden.active is True and golden.replaced_by is None
    links = registry.rows(select(Link).where(Link.source_record_id == result.record_id))
    assert [(link.golden_id, link.kind) for link in links] == [(result.golden_id, LinkKind.AUTO)]
    versions = registry.rows(
        select(SourceRecordVersion.version).where(SourceRecordVersion.record_id == result.record_id)
    )
    assert versions == [1]

    served, is_golden = registry.read(result.golden_id)
    assert is_golden
    assert tag_codes(served) == [GOLDEN_CODE]
    assert served["link"] == [
        {"other": {"reference": f"Patient/{result.record_id}"}, "type": "seealso"}
    ]


def test_the_same_person_from_another_system_is_an_automatic_match(registry: Registry) -> None:
    first = registry.submit("openmrs", "om-1", GRACE)
    second = registry.submit("dhis2", "d-1", GRACE)
    assert second.created
    assert second.record_id != first.record_id
    assert second.golden_id == first.golden_id
    assert second.status is MatchStatus.AUTO
    assert second.score is not None and second.score >= 105
    assert second.rule_set == "default"
    assert AUTO_TAG in second.resource["meta"]["tag"]
    served, _ = registry.read(first.golden_id)
    assert {link["other"]["reference"] for link in served["link"]} == {
        f"Patient/{first.record_id}",
        f"Patient/{second.record_id}",
    }
    assert registry.rows(select(MatchIssue)) == []


def test_update_by_the_internal_identifier_replaces_the_record(registry: Registry) -> None:
    first = registry.submit("openmrs", "om-1", GRACE)
    changed = {**GRACE, "name": [{"family": "Okello", "given": ["Grace", "Achieng"]}]}
    second = registry.submit("openmrs", "om-1", changed)
    assert second.created is False
    assert second.record_id == first.record_id
    assert second.version == 2
    assert second.golden_id == first.golden_id  # alone in it: kept
    record = registry.get(SourceRecord, first.record_id)
    assert record.version == 2
    assert record.resource["name"] == changed["name"]
    versions = registry.rows(
        select(SourceRecordVersion)
        .where(SourceRecordVersion.record_id == first.record_id)
        .order_by(SourceRecordVersion.version)
    )
    assert [(v.version, v.resource["name"][0]["given"]) for v in versions] == [
        (1, ["Grace"]),
        (2, ["Grace", "Achieng"]),
    ]
    links = registry.rows(select(Link).where(Link.source_record_id == first.record_id))
    assert len(links) == 1  # the old link was dropped
    with registry.context.sessions() as session:
        assert session.scalar(select(func.count()).select_from(GoldenRecord)) == 1


def test_submissions_keep_the_search_tokens_of_the_record(registry: Registry) -> None:
    first = registry.submit("openmrs", "om-1", GRACE)

    def tokens() -> set[tuple[str, str]]:
        with registry.context.sessions() as session:
            rows = session.execute(
                select(SearchToken.kind, SearchToken.value).where(
                    SearchToken.record_id == first.record_id
                )
            )
            return {(kind, value) for kind, value in rows}

    assert ("family", "okello") in tokens()
    assert ("given", "grace") in tokens()
    assert ("identifier", "om-1") in tokens()
    changed = {**GRACE, "name": [{"family": "Ñúñez", "given": ["Grace"]}]}
    registry.submit("openmrs", "om-1", changed)
    after = tokens()
    assert ("family", "nunez") in after
    assert ("family", "okello") not in after  # the old tokens were replaced
    assert ("given", "grace") in after


def test_rematching_an_update_retires_the_emptied_golden_record(registry: Registry) -> None:
    a = registry.submit("openmrs", "om-a", GRACE)
    b = registry.submit("dhis2", "d-b", PETER)
    assert b.golden_id != a.golden_id
    moved = registry.submit("dhis2", "d-b", GRACE)
    assert moved.created is False
    assert moved.golden_id == a.golden_id
    assert moved.status is MatchStatus.AUTO

    old = registry.get(GoldenRecord, b.golden_id)
    assert old.replaced_by == a.golden_id
    assert old.active is False
    assert old.version == 2
    served, is_golden = registry.read(b.golden_id)
    assert is_golden
    assert served["link"] == [
        {"other": {"reference": f"Patient/{a.golden_id}"}, "type": "replaced-by"}
    ]
    survivor, _ = registry.read(a.golden_id)
    assert [link["type"] for link in survivor["link"]] == ["seealso", "seealso"]
    assert registry.get(GoldenRecord, a.golden_id).version == 2


def test_a_record_leaving_a_shared_golden_record_gets_a_new_one(registry: Registry) -> None:
    a = registry.submit("openmrs", "om-a", GRACE)
    b = registry.submit("dhis2", "d-b", GRACE)
    assert b.golden_id == a.golden_id
    moved = registry.submit("dhis2", "d-b", PETER)
    assert moved.golden_id != a.golden_id
    assert moved.status is MatchStatus.NONE
    kept = registry.get(GoldenRecord, a.golden_id)
    assert kept.active is True and kept.replaced_by is None
    served, _ = registry.read(a.golden_id)
    assert served["link"] == [{"other": {"reference": f"Patient/{a.record_id}"}, "type": "seealso"}]


def test_potential_match_is_queued_for_review(registry: Registry) -> None:
    grace = registry.submit("openmrs", "om-g", GRACE)
    sarah = registry.submit("dhis2", "d-s", SARAH)
    assert sarah.status is MatchStatus.POTENTIAL
    assert sarah.golden_id != grace.golden_id  # not linked: a person decides
    assert sarah.potential == 1 and sarah.conflicts == 0
    assert POTENTIAL_TAG in sarah.resource["meta"]["tag"]
    assert AUTO_TAG not in sarah.resource["meta"]["tag"]
    [issue] = registry.rows(select(MatchIssue))
    assert (issue.record_id, issue.other_record_id) == (sarah.record_id, grace.record_id)
    assert issue.kind is IssueKind.POTENTIAL
    assert issue.status is IssueStatus.OPEN
    assert 103 <= issue.score < 105
    assert registry.get(SourceRecord, sarah.record_id).match_status is MatchStatus.POTENTIAL
    served, _ = registry.read(sarah.record_id)
    assert POTENTIAL_TAG in served["meta"]["tag"]

    # an update that no longer resembles Grace closes the question
    cleared = registry.submit("dhis2", "d-s", PETER)
    assert cleared.status is MatchStatus.NONE
    assert registry.rows(select(MatchIssue)) == []
    assert POTENTIAL_TAG not in cleared.resource["meta"]["tag"]


def test_auto_matches_under_two_golden_records_are_a_conflict(registry: Registry) -> None:
    """a and b are one person by their data, but known not to be (a broken match); c matches
    both, joins one and flags the other as a conflict."""
    a = registry.submit("openmrs", "om-a", GRACE)
    b = registry.submit("dhis2", "d-b", PETER)
    with transaction(registry.context.sessions) as session:
        session.add(BrokenMatch.pair(a.record_id, b.record_id))
    b2 = registry.submit("dhis2", "d-b", GRACE)
    assert b2.golden_id != a.golden_id  # the broken match keeps them apart
    assert b2.status is MatchStatus.NONE
    broken = [e for e in b2.resource.get("extension", [])]
    assert broken == [
        {
            "url": "http://clientregistry.org/brokenMatch",
            "valueReference": {"reference": f"Patient/{a.record_id}"},
        }
    ]

    c = registry.submit("lims", "l-c", GRACE)
    assert c.golden_id in {a.golden_id, b2.golden_id}
    assert c.status is MatchStatus.CONFLICT
    assert c.conflicts == 1
    assert CONFLICT_TAG in c.resource["meta"]["tag"]
    [issue] = registry.rows(select(MatchIssue).where(MatchIssue.record_id == c.record_id))
    assert issue.kind is IssueKind.CONFLICT
    other = b2.record_id if c.golden_id == a.golden_id else a.record_id
    assert issue.other_record_id == other


def test_a_patient_without_the_callers_identifier_is_refused(registry: Registry) -> None:
    config = registry.system("openmrs")
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "http://clientregistry.org/dhis2", "value": "x"}],
        **GRACE,
    }
    with (
        pytest.raises(FhirError) as info,
        transaction(registry.context.sessions) as session,
    ):
        Submitter(registry.context).submit(session, patient, config)
    assert (info.value.status, info.value.code) == (422, "business-rule")
    assert info.value.expression == ["Patient.identifier"]
    assert registry.rows(select(SourceRecord)) == []


def test_update_by_id_of_another_record_is_a_conflict(registry: Registry) -> None:
    first = registry.submit("openmrs", "om-1", GRACE)
    with pytest.raises(FhirError) as info:
        registry.submit("openmrs", "om-1", GRACE, url_id="some-other-id")
    assert info.value.status == 409
    assert registry.get(SourceRecord, first.record_id).version == 1


def test_client_chosen_id_is_used_on_create(registry: Registry) -> None:
    result = registry.submit("openmrs", "om-1", GRACE, url_id="chosen-1")
    assert result.record_id == "chosen-1"
    assert result.created
    again = registry.submit("openmrs", "om-1", PETER, url_id="chosen-1")
    assert (again.record_id, again.created, again.version) == ("chosen-1", False, 2)


def test_a_failed_transaction_leaves_nothing(registry: Registry) -> None:
    config = registry.system("openmrs")
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": config.internal_id_system, "value": "om-1"}],
        **GRACE,
    }
    with (
        pytest.raises(RuntimeError),
        transaction(registry.context.sessions) as session,
    ):
        Submitter(registry.context).submit(session, patient, config)
        raise RuntimeError("abort")
    for model in (SourceRecord, GoldenRecord, Link, SourceRecordVersion):
        assert registry.rows(select(model)) == [], model
    assert registry.submit("openmrs", "om-1", GRACE).created


# ----------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def postgres_settings(tmp_path: Path, fresh_database: FreshDatabase) -> Iterator[Settings]:
    with fresh_database("postgresql") as database_url:
        data_dir = tmp_path / "pg-data"
        init_data_dir(data_dir, hostnames=[], database_url=database_url)
        yield load_settings(data_dir, environ={})


def test_concurrent_update_and_submission_do_not_merge_two_people(
    postgres_settings: Settings,
) -> None:
    """Worker 1 updates record R from Grace to Peter; meanwhile worker 2 submits Grace anew.
    Whatever the order, the new Grace must not end with Peter's record."""
    one = RegistryContext.open(postgres_settings)
    two = RegistryContext.open(postgres_settings, run_migrations=False)
    try:
        first = Registry(one).submit("openmrs", "om-r", GRACE)
        openmrs = one.settings.systems["openmrs"]  # (the systems live in the database)
        dhis2 = one.settings.systems["dhis2"]
        update = {
            "resourceType": "Patient",
            "identifier": [{"system": openmrs.internal_id_system, "value": "om-r"}],
            **PETER,
        }
        new = {
            "resourceType": "Patient",
            "identifier": [{"system": dhis2.internal_id_system, "value": "d-new"}],
            **GRACE,
        }
        results: dict[str, SubmitResult | BaseException] = {}

        def submit_new() -> None:
            try:
                with transaction(two.sessions) as session:
                    results["new"] = Submitter(two).submit(session, new, dhis2)
            except BaseException as error:  # reported below
                results["new"] = error

        worker = threading.Thread(target=submit_new)
        with transaction(one.sessions) as session:
            updated = Submitter(one).submit(session, update, openmrs)
            worker.start()
            time.sleep(1.0)  # worker 2 reads candidates while the update is not committed
        worker.join(30)
        assert not worker.is_alive()
        outcome = results["new"]
        assert isinstance(outcome, SubmitResult), outcome
        assert updated.record_id == first.record_id
        with one.sessions() as session:
            r_golden = session.get(SourceRecord, first.record_id).golden_id
            new_golden = session.get(SourceRecord, outcome.record_id).golden_id
        assert new_golden != r_golden, "Grace and Peter share a golden record"
    finally:
        one.close()
        two.close()


def _exchanges(trace: str) -> int:
    """Round trips in a libpq trace: runs of client messages (``F``) answered by the server."""
    directions = [line.split("\t", 1)[0] for line in trace.splitlines() if line[:1] in "FB"]
    return sum(1 for pair in itertools.pairwise(directions) if pair == ("F", "B"))


def _traced(connection: Any, work: Callable[[], Any]) -> tuple[Any, str]:
    """``work()``'s result and the libpq trace of ``connection`` (a psycopg connection) while
    it ran; a submission's trace fits in a pipe's buffer."""
    from psycopg.pq import Trace

    read_end, write_end = os.pipe()
    try:
        connection.pgconn.trace(write_end)
        connection.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS)
        try:
            result = work()
        finally:
            connection.pgconn.untrace()
        os.close(write_end)
        write_end = -1
        with os.fdopen(read_end, encoding="utf-8") as trace:
            read_end = -1
            return result, trace.read()
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)


@pytest.mark.parametrize("commit", [True, False])
def test_a_submission_takes_few_round_trips_on_postgresql(
    postgres_settings: Settings, commit: bool
) -> None:
    """``BEGIN`` and the reads (the locks, the caller's record, the candidates) go in one
    round trip, the writes in another: each one more stalls the worker (it waits on the
    event loop)."""
    context = RegistryContext.open(postgres_settings)
    try:
        Registry(context).submit("openmrs", "om-1", GRACE)
        openmrs = context.settings.systems["openmrs"]  # (the systems live in the database)
        submitter = Submitter(context)
        outcomes = []
        for value, person in (("om-2", GRACE), ("om-3", PETER)):  # a match, then a new person
            patient = {
                "resourceType": "Patient",
                "identifier": [{"system": openmrs.internal_id_system, "value": value}],
                **person,
            }
            submission = submitter.prepare(patient, openmrs)
            with transaction(context.sessions) as session:
                driver = session.connection().connection.driver_connection
                work = functools.partial(
                    submitter.submit_prepared,
                    session,
                    submission,
                    commit=commit,
                    wait_for_locks=False,  # as on a worker's event loop
                )
                outcomes.append(_traced(driver, work))
        (matched, trace_matched), (new, trace_new) = outcomes
        assert matched.status is MatchStatus.AUTO and not new.potential
        # BEGIN with the reads, then the writes (with the COMMIT when asked; else the
        # caller's COMMIT is one more, after)
        assert "COMMIT" in trace_new if commit else "COMMIT" not in trace_new
        assert trace_new.index("BEGIN") < trace_new.index("pg_try_advisory_xact_lock")
        assert _exchanges(trace_matched) == 2
        assert _exchanges(trace_new) == 2
    finally:
        context.close()


# ----------------------------------------------------------------------------- cannot-links

SSN = "http://hl7.org/fhir/sid/us-ssn"


def seedling(n: int) -> dict[str, Any]:
    """The issue's reproduction: Sam Seedling<n>, male, born 1960-02-<n>."""
    return {
        "name": [{"family": f"Seedling{n}", "given": ["Sam"]}],
        "gender": "male",
        "birthDate": f"1960-02-{n:02d}",
    }


def _assert_no_chain(registry: Registry, results: list[SubmitResult]) -> None:
    first, seventeenth = results[0], results[16]
    assert first.golden_id != seventeenth.golden_id
    assert results[1].golden_id == first.golden_id  # neighbours still match
    context = registry.context
    scorer = context.matcher.scorer
    records = registry.rows(select(SourceRecord))
    for one in records:  # no golden record holds two records that are no match
        for other in records:
            if one.id < other.id and one.golden_id == other.golden_id:
                assert scorer.likely(one.features, other.features) is not None
    conflicts = registry.rows(select(MatchIssue).where(MatchIssue.kind == IssueKind.CONFLICT))
    assert conflicts, "a record kept apart is a conflict for review"


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_twenty_seedlings_do_not_chain_into_one_person(
    database: str, request: pytest.FixtureRequest
) -> None:
    """Each Sam Seedling matches the one born the day before; the 1st and the 17th score
    102.5 (no match), so they must not share a golden record."""
    fixture = "context" if database == "sqlite" else "postgres_context"
    registry = Registry(request.getfixturevalue(fixture))
    results = [registry.submit("openmrs", f"seed-{n}", seedling(n)) for n in range(1, 21)]
    assert results[1].status is MatchStatus.AUTO
    _assert_no_chain(registry, results)
    assert any(r.status is MatchStatus.CONFLICT for r in results)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_twenty_seedlings_in_one_batch_do_not_chain(
    database: str, request: pytest.FixtureRequest
) -> None:
    """The same in one batch (an import's or a transaction Bundle's path), after a first
    Seedling stored alone."""
    fixture = "context" if database == "sqlite" else "postgres_context"
    context: RegistryContext = request.getfixturevalue(fixture)
    registry = Registry(context)
    first = registry.submit("openmrs", "seed-1", seedling(1))
    config = registry.system("openmrs")
    submitter = Submitter(context)
    submissions = [
        submitter.prepare(
            {
                "resourceType": "Patient",
                "identifier": [{"system": config.internal_id_system, "value": f"seed-{n}"}],
                **seedling(n),
            },
            config,
        )
        for n in range(2, 21)
    ]
    with transaction(context.sessions) as session:
        decisions = submitter.submit_batch(session, submissions)
    golden = {d.record_id: d.golden_id for d in decisions}
    assert decisions[0].golden_id == first.golden_id
    assert decisions[15].golden_id != first.golden_id  # the 17th
    assert golden
    records = registry.rows(select(SourceRecord))
    scorer = context.matcher.scorer
    for one in records:
        for other in records:
            if one.id < other.id and one.golden_id == other.golden_id:
                assert scorer.likely(one.features, other.features) is not None


def _submit_with_ssn(registry: Registry, system: str, value: str, ssn: str | None) -> SubmitResult:
    config = registry.system(system)
    identifiers = [{"system": config.internal_id_system, "value": value}]
    if ssn is not None:
        identifiers.append({"system": SSN, "value": ssn})
    patient = {"resourceType": "Patient", **GRACE, "identifier": identifiers}
    with transaction(registry.context.sessions) as session:
        return Submitter(registry.context).submit(session, patient, config)


@pytest.fixture
def unique_registry(template_data_dir: Path, tmp_path: Path) -> Iterator[Registry]:
    """A registry whose rules declare the usual identifier systems unique per person."""
    from clientregistry.matching.rules import default_rules

    data_dir = tmp_path / "data"
    shutil.copytree(template_data_dir, data_dir)
    raw = default_rules().to_json()
    raw["rules"][0]["fields"]["identifier"]["uniqueSystems"] = "default"
    rules = data_dir / "unique-rules.json"
    rules.write_text(json.dumps(raw), encoding="utf-8")
    settings = load_settings(data_dir, environ={"CR_MATCHING_RULES": str(rules)})
    context = RegistryContext.open(settings)
    yield Registry(context)
    context.close()


def test_a_different_national_id_is_a_conflict_not_a_link(unique_registry: Registry) -> None:
    """Grace with one social security number, a record of her without one, then a record
    alike in everything but a different number: it auto-matches both, yet it must not join
    them (a cannot-link); it waits in the review queue as a conflict."""
    registry = unique_registry
    first = _submit_with_ssn(registry, "openmrs", "om-1", "111-22-3333")
    second = _submit_with_ssn(registry, "dhis2", "d-1", None)
    assert second.golden_id == first.golden_id
    third = _submit_with_ssn(registry, "openmrs", "om-2", "999-88-7777")
    assert third.golden_id != first.golden_id
    assert third.status is MatchStatus.CONFLICT and third.conflicts == 2
    typo = _submit_with_ssn(registry, "dhis2", "d-2", "111-22-3334")  # one edit: a typo
    assert typo.golden_id == first.golden_id


@pytest.fixture
def postgres_context(postgres_settings: Settings) -> Iterator[RegistryContext]:
    context = RegistryContext.open(postgres_settings)
    yield context
    context.close()
