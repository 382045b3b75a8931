"""The dashboard's figures (registry.statistics), computed in the database on both."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from desk import RITA
from sqlalchemy import text
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


def test_old_figures_are_answered_while_new_ones_are_computed(
    desk: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from clientregistry.registry import statistics as module

    first = statistics(desk.context, RITA, 30)
    assert first.records == 0
    desk.submit("openmrs", patient("openmrs", "1", *AISHA))
    assert statistics(desk.context, RITA, 30) is first  # within CACHE_SECONDS
    monkeypatch.setattr(module, "CACHE_SECONDS", 0.0)
    assert statistics(desk.context, RITA, 30) is first  # stale: answered, and refreshed
    deadline = time.monotonic() + 10
    while (fresh := statistics(desk.context, RITA, 30)).records == 0:
        assert time.monotonic() < deadline, "the figures were not computed again"
        time.sleep(0.05)
    assert fresh.records == 1 and fresh.generated_at > first.generated_at


def test_a_new_period_reads_the_new_events_only(
    desk: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trail's counts are kept and extended by the events chained since (a period not
    asked for yet is a filter of them); the registry's figures are the kept ones until
    they are refreshed."""
    from clientregistry.registry import statistics as module

    month = statistics(desk.context, RITA, 30)
    assert month.records == 0 and month.submissions == []
    desk.submit("openmrs", patient("openmrs", "1", *AISHA))
    desk.submit("dhis2", patient("dhis2", "2", *AISHA))
    read: list[Any] = []
    counting = module.TrailCounts._count

    def count(self: Any, session: Any, *new: Any) -> None:
        read.append([str(c) for c in new])
        counting(self, session, *new)

    monkeypatch.setattr(module.TrailCounts, "_count", count)
    week = statistics(desk.context, RITA, 7)
    today = datetime.now(UTC).date()
    assert {(d.series, d.count) for d in week.submissions} == {("openmrs", 1), ("dhis2", 1)}
    assert {d.day for d in week.submissions} == {today}
    assert week.records == 0  # the registry's figures: kept, refreshed in the background
    assert len(read) == 1 and any(">" in c for c in read[0])  # only past the last link read
    kept = module._kept(desk.context)
    with desk.context.engine.connect() as connection:
        last = connection.execute(text("SELECT max(chain_seq) FROM audit_event")).scalar()
    assert kept.trail.seq == last - 1  # all but the dashboard's own read, audited after
    fresh = compute(desk.context, 7)
    assert [d.model_dump() for d in fresh.submissions] == [d.model_dump() for d in week.submissions]
    assert [d.model_dump() for d in fresh.outcomes] == [d.model_dump() for d in week.outcomes]


def test_a_web_ui_page_starts_the_first_figures(desk: Registry) -> None:
    from clientregistry.registry import statistics as module

    module.warm(desk.context)
    deadline = time.monotonic() + 10
    while module.DEFAULT_DAYS not in module._kept(desk.context).periods:
        assert time.monotonic() < deadline, "the first figures were not computed"
        time.sleep(0.05)
    assert module._kept(desk.context).figures is not None
    kept = statistics(desk.context, RITA, module.DEFAULT_DAYS)
    assert kept is module._kept(desk.context).periods[module.DEFAULT_DAYS][1]  # not computed


def test_the_new_events_are_read_by_their_place_in_the_chain(desk: Registry) -> None:
    """The trail's counts read the new events' range of ``chain_seq`` (an index), never the
    event type's index (which would read every submission ever made, at every request)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from clientregistry.registry.statistics import TrailCounts

    desk.submit("openmrs", patient("openmrs", "1", *AISHA))
    plans: list[str] = []

    def explain(connection: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "chain_seq >" not in statement or "GROUP BY" not in statement:
            return
        raw = cursor.connection
        if connection.dialect.name == "sqlite":
            rows = raw.execute("EXPLAIN QUERY PLAN " + statement, parameters).fetchall()
        else:
            explain_cursor = raw.cursor()
            explain_cursor.execute("SET LOCAL enable_seqscan = off")
            explain_cursor.execute("EXPLAIN " + statement, parameters)
            rows = explain_cursor.fetchall()
        plans.append(" | ".join(str(row[-1]) for row in rows))

    event.listen(Engine, "before_cursor_execute", explain)
    try:
        with desk.context.sessions() as session:
            TrailCounts().catch_up(session)
    finally:
        event.remove(Engine, "before_cursor_execute", explain)
    assert len(plans) == 3
    for plan in plans:
        assert "ix_audit_event_chain_seq" in plan, plan
        assert "ix_audit_event_event_type" not in plan, plan


def test_periods_share_the_registrys_figures(
    desk: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two periods cost one computation of the registry-wide figures: asked for the first
    time, and refreshed when stale while those figures are still fresh."""
    from clientregistry.registry import statistics as module

    computed: list[datetime] = []
    real = module._registry_figures

    def counting(*args: Any) -> Any:
        computed.append(datetime.now(UTC))
        return real(*args)

    monkeypatch.setattr(module, "_registry_figures", counting)
    statistics(desk.context, RITA, 30)
    statistics(desk.context, RITA, 7)
    assert len(computed) == 1
    kept = module._kept(desk.context)
    for days, (_, answer) in list(kept.periods.items()):
        kept.periods[days] = (time.monotonic() - 1000, answer)  # stale answers
    statistics(desk.context, RITA, 30)
    statistics(desk.context, RITA, 7)
    deadline = time.monotonic() + 10
    while any(t < time.monotonic() - 100 for t, _ in kept.periods.values()):
        assert time.monotonic() < deadline, "the stale periods were not refreshed"
        time.sleep(0.05)
    assert len(computed) == 1  # both refreshed from the figures still fresh
