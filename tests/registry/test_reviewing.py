"""The reviewer's use cases (registry.reviewing), the accounts' (registry.accounts) and
the audit trail's (registry.audit_trail), as the admin API and the web UI call them: audited
reads, reasons kept with actions, confirming an automatic link, a review item two reviewers
decide at once, queue ages, audit filters, one's own password and language."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from desk import DAVE, PASSWORD, RITA
from sqlalchemy import select
from test_links import AISHA, JOHN, Registry, patient

from clientregistry.registry import accounts, audit_trail, links, reviewing
from clientregistry.registry.accounts import UserChange
from clientregistry.registry.actor import Actor, Refused
from clientregistry.registry.audit_trail import AuditQuery
from clientregistry.registry.context import RegistryContext
from clientregistry.registry.links import LinkEditor, Resolution
from clientregistry.security import passwords, users
from clientregistry.store.db import transaction
from clientregistry.store.enums import IssueKind, Role
from clientregistry.store.models import AuditEvent


def _events(context: RegistryContext, event_type: str) -> list[AuditEvent]:
    with transaction(context.sessions, write=False) as session:
        query = select(AuditEvent).where(AuditEvent.event_type == event_type)
        return list(session.scalars(query.order_by(AuditEvent.id)))


def _potential(desk: Registry) -> tuple[Any, Any, int]:
    """Aisha, then Grace Nakato of the same birth date and no phone: a potential match."""
    a = desk.submit("openmrs", patient("openmrs", "1", *AISHA))
    b = desk.submit("lims", patient("lims", "4", "Grace", "Nakato", phone=None))
    (issue,) = desk.open_issues(IssueKind.POTENTIAL)
    return a, b, issue.id


def test_reads_are_audited_as_the_actor(desk: Registry) -> None:
    context = desk.context
    a, _, issue_id = _potential(desk)
    counts = reviewing.queue_counts(context, RITA)
    assert counts.potential == 1 and counts.oldest_potential is not None
    assert counts.oldest_potential.tzinfo is not None
    assert reviewing.issue(context, RITA, issue_id).id == issue_id
    assert reviewing.record(context, RITA, a.record_id).record.id == a.record_id
    reads = _events(context, "queue-read") + _events(context, "review-read")
    assert {(e.agent, e.source_address) for e in reads} == {("rita", "127.0.0.9")}
    with pytest.raises(Refused) as missing:
        reviewing.record(context, RITA, "no-such-record")
    assert (missing.value.status, missing.value.code) == (404, "not-found")


def test_a_reason_is_kept_with_the_action(desk: Registry) -> None:
    a = desk.submit("openmrs", patient("openmrs", "1", *AISHA))
    b = desk.submit("dhis2", patient("dhis2", "2", *AISHA))
    assert a.golden_id == b.golden_id
    done = reviewing.break_record(desk.context, RITA, b.record_id, reason="  twins  ")
    assert done.detail["reason"] == "twins"
    (event,) = _events(desk.context, "break")
    assert event.detail is not None and event.detail["reason"] == "twins"
    assert event.agent == "rita" and event.entity == f"Patient/{b.record_id}"


def test_confirming_an_automatic_link_takes_it_off_the_queue(desk: Registry) -> None:
    context = desk.context
    a = desk.submit("openmrs", patient("openmrs", "1", *AISHA))
    b = desk.submit("dhis2", patient("dhis2", "2", *AISHA))
    assert reviewing.auto_queue(context, RITA, 0, 10).total == 1
    done = reviewing.confirm(context, RITA, b.record_id)
    assert done.action == "confirm"
    assert reviewing.auto_queue(context, RITA, 0, 10).total == 0
    assert desk.record(a.record_id).human_adjudicated
    assert desk.record(b.record_id).human_adjudicated
    with pytest.raises(Refused) as again:
        reviewing.confirm(context, DAVE, b.record_id)
    assert (again.value.status, again.value.code) == (409, "already-confirmed")
    # A confirmation can be undone like any link action.
    reviewing.revert(context, RITA, done.audit_event_id)
    assert reviewing.auto_queue(context, RITA, 0, 10).total == 1
    assert not desk.record(a.record_id).human_adjudicated


def test_the_automatic_links_queue_shows_each_records_link_and_person(desk: Registry) -> None:
    """The page's links and persons' sizes are read for the whole page at once: each item
    still has its own record's newest link and its own person's size."""
    context = desk.context
    desk.submit("openmrs", patient("openmrs", "1", *AISHA))
    b = desk.submit("dhis2", patient("dhis2", "2", *AISHA))
    c = desk.submit("lims", patient("lims", "3", *AISHA))
    desk.submit("openmrs", patient("openmrs", "4", "John", "Okello", **JOHN))
    e = desk.submit("dhis2", patient("dhis2", "5", "John", "Okello", **JOHN))
    page = reviewing.auto_queue(context, RITA, 0, 10)
    items = {item.record.id: item for item in page.items}
    assert set(items) == {b.record_id, c.record_id, e.record_id} and page.total == 3
    assert items[b.record_id].members == items[c.record_id].members == 3
    assert items[e.record_id].members == 2
    assert (
        items[b.record_id].golden_id == items[c.record_id].golden_id != items[e.record_id].golden_id
    )
    for item in page.items:
        assert item.score is not None and item.linked_at is not None and item.rule_set


def test_two_reviewers_cannot_both_decide_one_item(desk: Registry) -> None:
    """Rita's decision is under way (its locks held, not committed) when Dave decides the
    same item: Dave waits, then is told Rita decided it; one decision is recorded."""
    context = desk.context
    _, b, issue_id = _potential(desk)
    rita_holds = threading.Event()
    release = threading.Event()
    outcome: dict[str, Any] = {}

    def rita() -> None:
        with transaction(context.sessions) as session:
            editor = LinkEditor(session, context, "rita")
            result = links.resolve_issue(editor, issue_id, Resolution.KEEP)
            links.audit_outcome(session, result, agent="rita", source_address=None)
            rita_holds.set()
            release.wait(10)

    def dave() -> None:
        try:
            outcome["dave"] = reviewing.resolve(context, DAVE, issue_id, Resolution.NEW)
        except Refused as error:
            outcome["dave"] = error

    first = threading.Thread(target=rita)
    first.start()
    assert rita_holds.wait(10)
    second = threading.Thread(target=dave)
    second.start()
    second.join(0.5)  # Dave is waiting for Rita's locks (or SQLite's write lock)
    release.set()
    first.join(10)
    second.join(10)
    refused = outcome["dave"]
    assert isinstance(refused, Refused), refused
    assert (refused.status, refused.code) == (409, "already-resolved")
    assert refused.params["by"] == "rita"
    assert "rita" in refused.message
    assert [e.agent for e in _events(context, "resolve")] == ["rita"]
    assert desk.record(b.record_id).golden_id is not None


def test_audit_filters_by_outcome_and_person(desk: Registry) -> None:
    context = desk.context
    a = desk.submit("openmrs", patient("openmrs", "1", *AISHA))
    b = desk.submit("dhis2", patient("dhis2", "2", *AISHA))
    j = desk.submit("lims", patient("lims", "5", "John", "Okello", **JOHN))
    reviewing.break_record(context, RITA, b.record_id)
    with pytest.raises(Refused):
        accounts.change_own_password(context, RITA, "not my password", "a new password 22")
    auditor = Actor("otto", Role.AUDITOR)
    failed = audit_trail.audit_page(context, auditor, AuditQuery(outcome=4), 0, 50)
    assert [i.event_type for i in failed.items] == ["password-change"]
    person = audit_trail.audit_page(context, auditor, AuditQuery(person=a.golden_id), 0, 50)
    entities = {i.entity for i in person.items}
    assert f"Patient/{a.record_id}" in entities
    assert f"Patient/{j.record_id}" not in entities
    with pytest.raises(Refused) as naive:
        from datetime import datetime

        audit_trail.audit_page(context, auditor, AuditQuery(since=datetime(2020, 1, 1)), 0, 5)
    assert naive.value.status == 400


def test_own_password_and_language(desk: Registry) -> None:
    context = desk.context
    with pytest.raises(Refused) as short:
        accounts.change_own_password(context, RITA, PASSWORD, "short")
    assert short.value.code == "bad-password"
    accounts.change_own_password(context, RITA, PASSWORD, "a brand new password")
    with transaction(context.sessions, write=False) as session:
        rita = users.require_user(session, "rita")
        assert passwords.verify_password(rita.password_hash, "a brand new password")
    assert accounts.set_language(context, RITA, "fr").language == "fr"
    assert accounts.set_language(context, RITA, None).language is None
    with pytest.raises(Refused) as unknown:
        accounts.set_language(context, RITA, "xx")
    assert unknown.value.code == "unknown-language"
    with pytest.raises(Refused) as last:
        accounts.change_account(
            context, Actor("admin", Role.ADMIN), "admin", UserChange(role=Role.AUDITOR)
        )
    assert last.value.code == "last-admin"
