"""The dashboard's figures (registry.statistics), computed in the database on both."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from desk import RITA
from test_links import AISHA, JOHN, Registry, patient

from clientregistry.registry import reviewing
from clientregistry.registry.actor import Refused
from clientregistry.registry.statistics import compute, statistics


def test_counts_series_histogram_queues_and_decisions(desk: Registry) -> None:
    a = desk.submit("openmrs", patient("openmrs", "1", *AISHA))
    b = desk.submit("dhis2", patient("dhis2", "2", *AISHA))
    desk.submit("lims", patient("lims", "4", "Grace", "Nakato", phone=None))  # potential
    desk.submit("lims", patient("lims", "5", "John", "Okello", **JOHN))  # a new person
    reviewing.break_record(desk.context, RITA, b.record_id)
    figures = compute(desk.context, 7)
    today = datetime.now(UTC).date()
    assert figures.records == 4 and figures.persons == 4
    per_system = {s.system: (s.records, s.persons) for s in figures.per_system}
    assert per_system == {"openmrs": (1, 1), "dhis2": (1, 1), "lims": (2, 2)}
    submissions = {(d.day, d.series): d.count for d in figures.submissions}
    assert submissions == {(today, "dhis2"): 1, (today, "lims"): 2, (today, "openmrs"): 1}
    outcomes = {d.series: d.count for d in figures.outcomes if d.day == today}
    assert outcomes == {"none": 2, "auto": 1, "potential": 1}
    assert [(d.series, d.count) for d in figures.decisions] == [("break", 1)]
    queues = {q.queue: q for q in figures.queues}
    # Grace is a potential match of both of Aisha's records: two items.
    assert queues["potential"].count == 2 and queues["potential"].ages["under-1-day"] == 2
    assert queues["conflict"].count == 0 and queues["conflict"].oldest is None
    histogram = figures.scores
    assert sum(b.auto for b in histogram.bins) == 1  # b's automatic link
    assert sum(b.review for b in histogram.bins) == 2  # Grace's potential matches
    low, high = histogram.bins[0].start, histogram.bins[-1].end
    assert low < histogram.potential_threshold < histogram.auto_threshold < high
    assert a.golden_id


def test_days_are_bounded(desk: Registry) -> None:
    with pytest.raises(Refused):
        statistics(desk.context, RITA, 0)
    assert statistics(desk.context, RITA, 366).days == 366
