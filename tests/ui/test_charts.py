"""The dashboard's SVG charts (ui.charts): accessible (role, title, description), text
escaped, no inline style (the CSP forbids it), values placed to scale."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from clientregistry.ui import charts
from clientregistry.ui.charts import Series

SVG = "{http://www.w3.org/2000/svg}"


def number(value: float) -> str:
    return f"{value:g}"


def _parse(markup: str) -> ET.Element:
    return ET.fromstring(markup)


@pytest.mark.parametrize(
    "draw",
    [
        lambda t, d, s: charts.columns(t, d, ["a", "b"], s, number),
        lambda t, d, s: charts.lines(t, d, ["a", "b"], s, number),
        lambda t, d, s: charts.bars(t, d, ["a", "b"], s, number),
        lambda t, d, s: charts.histogram(t, d, [0.0, 1.0, 2.0], s, [("cut", 1.5)], number),
    ],
)
def test_every_chart_is_an_accessible_image_without_inline_style(draw: object) -> None:
    title, description = "<b>Title</b> & co", 'Says "what" <script>'
    series = [Series("one <i>", [1, 3]), Series("two", [2, 0])]
    markup = str(draw(title, description, series))  # type: ignore[operator]
    root = _parse(markup)
    assert root.get("role") == "img"
    labelled = root.get("aria-labelledby", "").split()
    ids = {e.get("id"): e for e in root.iter() if e.get("id")}
    assert ids[labelled[0]].text == title and ids[labelled[1]].text == description
    assert "<script>" not in markup and "<i>" not in markup and "<b>" not in markup
    assert "style=" not in markup and "<style" not in markup
    legend = [e.text for e in root.iter(f"{SVG}text")]
    assert "one <i>" in legend and "two" in legend


def test_columns_stack_to_scale() -> None:
    markup = str(charts.columns("t", "d", ["x"], [Series("a", [1]), Series("b", [3])], number))
    heights = [
        float(h)
        for h in re.findall(r'<rect x="[\d.]+" y="[\d.]+" width="[\d.]+" height="([\d.]+)"', markup)
    ]
    plot = charts.HEIGHT - charts.TOP - charts.BOTTOM
    # (the legend squares follow); the axis tops at 4
    assert heights[:2] == pytest.approx([plot / 4, plot * 3 / 4], abs=0.1)


def test_histogram_draws_its_thresholds() -> None:
    markup = str(
        charts.histogram(
            "t", "d", [100.0, 104.0, 108.0], [Series("s", [2, 5])], [("potential", 103.0)], number
        )
    )
    assert "potential 103" in markup
    x = float(re.search(r'<line x1="([\d.]+)" y1="16"', markup).group(1))  # type: ignore[union-attr]
    left, width = charts.LEFT, charts.WIDTH - charts.LEFT - charts.RIGHT
    assert x == pytest.approx(left + width * 3 / 8, abs=0.1)
