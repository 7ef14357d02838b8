"""Server-rendered bar charts for the operations page: the geometry is computed here and the
template draws it as inline SVG (no chart library, nothing loaded from anywhere). Each chart
carries a title and a description for assistive technology; the page prints the same figures
in a table beside it.

Each chart has two layouts of the same bars: a wide one (label, bar and value on one row) and a
stacked one for narrow screens (label and value on one line, the bar under them across the whole
width), so its text stays at about 14 px on a phone; the stylesheet shows one of them."""

from __future__ import annotations

from dataclasses import dataclass

WIDTH = 600
LABEL_WIDTH = 170
BAR_SPACE = 260  # the value's text is drawn after the bar, in what is left of WIDTH
ROW_HEIGHT = 26
BAR_HEIGHT = 16
# The stacked layout: drawn about 1:1 on a phone's card, each bar below its label and value.
STACKED_WIDTH = 330
STACKED_ROW_HEIGHT = 40
STACKED_BAR_HEIGHT = 14


@dataclass(frozen=True)
class Bar:
    label: str
    text: str  # the value as people read it ("$1.20", "42%")
    y: int
    width: float  # of the bar, in viewBox units
    track: float  # the bar's full scale (a gauge's budget), in viewBox units
    text_x: float
    over: bool  # past its scale (a budget overshoot): drawn in the warning colour


@dataclass(frozen=True)
class StackedBar:
    label: str
    text: str
    text_y: int  # the baseline of the label (at the left) and the value (at the right)
    bar_y: int
    width: float
    track: float
    over: bool


@dataclass(frozen=True)
class BarChart:
    id: str
    title: str
    desc: str
    bars: list[Bar]
    width: int
    height: int
    label_width: int
    bar_height: int
    text_y_offset: int
    stacked: list[StackedBar]
    stacked_width: int
    stacked_height: int
    stacked_bar_height: int


def bar_chart(
    *,
    id: str,
    title: str,
    desc: str,
    rows: list[tuple[str, float, str]],
    maximum: float | None = None,
    scales: list[float] | None = None,
) -> BarChart:
    """`rows` are (label, value, text). Bars share one scale (`maximum`, default the largest
    value) unless `scales` gives each row its own (a gauge against a budget)."""
    shared = maximum if maximum is not None else max([v for _, v, _ in rows] or [0.0])
    bars = []
    stacked = []
    for index, (label, value, text) in enumerate(rows):
        scale = scales[index] if scales else shared
        fraction = value / scale if scale else 0.0
        width = BAR_SPACE * min(max(fraction, 0.0), 1.0)
        if value > 0 and width < 1:
            width = 1.0  # a small non-zero figure stays visible
        bars.append(
            Bar(
                label=label[:28],
                text=text,
                y=index * ROW_HEIGHT + 4,
                width=round(width, 1),
                track=BAR_SPACE if scales else 0,
                text_x=LABEL_WIDTH + (BAR_SPACE if scales else width) + 6,
                over=bool(scales) and fraction > 1,
            )
        )
        top = index * STACKED_ROW_HEIGHT
        stacked.append(
            StackedBar(
                label=label[:28],
                text=text,
                text_y=top + 15,
                bar_y=top + 22,
                width=round(max(width / BAR_SPACE * STACKED_WIDTH, 1.0 if width else 0.0), 1),
                track=STACKED_WIDTH,  # every row shows its scale: a zero is an empty track
                over=bool(scales) and fraction > 1,
            )
        )
    return BarChart(
        id=id,
        title=title,
        desc=desc,
        bars=bars,
        width=WIDTH,
        height=max(len(rows), 1) * ROW_HEIGHT + 8,
        label_width=LABEL_WIDTH,
        bar_height=BAR_HEIGHT,
        text_y_offset=BAR_HEIGHT - 3,
        stacked=stacked,
        stacked_width=STACKED_WIDTH,
        stacked_height=max(len(rows), 1) * STACKED_ROW_HEIGHT,
        stacked_bar_height=STACKED_BAR_HEIGHT,
    )


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"
