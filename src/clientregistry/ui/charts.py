"""The dashboard's charts as inline SVG, drawn on the server: no script, no network.

Colours are presentation attributes (``fill``), not ``style``, so a Content-Security-Policy
without ``unsafe-inline`` lets them through; the palette is Okabe and Ito's, told apart by
people with colour-blind vision, and each series also has a legend entry. Every chart is an
``img`` with a title and a description for screen readers; the page shows the numbers in a
table next to it as well. Texts arrive translated; every value is escaped.

Shapes: :func:`columns` (one column per day, series stacked), :func:`lines` (a line per
series over days), :func:`bars` (horizontal bars, grouped per label), :func:`histogram`
(score bins with the thresholds drawn as lines).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from markupsafe import Markup, escape

PALETTE: Final = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
"""Okabe–Ito, darkest first (the yellow is left out: too pale on white)."""
WIDTH: Final = 640
HEIGHT: Final = 240
LEFT: Final = 56
RIGHT: Final = 16
TOP: Final = 16
BOTTOM: Final = 48
TEXT: Final = "#1a1a1a"
GRID: Final = "#767676"
_ids = itertools.count(1)

Number = Callable[[float], str]


@dataclass(frozen=True, slots=True)
class Series:
    """One named series of values (one per x position)."""

    name: str
    values: Sequence[float]


def _frame(title: str, description: str, body: list[str], legend: Sequence[str]) -> Markup:
    n = next(_ids)
    items = []
    x = LEFT
    for i, name in enumerate(legend):
        colour = PALETTE[i % len(PALETTE)]
        items.append(
            f'<rect x="{x}" y="{HEIGHT - 14}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{x + 14}" y="{HEIGHT - 5}" font-size="13" fill="{TEXT}">'
            f"{escape(name)}</text>"
        )
        x += 26 + 8 * len(name)
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="chart-{n}-title chart-{n}-desc" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="chart-{n}-title">{escape(title)}</title>'
        f'<desc id="chart-{n}-desc">{escape(description)}</desc>'
        + "".join(body)
        + "".join(items)
        + "</svg>"
    )


def _scale(top: float) -> float:
    """A round upper bound for an axis whose largest value is ``top`` (at least 4: counts
    get whole-number ticks)."""
    if top <= 4:
        return 4.0
    magnitude = 10 ** (len(str(int(top))) - 1)
    for step in (1, 2, 5, 10):
        bound = step * magnitude
        if bound >= top:
            return float(bound)
    return float(10 * magnitude)


def _y_axis(top: float, number: Number) -> list[str]:
    plot = HEIGHT - TOP - BOTTOM
    out = []
    for i in range(5):
        value = top * i / 4
        y = TOP + plot - plot * i / 4
        out.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" '
            f'stroke="{GRID}" stroke-width="0.5" stroke-dasharray="2 3"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" font-size="13" text-anchor="end" '
            f'fill="{TEXT}">{escape(number(value))}</text>'
        )
    return out


def _x_labels(labels: Sequence[str], xs: Sequence[float], *, every: int | None = None) -> list[str]:
    """Labels under the x axis: about six of them (``every`` n-th)."""
    step = every or max(1, -(-len(labels) // 6))
    return [
        f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" font-size="13" text-anchor="middle" '
        f'fill="{TEXT}">{escape(label)}</text>'
        for i, (label, x) in enumerate(zip(labels, xs, strict=True))
        if i % step == 0 or i == len(labels) - 1
    ]


def _stack(
    series: Sequence[Series],
    i: int,
    x: float,
    width: float,
    top: float,
    number: Number,
    where: str,
) -> list[str]:
    """The rectangles of position ``i``, its series stacked from the axis up."""
    plot_h = HEIGHT - TOP - BOTTOM
    out = []
    base = 0.0
    for k, item in enumerate(series):
        value = item.values[i]
        if value <= 0:
            continue
        h = plot_h * value / top
        y = TOP + plot_h - plot_h * base / top - h
        out.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{h:.1f}" '
            f'fill="{PALETTE[k % len(PALETTE)]}"><title>{escape(item.name)}{escape(where)}: '
            f"{escape(number(value))}</title></rect>"
        )
        base += value
    return out


def columns(
    title: str,
    description: str,
    labels: Sequence[str],
    series: Sequence[Series],
    number: Number,
) -> Markup:
    """One column per label (a day), its series stacked."""
    plot_w = WIDTH - LEFT - RIGHT
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    top = _scale(max(totals, default=0))
    slot = plot_w / max(len(labels), 1)
    width = max(2.0, slot * 0.7)
    body = _y_axis(top, number)
    xs = []
    for i in range(len(labels)):
        x = LEFT + slot * i + (slot - width) / 2
        xs.append(x + width / 2)
        body += _stack(series, i, x, width, top, number, "")
    body += _x_labels(labels, xs)
    return _frame(title, description, body, [s.name for s in series])


def lines(
    title: str,
    description: str,
    labels: Sequence[str],
    series: Sequence[Series],
    number: Number,
) -> Markup:
    """A line per series over the labels (days), with a dot at each value."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = _scale(max((v for s in series for v in s.values), default=0))
    count = max(len(labels), 1)
    xs = [LEFT + plot_w * (i + 0.5) / count for i in range(len(labels))]
    body = _y_axis(top, number)
    for k, item in enumerate(series):
        colour = PALETTE[k % len(PALETTE)]
        points = [
            (x, TOP + plot_h - plot_h * v / top) for x, v in zip(xs, item.values, strict=True)
        ]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            body.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>'
            )
        for (x, y), value in zip(points, item.values, strict=True):
            body.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"><title>'
                f"{escape(item.name)}: {escape(number(value))}</title></circle>"
            )
    body += _x_labels(labels, xs)
    return _frame(title, description, body, [s.name for s in series])


def bars(
    title: str,
    description: str,
    labels: Sequence[str],
    series: Sequence[Series],
    number: Number,
) -> Markup:
    """Horizontal bars: a group per label, a bar per series."""
    plot_w = WIDTH - 160 - RIGHT - 60
    top = _scale(max((v for s in series for v in s.values), default=0))
    group = (HEIGHT - TOP - BOTTOM) / max(len(labels), 1)
    bar = max(4.0, min(22.0, group * 0.8 / max(len(series), 1)))
    body = []
    for i, label in enumerate(labels):
        y0 = TOP + group * i
        body.append(
            f'<text x="152" y="{y0 + bar * len(series) / 2 + 4:.1f}" font-size="14" '
            f'text-anchor="end" fill="{TEXT}">{escape(label)}</text>'
        )
        for k, item in enumerate(series):
            value = item.values[i]
            w = plot_w * value / top
            y = y0 + bar * k
            if value <= 0:
                continue
            body.append(
                f'<rect x="160" y="{y:.1f}" width="{w:.1f}" height="{bar - 2:.1f}" '
                f'fill="{PALETTE[k % len(PALETTE)]}"><title>{escape(item.name)}: '
                f"{escape(number(value))}</title></rect>"
                f'<text x="{164 + w:.1f}" y="{y + bar - 5:.1f}" font-size="13" fill="{TEXT}">'
                f"{escape(number(value))}</text>"
            )
    return _frame(title, description, body, [s.name for s in series])


def histogram(
    title: str,
    description: str,
    edges: Sequence[float],
    series: Sequence[Series],
    thresholds: Sequence[tuple[str, float]],
    number: Number,
) -> Markup:
    """Stacked bins between ``edges`` (one more than values), with vertical lines at the
    named thresholds."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    bins = len(edges) - 1
    totals = [sum(s.values[i] for s in series) for i in range(bins)]
    top = _scale(max(totals, default=0))
    low, high = edges[0], edges[-1]
    span = (high - low) or 1.0

    def x_of(value: float) -> float:
        return LEFT + plot_w * (value - low) / span

    body = _y_axis(top, number)
    for i in range(bins):
        x, x2 = x_of(edges[i]), x_of(edges[i + 1])
        where = f" {number(edges[i])}–{number(edges[i + 1])}"
        body += _stack(series, i, x, max(1.0, x2 - x - 1), top, number, where)
    for j, (name, value) in enumerate(thresholds):
        x = x_of(value)
        body.append(
            f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + plot_h}" stroke="{TEXT}" '
            f'stroke-width="2" stroke-dasharray="{"6 3" if j == 0 else "2 2"}"/>'
            f'<text x="{x + 4:.1f}" y="{TOP + 12 + 14 * j}" font-size="13" fill="{TEXT}">'
            f"{escape(name)} {escape(number(value))}</text>"
        )
    step = max(1, math.ceil(span / 6))
    ticks = [float(t) for t in range(math.ceil(low), math.floor(high) + 1, step)]
    body += _x_labels([number(t) for t in ticks], [x_of(t) for t in ticks], every=1)
    return _frame(title, description, body, [s.name for s in series])
