"""Link management without HTTP: break, unbreak, join, resolve, revert — and that decisions
made by a person survive later submissions (registry.links + registry.submit)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from clientregistry.fhir import codes
from clientregistry.registry import links, review
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.links import ActionOutcome, LinkEditor, LinkError, Resolution
from clientregistry.registry.read import read_patient
from clientregistry.registry.setup import init_data_dir
from clientregistry.registry.submit import SubmitResult, Submitter, keep_golden
from clientregistry.settings import load_settings
from clientregistry.store.db import transaction
from clientregistry.store.enums import AuditAction, IssueKind, IssueStatus, LinkKind, MatchStatus
from clientregistry.store.models import (
    BrokenMatch,
    GoldenRecord,
    Link,
    MatchIssue,
    SourceRecord,
)

SYSTEMS = {
    "openmrs": "http://clientregistry.org/openmrs",
    "dhis2": "http://clientregistry.org/dhis2",
    "lims": "http://clientregistry.org/lims",
}


def patient(
    system: str,
    value: str,
    given: str,
    family: str,
    *,
    birth_date: str = "1984-01-12",
    phone: str | None = "0772410233",
    gender: str = "female",
    national_id: str | None = None,
) -> dict[str, Any]:
    identifiers = [{"system": SYSTEMS[system], "value": value}]
    if national_id:
        identifiers.append({"system": "http://example.org/national-id", "value": national_id})
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": identifiers,
        "name": [{"family": family, "given": [given]}],
        "gender": gender,
        "birthDate": birth_date,
    }
    if phone:
        resource["telecom"] = [{"system": "phone", "value": phone}]
    return resource


AISHA = ("Aisha", "Nakato")
JOHN = {"birth_date": "1990-05-05", "phone": "0711111111", "gender": "male"}
PETER = {"birth_date": "1971-11-30", "phone": "0755555555", "gender": "male"}


@pytest.fixture(params=["sqlite", "postgresql"])
def context(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    fresh_database: Callable[[str], AbstractContextManager[str]],
) -> Iterator[RegistryContext]:
    with fresh_database(request.param) as url:
        init_data_dir(tmp_path / "data", hostnames=[], database_url=url)
        context = RegistryContext.open(load_settings(tmp_path / "data", environ={}))
        yield context
        context.close()


class Registry:
    """Submissions and link actions on one context, each in its own transaction."""

    def __init__(self, context: RegistryContext) -> None:
        self.context = context

    def submit(self, system: str, resource: dict[str, Any]) -> SubmitResult:
        with transaction(self.context.sessions) as session:
            client = self.context.settings.systems[system]
            return Submitter(self.context).submit(session, resource, client)

    def act(self, action: Callable[[LinkEditor], ActionOutcome]) -> tuple[ActionOutcome, int]:
        """Run an action and audit it as the admin API does; (outcome, audit event id)."""
        with transaction(self.context.sessions) as session:
            outcome = action(LinkEditor(session, self.context, "tester"))
            event = links.audit_outcome(session, outcome, agent="tester", source_address=None)
            return outcome, event.id

    def record(self, record_id: str) -> SourceRecord:
        with transaction(self.context.sessions, write=False) as session:
            found = session.get(SourceRecord, record_id)
            assert found is not None
            return found

    def golden(self, record_id: str) -> str:
        golden = self.record(record_id).golden_id
        assert golden is not None
        return golden

    def open_issues(self, kind: IssueKind | None = None) -> list[MatchIssue]:
        with transaction(self.context.sessions, write=False) as session:
            query = select(MatchIssue).where(MatchIssue.status == IssueStatus.OPEN)
            if kind is not None:
                query = query.where(MatchIssue.kind == kind)
            return list(session.scalars(query.order_by(MatchIssue.id)))

    def broken_pairs(self) -> set[tuple[str, str]]:
        with transaction(self.context.sessions, write=False) as session:
            return {(b.record_a, b.record_b) for b in session.scalars(select(BrokenMatch))}

    def resource(self, record_id: str) -> dict[str, Any]:
        with transaction(self.context.sessions, write=False) as session:
            resource, _ = read_patient(session, self.context.settings, record_id)
            return resource

    def latest_link(self, record_id: str) -> Link:
        with transaction(self.context.sessions, write=False) as session:
            link = session.scalars(
                select(Link)
                .where(Link.source_record_id == record_id)
                .order_by(Link.id.desc())
                .limit(1)
            ).first()
            assert link is not None
            return link


@pytest.fixture
def registry(context: RegistryContext) -> Registry:
    return Registry(context)


def _pair(a: str, b: str) -> tuple[str, str]:
    low, high = sorted((a, b))
    return low, high


# ----------------------------------------------------------------------------- break


def test_break_keeps_two_records_apart_however_their_data_change(registry: Registry) -> None:
    a = registry.submit("openmrs", patient("openmrs", "1", *AISHA))
    b = registry.submit("dhis2", patient("dhis2", "2", "Aisha", "Nakatto"))
    assert b.golden_id == a.golden_id and b.status is MatchStatus.AUTO

    outcome, _ = registry.act(lambda e: links.break_record(e, b.record_id))
    assert outcome.golden_id not in (None, a.golden_id)
    assert registry.golden(b.record_id) == outcome.golden_id
    assert registry.golden(a.record_id) == a.golden_id
    assert registry.broken_pairs() == {_pair(a.record_id, b.record_id)}
    assert outcome.changes.goldens_created == [outcome.golden_id]

    # Both updated to the very same data, with a shared national id: a perfect match.
    same = {"national_id": "NAT-123"}
    b2 = registry.submit("dhis2", patient("dhis2", "2", *AISHA, **same))
    a2 = registry.submit("openmrs", patient("openmrs", "1", *AISHA, **same))
    assert b2.golden_id != a2.golden_id
    assert registry.golden(a.record_id) != registry.golden(b.record_id)
    assert registry.open_issues() == []  # the broken pair is not even a conflict
    extensions = registry.resource(b.record_id).get("extension", [])
    assert {
        "url": codes.BROKEN_MATCH_EXTENSION,
        "valueReference": {"reference": f"Patient/{a.record_id}"},
    } in extensions


def test_a_broken_record_never_joins_its_partner_through_a_third_record(
    registry: Registry,
) -> None:
    a = registry.submit("openmrs", patient("openmrs", "1", *AISHA))
    b = registry.submit("dhis2", patient("dhis2", "2", *AISHA))
    registry.act(lambda e: links.break_record(e, b.record_id))
    # c matches both; it lands with one of them, and b's update must not follow it there.
    c = registry.submit("lims", patient("lims", "3", *AISHA))
    assert c.golden_id in (registry.golden(a.record_id), registry.golden(b.record_id))
    registry.submit("dhis2", patient("dhis2", "2", *AISHA, phone="0772410234"))
    registry.submit("openmrs", patient("openmrs", "1", *AISHA, phone="0772410235"))
    assert registry.golden(a.record_id) != registry.golden(b.record_id)


def test_break_needs_company_and_unbreak_matches_again(registry: Registry) -> None:
    a = registry.submit("openmrs", patient("openmrs", "1", *AISHA))
    with pytest.raises(LinkError) as alone:
        registry.act(lambda e: links.break_record(e, a.record_id))
    assert alone.value.status == 409
    b = registry.submit("dhis2", patient("dhis2", "2", *AISHA))
    registry.act(lambda e: links.break_record(e, b.record_id))
    with pytest.raises(LinkError) as nothing:
        registry.act(lambda e: links.unbreak(e, a.record_id, ["no-such-record"]))
    assert nothing.value.status == 409

    outcome, _ = registry.act(lambda e: links.unbreak(e, b.record_id))
    assert registry.broken_pairs() == set()
    assert registry.golden(b.record_id) == registry.golden(a.record_id) == outcome.golden_id
    record = registry.record(b.record_id)
    assert record.match_status is MatchStatus.AUTO and not record.human_adjudicated
    assert registry.latest_link(b.record_id).kind is LinkKind.AUTO
    # The break's own golden record was emptied: retired, pointing at its successor.
    with transaction(registry.context.sessions, write=False) as session:
        retired = session.get(GoldenRecord, outcome.changes.records[0].golden_before)
        assert retired is not None and not retired.active
        assert retired.replaced_by == outcome.golden_id


def test_revert_a_break_from_its_audit_event(registry: Registry) -> None:
    a = registry.submit("openmrs", patient("openmrs", "1", *AISHA))
    b = registry.submit("dhis2", patient("dhis2", "2", *AISHA))
    broke, event_id = registry.act(lambda e: links.break_record(e, b.record_id))
    reverted, revert_id = registry.act(lambda e: links.revert_event(e, event_id))
    assert registry.golden(b.record_id) == a.golden_id
    assert registry.broken_pairs() == set()
    assert registry.record(b.record_id).match_status is MatchStatus.AUTO
    assert reverted.detail == {"reverts": event_id, "reverted_action": "break"}
    # Nothing to revert twice; the revert itself can be reverted (the break is back).
    with pytest.raises(LinkError) as twice:
        registry.act(lambda e: links.revert_event(e, event_id))
    assert twice.value.status == 409
    registry.act(lambda e: links.revert_event(e, revert_id))
    assert registry.golden(b.record_id) == broke.golden_id
    assert registry.broken_pairs() == {_pair(a.record_id, b.record_id)}


def test_revert_refuses_when_the_records_moved_since(registry: Registry) -> None:
    a = registry.submit("openmrs", patient("openmrs", "1", *AISHA))
    x = registry.submit("dhis2", patient("dhis2", "9", "John", "Okello", **JOHN))
    _, joined = registry.act(lambda e: links.join(e, x.record_id, a.golden_id))
    registry.act(lambda e: _new(e, x))
    with pytest.raises(LinkError) as moved:
        registry.act(lambda e: links.revert_event(e, joined))
    assert moved.value.status == 409 and "moved since" in moved.value.message


def _new(editor: LinkEditor, result: SubmitResult) -> ActionOutcome:
    """Move a record to a golden record of its own (as resolution 'new' would)."""
    record = editor.record(result.record_id)
    golden = editor.move(record, None, adjudicated=True)
    return ActionOutcome("join", record.id, golden, editor.finish(), {})


def test_only_link_actions_can_be_reverted(registry: Registry) -> None:
    with transaction(registry.context.sessions) as session:
        event = links.record_action(
            session,
            agent="tester",
            source_address=None,
            event_type="queue-read",
            action=AuditAction.READ,
            entity=None,
            detail={},
        )
        event_id = event.id
    for missing, status in ((event_id, 409), (12345, 404)):
        with pytest.raises(LinkError) as refused:
            registry.act(lambda e, i=missing: links.revert_event(e, i))  # type: ignore[misc]
        assert refused.value.status == status


# ----------------------------------------------------------------------------- join


def test_a_join_sticks_when_either_side_is_updated(registry: Registry) -> None:
    a = registry.submit("openmrs", patient("openmrs", "1", *AISHA))
    x = registry.submit("dhis2", patient("dhis2", "9", "John", "Okello", **JOHN))
    assert x.golden_id != a.golden_id

    outcome, _ = registry.act(lambda e: links.join(e, x.record_id, a.golden_id))
    assert registry.golden(x.record_id) == a.golden_id
    assert registry.record(x.record_id).human_adjudicated
    assert registry.record(a.record_id).human_adjudicated  # the golden record was confirmed
    assert registry.latest_link(x.record_id).kind is LinkKind.MANUAL
    assert {c.id for c in outcome.changes.records} == {x.record_id, a.record_id}
    resource = registry.resource(x.record_id)
    assert codes.coding(codes.HUMAN_ADJUDICATION_TAG) in resource["meta"]["tag"]
    with transaction(registry.context.sessions, write=False) as session:
        emptied = session.get(GoldenRecord, x.golden_id)
        assert emptied is not None and not emptied.active and emptied.replaced_by == a.golden_id

    # Updates of either record: automatic matching would split them; the join stays.
    registry.submit("dhis2", patient("dhis2", "9", "John", "Okello", **{**JOHN, "phone": "07"}))
    registry.submit("openmrs", patient("openmrs", "1", *AISHA, phone="0772000000"))
    assert registry.golden(x.record_id) == registry.golden(a.record_id) == a.golden_id
    assert registry.latest_link(x.record_id).kind is LinkKind.MANUAL
    assert registry.open_issues() == []


def test_join_refuses_broken_partners_retired_and_unknown_targets(registry: Registry) -> None:
    a = registry.submit("openmrs", patient("openmrs", "1", *AISHA))
    b = registry.submit("dhis2", patient("dhis2", "2", *AISHA))
    broke, _ = registry.act(lambda e: links.break_record(e, b.record_id))
    cases: list[tuple[Callable[[LinkEditor], ActionOutcome], int]] = [
        (lambda e: links.join(e, b.record_id, a.golden_id), 409),  # broken from a
        (lambda e: links.join(e, b.record_id, None, a.record_id), 409),
        (lambda e: links.join(e, b.record_id, "no-such-golden"), 404),
        (lambda e: links.join(e, "no-such-record", a.golden_id), 404),
        (lambda e: links.join(e, b.record_id, None), 400),
        (lambda e: links.join(e, b.record_id, broke.golden_id), 409),  # already there
    ]
    for action, status in cases:
        with pytest.raises(LinkError) as refused:
            registry.act(action)
        assert refused.value.status == status, refused.value.message
    registry.act(lambda e: links.unbreak(e, b.record_id))
    with pytest.raises(LinkError) as retired:
        registry.act(lambda e: links.join(e, a.record_id, broke.golden_id))
    assert retired.value.status == 409 and "retired" in retired.value.message


# ----------------------------------------------------------------------------- conflicts


def _conflict(registry: Registry) -> tuple[SubmitResult, SubmitResult, MatchIssue]:
    """x joined by hand to John's golden record, then updated to match Aisha: a conflict."""
    a = registry.submit("openmrs", patient("openmrs", "1", *AISHA))
    j = registry.submit("lims", patient("lims", "5", "John", "Okello", **JOHN))
    x = registry.submit("dhis2", patient("dhis2", "9", "Peter", "Mukasa", **PETER))
    registry.act(lambda e: links.join(e, x.record_id, j.golden_id))
    updated = registry.submit("dhis2", patient("dhis2", "9", *AISHA))
    assert updated.golden_id == j.golden_id  # the person's decision stays ...
    assert updated.status is MatchStatus.CONFLICT  # ... and the disagreement is queued
    (issue,) = registry.open_issues(IssueKind.CONFLICT)
    assert (issue.record_id, issue.other_record_id) == (x.record_id, a.record_id)
    assert registry.open_issues(IssueKind.POTENTIAL) == []
    return a, x, issue


def test_a_conflict_arises_and_moving_the_record_resolves_it(registry: Registry) -> None:
    a, x, issue = _conflict(registry)
    with transaction(registry.context.sessions, write=False) as session:
        counts = review.queue_counts(session)
        page = review.issue_queue(session, "conflict", 0, 10)
        assert review.issue_queue(session, "potential", 0, 10).total == 0
    assert counts.conflict == 1 and counts.potential == 0
    assert [i.id for i in page.items] == [issue.id]

    outcome, _ = registry.act(lambda e: links.resolve_issue(e, issue.id, Resolution.MOVE))
    assert registry.golden(x.record_id) == a.golden_id
    assert registry.open_issues() == []
    assert outcome.detail["resolution"] == "move"
    assert registry.record(x.record_id).match_status is MatchStatus.AUTO
    # Updated again, it stays (agreeing now) and nothing new is queued.
    registry.submit("dhis2", patient("dhis2", "9", *AISHA, phone="0772410299"))
    assert registry.golden(x.record_id) == a.golden_id
    assert registry.open_issues() == []
    with pytest.raises(LinkError) as again:
        registry.act(lambda e: links.resolve_issue(e, issue.id, Resolution.KEEP))
    assert again.value.status == 409


@pytest.mark.parametrize("resolution", [Resolution.KEEP, Resolution.NEW, Resolution.NOT_A_MATCH])
def test_other_resolutions_take_the_item_out_of_the_queue(
    registry: Registry, resolution: Resolution
) -> None:
    a, x, issue = _conflict(registry)
    before = registry.golden(x.record_id)
    outcome, event_id = registry.act(lambda e: links.resolve_issue(e, issue.id, resolution))
    assert registry.open_issues() == []
    after = registry.golden(x.record_id)
    if resolution is Resolution.NEW:
        assert after not in (before, a.golden_id)
    else:
        assert after == before
    if resolution is Resolution.NOT_A_MATCH:
        assert registry.broken_pairs() == {_pair(a.record_id, x.record_id)}
    # Revert puts the item back in its queue and the record where it was.
    registry.act(lambda e: links.revert_event(e, event_id))
    assert [i.id for i in registry.open_issues(IssueKind.CONFLICT)] == [issue.id]
    assert registry.golden(x.record_id) == before
    assert registry.broken_pairs() == set()
    assert registry.record(x.record_id).match_status is MatchStatus.CONFLICT
    del outcome


def test_a_kept_potential_match_is_not_undone_by_matching(registry: Registry) -> None:
    a = registry.submit("openmrs", patient("openmrs", "1", *AISHA))
    g = registry.submit("lims", patient("lims", "4", "Grace", "Nakato", phone=None))
    assert g.status is MatchStatus.POTENTIAL and g.golden_id != a.golden_id
    with transaction(registry.context.sessions, write=False) as session:
        counts = review.queue_counts(session)
        (item,) = review.issue_queue(session, "potential", 0, 10).items
        assert review.issue_queue(session, "conflict", 0, 10).items == []
        assert review.auto_queue(session, 0, 10).items == []
    assert (counts.potential, counts.conflict, counts.auto) == (1, 0, 0)
    assert (item.record.id, item.other.id) == (g.record_id, a.record_id)

    registry.act(lambda e: links.resolve_issue(e, item.id, Resolution.KEEP))
    assert registry.open_issues() == []
    assert registry.record(g.record_id).human_adjudicated
    # Updated to look exactly like Aisha: the reviewer said "apart", so it is a conflict.
    again = registry.submit("lims", patient("lims", "4", *AISHA))
    assert again.golden_id == g.golden_id and again.status is MatchStatus.CONFLICT
    assert [i.other_record_id for i in registry.open_issues(IssueKind.CONFLICT)] == [a.record_id]


def test_resolve_checks_its_arguments(registry: Registry) -> None:
    _, _, issue = _conflict(registry)
    cases: list[tuple[Callable[[LinkEditor], ActionOutcome], int]] = [
        (lambda e: links.resolve_issue(e, 999, Resolution.KEEP), 404),
        (lambda e: links.resolve_issue(e, issue.id, Resolution.KEEP, golden_id="g"), 400),
        (lambda e: links.resolve_issue(e, issue.id, Resolution.KEEP, record_id="zz"), 400),
        (lambda e: links.resolve_issue(e, issue.id, Resolution.MOVE, golden_id="nope"), 404),
    ]
    for action, status in cases:
        with pytest.raises(LinkError) as refused:
            registry.act(action)
        assert refused.value.status == status, refused.value.message
    assert len(registry.open_issues()) == 1


# ----------------------------------------------------------------------------- reading


def test_record_view_explains_candidates(registry: Registry) -> None:
    a = registry.submit("openmrs", patient("openmrs", "1", *AISHA))
    b = registry.submit("dhis2", patient("dhis2", "2", "Aisha", "Nakatto"))
    registry.submit("lims", patient("lims", "3", "John", "Okello", **JOHN))
    with transaction(registry.context.sessions, write=False) as session:
        view = review.record_view(session, registry.context, b.record_id)
        assert review.record_view(session, registry.context, "nope") is None
    assert view is not None
    assert view.golden is not None and view.golden.id == a.golden_id
    assert [r.id for r in view.linked] == [a.record_id]
    (candidate,) = view.candidates
    assert candidate.record.id == a.record_id and candidate.same_golden
    assert candidate.decision == "auto" and candidate.role == "auto"
    fields = {f.field for f in candidate.explanation[0].fields}
    assert {"given", "family", "birthDate"} <= fields
    assert view.links[0].kind is LinkKind.AUTO


def test_dry_run_stores_nothing(registry: Registry) -> None:
    a = registry.submit("openmrs", patient("openmrs", "1", *AISHA))
    with transaction(registry.context.sessions, write=False) as session:
        new = review.dry_run(session, registry.context, patient("lims", "7", *AISHA))
        update = review.dry_run(session, registry.context, patient("openmrs", "1", *AISHA))
        stranger = review.dry_run(
            session, registry.context, patient("lims", "8", "John", "Okello", **JOHN)
        )
        count = len(session.scalars(select(SourceRecord.id)).all())
    assert new.action == "create" and new.status is MatchStatus.AUTO
    assert new.golden_id == a.golden_id and not new.new_golden
    assert new.candidates[0].record.id == a.record_id and new.candidates[0].explanation
    assert update.action == "update" and update.record_id == a.record_id
    assert update.golden_id == a.golden_id  # alone in its golden record: keeps it
    assert stranger.new_golden and stranger.status is MatchStatus.NONE
    assert "new golden record" in stranger.reason
    assert count == 1


def test_keep_golden_turns_disagreement_into_conflicts() -> None:
    from clientregistry.matching.classify import Candidate, Classification
    from clientregistry.matching.scoring import PairScore

    def candidate(record: str, golden: str, decision: Any, strength: float) -> Candidate:
        return Candidate(record, golden, PairScore(100 + strength, decision, 0), strength)

    auto = candidate("r1", "g1", "auto", 3.0)
    mine = candidate("r2", "g2", "potential", -1.0)
    maybe = candidate("r3", "g3", "potential", -0.5)
    kept = keep_golden(Classification("g1", auto=[auto], potential=[mine, maybe]), "g2")
    assert kept.golden_id == "g2"
    assert kept.auto == [mine] and kept.conflicts == [auto] and kept.potential == [maybe]
