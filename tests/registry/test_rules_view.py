"""The rules in force, readably, and the pair tester (registry.rules_view)."""

from __future__ import annotations

import pytest
from desk import RITA
from test_links import AISHA, JOHN, Registry, patient

from clientregistry.registry.actor import Refused
from clientregistry.registry.rules_view import compare_pair, rules_view


def test_the_default_rules_read_as_they_are(desk: Registry) -> None:
    view = rules_view(desk.context, RITA)
    (rule_set,) = view.rule_sets
    assert rule_set.matching_type == "probabilistic"
    assert rule_set.potential_threshold < rule_set.auto_threshold <= rule_set.max_score
    fields = {f.name: f for f in rule_set.fields}
    given = fields["given"]
    assert [level.algorithm for level in given.levels][:2] == ["exact", "jaro-winkler-similarity"]
    assert given.levels[0].term_frequency and given.levels[0].weight > 0
    assert given.else_weight is not None and given.else_weight < 0
    assert fields["phone"].group == fields["family"].group == "household"
    assert fields["postalCode"].group == "location"
    postal = fields["postalCode"].levels[0]
    assert postal.term_frequency and postal.term_frequency_minimum_u == postal.u
    assert given.levels[0].term_frequency_minimum_u is None
    assert view.blocking_keys and view.document["rules"][0]["name"] == rule_set.name
    assert [g.fields for g in view.blocking_groups][:3] == [
        ["identifier"],
        ["phone"],
        ["given", "family"],
    ]
    assert {g.rule_set for g in view.blocking_groups} == {0}


def test_the_pair_tester_explains_records_and_pasted_patients(desk: Registry) -> None:
    a = desk.submit("openmrs", patient("openmrs", "1", *AISHA))
    pasted = patient("dhis2", "2", "Aysha", "Nakato")
    result = compare_pair(desk.context, RITA, a.record_id, pasted)
    assert result.left.record_id == a.record_id and result.right.record_id is None
    assert result.decision == "auto" and result.rule_set == "default"
    fields = {f.field: f for f in result.explanation[0].fields}
    assert fields["given"].agrees and fields["given"].left == "aisha"
    john = patient("lims", "3", "John", "Okello", **JOHN)
    other = compare_pair(desk.context, RITA, pasted, john)
    assert other.decision == "none" and other.score < result.score
    with pytest.raises(Refused) as missing:
        compare_pair(desk.context, RITA, "no-such-record", pasted)
    assert missing.value.status == 404
    with pytest.raises(Refused) as bad:
        compare_pair(desk.context, RITA, pasted, {"resourceType": "Observation"})
    assert (bad.value.status, bad.value.code) == (400, "bad-patient")
