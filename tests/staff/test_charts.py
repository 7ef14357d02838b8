"""The operations charts' two layouts (support/views/charts.py): the stacked one a phone shows
keeps each bar's proportion of the wide one, on the same scale, within its own width."""

from __future__ import annotations

from support.views.charts import BAR_SPACE, STACKED_ROW_HEIGHT, STACKED_WIDTH, bar_chart


def test_the_stacked_layout_has_the_wide_layouts_bars_one_under_the_other():
    chart = bar_chart(
        id="chart-x",
        title="T",
        desc="D",
        rows=[("Answered", 4.0, "4"), ("Escalated to staff", 1.0, "1"), ("Failed", 0.0, "0")],
    )
    assert [b.width for b in chart.bars] == [BAR_SPACE, BAR_SPACE / 4, 0]
    assert [b.width for b in chart.stacked] == [STACKED_WIDTH, round(STACKED_WIDTH / 4, 1), 0]
    assert [b.label for b in chart.stacked] == ["Answered", "Escalated to staff", "Failed"]
    assert [b.text for b in chart.stacked] == ["4", "1", "0"]
    # Each row: its label and value, then its bar below them, the next row below that.
    for index, bar in enumerate(chart.stacked):
        assert index * STACKED_ROW_HEIGHT < bar.text_y < bar.bar_y
        assert bar.bar_y + chart.stacked_bar_height <= (index + 1) * STACKED_ROW_HEIGHT
        assert bar.track == STACKED_WIDTH
    assert chart.stacked_height == 3 * STACKED_ROW_HEIGHT


def test_a_gauge_past_its_budget_fills_its_track_in_the_warning_colour():
    chart = bar_chart(
        id="chart-spend",
        title="T",
        desc="D",
        rows=[("Today", 150.0, "$150 / $100"), ("Month", 0.001, "$0.001 / $2000")],
        scales=[100.0, 2000.0],
    )
    over, tiny = chart.stacked
    assert (over.width, over.over) == (STACKED_WIDTH, True)
    assert 1 <= tiny.width < 2  # a small non-zero figure stays visible
    assert tiny.over is False
    assert [b.over for b in chart.bars] == [True, False]
