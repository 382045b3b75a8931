"""What the lookups share (:mod:`clientregistry.registry.lookup`): the audit of a lookup; and
the people the lookup tests read (:mod:`lookup_registry`) are linked as designed.
"""

from __future__ import annotations

from lookup_registry import Registry
from sqlalchemy import select

from clientregistry.registry.lookup import Caller, record_lookup
from clientregistry.store.db import transaction
from clientregistry.store.enums import AuditAction
from clientregistry.store.models import AuditEvent


def test_the_fixture_links_as_designed(registry: Registry) -> None:
    assert registry.golden("amara-openmrs") == registry.golden("amara-dhis2")
    assert registry.golden("neema-a") != registry.golden("neema-b")
    goldens = {r.golden_id for r in registry.ids.values()}
    assert len(goldens) == len(registry.ids) - 1


def test_record_lookup_writes_an_audit_event(registry: Registry) -> None:
    record_lookup(
        registry.context,
        Caller("openmrs", "127.0.0.1"),
        action=AuditAction.EXECUTE,
        interaction="operation",
        iti="ITI-83",
        entity="Patient/abc",
        detail={"query": "sourceIdentifier=a|b"},
    )
    with transaction(registry.context.sessions, write=False) as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.entity == "Patient/abc")).one()
    assert event.action == AuditAction.EXECUTE
    assert event.event_type == "operation"
    assert event.detail == {"transaction": "ITI-83", "query": "sourceIdentifier=a|b"}
    assert event.resource is not None
    assert event.resource["subtype"][0]["code"] == "operation"
