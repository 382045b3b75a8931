"""A person's page (registry.person_view): records side by side with differences marked,
identifiers per system, versions, and the history of links with who, what, when and why."""

from __future__ import annotations

import pytest
from desk import RITA
from test_links import AISHA, Registry, patient

from clientregistry.registry import reviewing
from clientregistry.registry.actor import Refused
from clientregistry.registry.person_view import person_view, record_version


def test_records_side_by_side_with_their_differences(desk: Registry) -> None:
    a = desk.submit("openmrs", patient("openmrs", "1", *AISHA, national_id="NIN-1"))
    b = desk.submit("dhis2", patient("dhis2", "2", "Aysha", "Nakato"))
    view = person_view(desk.context, RITA, a.golden_id)
    assert [m.record.id for m in view.members] == [b.record_id, a.record_id]  # by system
    rows = {row.field: row for row in view.compared}
    assert rows["given"].values == ["Aysha", "Aisha"] and rows["given"].differs
    assert rows["family"].values == ["Nakato", "Nakato"] and not rows["family"].differs
    assert rows["identifiers"].values == [None, "http://example.org/national-id|NIN-1"]
    assert not rows["identifiers"].differs  # one record has none: nothing disagrees
    assert view.identifiers_by_system["http://example.org/national-id"] == ["NIN-1"]
    own = [i for m in view.members for i in m.identifiers if i.own]
    assert {i.value for i in own} == {"1", "2"}


def test_versions_and_link_history(desk: Registry) -> None:
    a = desk.submit("openmrs", patient("openmrs", "1", *AISHA))
    b = desk.submit("dhis2", patient("dhis2", "2", *AISHA))
    desk.submit("dhis2", patient("dhis2", "2", *AISHA, phone="0772410299"))
    done = reviewing.break_record(desk.context, RITA, b.record_id, reason="two people")
    view = person_view(desk.context, RITA, a.golden_id)
    (member,) = view.members
    assert member.record.id == a.record_id
    history = view.history
    assert [h.event_type for h in history] == ["break", "update", "create", "create"]
    brk = history[0]
    assert (brk.agent, brk.reason, brk.record_id) == ("rita", "two people", b.record_id)
    assert brk.golden_before == a.golden_id and brk.revertible
    assert brk.event_id == done.audit_event_id
    assert history[1].match == "auto" and history[1].agent == "dhis2"
    # The broken-out record's own page: two versions, the second changed the telecom.
    other = person_view(desk.context, RITA, done.golden_id or "")
    versions = other.members[0].versions
    assert [v.version for v in versions] == [2, 1] and versions[0].changed == ["telecom"]
    assert other.members[0].broken_with == [a.record_id]
    first = record_version(desk.context, RITA, b.record_id, 1)
    assert first["telecom"][0]["value"] == "0772410233"


def test_unknown_person_or_version(desk: Registry) -> None:
    with pytest.raises(Refused) as missing:
        person_view(desk.context, RITA, "no-such-golden")
    assert missing.value.status == 404
    with pytest.raises(Refused):
        record_version(desk.context, RITA, "no-such-record", 1)
