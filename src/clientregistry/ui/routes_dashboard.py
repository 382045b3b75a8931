"""The dashboard (``/ui/``): records and persons per source system, submissions and their
outcomes per day, match scores against the thresholds, the queues' sizes and ages, and
reviewers' decisions per day — as charts drawn on the server (:mod:`clientregistry.ui.charts`)
with their numbers in tables beside them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response
from markupsafe import Markup

from clientregistry.registry import statistics
from clientregistry.registry.statistics import AGE_BUCKETS, OUTCOMES, DayCount, Statistics
from clientregistry.ui import charts
from clientregistry.ui.charts import Series
from clientregistry.ui.i18n import Texts
from clientregistry.ui.pages import SignedIn

router = APIRouter(prefix="/ui")
PERIODS = (7, 30, 90, 365)
AGES = (*(name for _, name in AGE_BUCKETS), "over-30-days")


@dataclass(frozen=True, slots=True)
class Chart:
    """A chart and its numbers as a table (header, then one row per label)."""

    key: str
    title: str
    svg: Markup
    header: list[str]
    rows: list[tuple[str, list[str]]]


def _days(figures: Statistics) -> list[date]:
    return [figures.since + timedelta(days=i) for i in range(figures.days)]


def _per_day(
    days: Sequence[date], counts: Sequence[DayCount], names: Sequence[str]
) -> list[list[float]]:
    index = {(c.day, c.series): c.count for c in counts}
    return [[float(index.get((d, name), 0)) for d in days] for name in names]


def _table(
    labels: Sequence[str], series: Sequence[Series], texts: Texts
) -> list[tuple[str, list[str]]]:
    rows = []
    for i, label in enumerate(labels):
        values = [s.values[i] for s in series]
        if any(values):
            rows.append((label, [texts.number(v) for v in values]))
    return rows


def _time_chart(
    key: str,
    title: str,
    description: str,
    figures: Statistics,
    counts: Sequence[DayCount],
    names: Sequence[str],
    label: dict[str, str],
    texts: Texts,
    *,
    as_lines: bool = False,
) -> Chart | None:
    if not names:
        return None
    days = _days(figures)
    labels = [texts.short_day(d) for d in days]
    series = [
        Series(label.get(name, name), values)
        for name, values in zip(names, _per_day(days, counts, names), strict=True)
    ]
    draw = charts.lines if as_lines else charts.columns
    svg = draw(title, description, labels, series, texts.number)
    return Chart(key, title, svg, [s.name for s in series], _table(labels, series, texts))


def dashboard_charts(figures: Statistics, texts: Texts) -> list[Chart]:
    """Every chart of the dashboard, its texts in ``texts``' language."""
    _ = texts.gettext
    number = texts.number
    out: list[Chart | None] = []
    systems = [s.system for s in figures.per_system]
    by_system = [
        Series(_("Source records"), [float(s.records) for s in figures.per_system]),
        Series(_("Persons"), [float(s.persons) for s in figures.per_system]),
    ]
    title = _("Records and persons per source system")
    out.append(
        Chart(
            "systems",
            title,
            charts.bars(
                title,
                _(
                    "Horizontal bars: for each source system, its records and the persons "
                    "holding them."
                ),
                systems,
                by_system,
                number,
            ),
            [s.name for s in by_system],
            _table(systems, by_system, texts),
        )
    )
    h = figures.scores
    title = _("Match scores")
    scores = [
        Series(_("Automatic links"), [float(b.auto) for b in h.bins]),
        Series(_("Review items"), [float(b.review) for b in h.bins]),
    ]
    edges = [b.start for b in h.bins] + [h.bins[-1].end]
    out.append(
        Chart(
            "scores",
            title,
            charts.histogram(
                title,
                _(
                    "Histogram of the scores of automatic links and of potential matches and "
                    "conflicts, with the potential and automatic thresholds of rule set "
                    "%(name)s.",
                    name=h.rule_set,
                ),
                edges,
                scores,
                [(_("potential"), h.potential_threshold), (_("auto"), h.auto_threshold)],
                number,
            ),
            [s.name for s in scores],
            _table([f"{number(b.start, 1)} – {number(b.end, 1)}" for b in h.bins], scores, texts),
        )
    )
    submitters = sorted({c.series for c in figures.submissions})
    out.append(
        _time_chart(
            "submissions",
            _("Submissions per day and source system"),
            _("Lines: for each day, the Patients each source system submitted."),
            figures,
            figures.submissions,
            submitters,
            {},
            texts,
            as_lines=True,
        )
    )
    outcome_names = {
        "auto": _("linked automatically"),
        "potential": _("potential match"),
        "conflict": _("conflict"),
        "none": _("new person"),
    }
    present = [o for o in OUTCOMES if any(c.series == o for c in figures.outcomes)]
    out.append(
        _time_chart(
            "outcomes",
            _("Outcomes of the submissions per day"),
            _(
                "Stacked columns: for each day, submissions linked automatically, sent for "
                "review as potential matches or conflicts, or new persons."
            ),
            figures,
            figures.outcomes,
            present,
            outcome_names,
            texts,
        )
    )
    decision_names = {
        "break": _("break"),
        "unbreak": _("break reverted"),
        "join": _("join"),
        "resolve": _("review item decided"),
        "confirm": _("automatic link confirmed"),
        "revert": _("revert"),
    }
    out.append(
        _time_chart(
            "decisions",
            _("Reviewers' decisions per day"),
            _("Stacked columns: for each day, the reviewers' actions by kind."),
            figures,
            figures.decisions,
            sorted({c.series for c in figures.decisions}),
            decision_names,
            texts,
        )
    )
    age_names = {
        "under-1-day": _("under a day"),
        "1-7-days": _("1 to 7 days"),
        "7-30-days": _("7 to 30 days"),
        "over-30-days": _("over 30 days"),
    }
    queue_names = {"potential": _("Potential matches"), "conflict": _("Conflicts")}
    queues = [queue_names.get(q.queue, q.queue) for q in figures.queues]
    ages = [Series(age_names[a], [float(q.ages.get(a, 0)) for q in figures.queues]) for a in AGES]
    title = _("Queue ages")
    out.append(
        Chart(
            "ages",
            title,
            charts.bars(
                title,
                _(
                    "Horizontal bars: for each review queue, its open items by how long they "
                    "have waited."
                ),
                queues,
                ages,
                number,
            ),
            [s.name for s in ages],
            [(q, [number(s.values[i]) for s in ages]) for i, q in enumerate(queues)],
        )
    )
    return [c for c in out if c is not None]


@router.get("/")
def dashboard(page: SignedIn, days: Annotated[str | None, Query(max_length=4)] = None) -> Response:
    period = int(days) if days and days.isdigit() and int(days) in PERIODS else 30
    figures = page.call(lambda: statistics.statistics(page.context, page.actor, period))
    return page.render(
        "dashboard.html",
        figures=figures,
        charts_=dashboard_charts(figures, page.texts),
        periods=PERIODS,
        period=period,
    )
