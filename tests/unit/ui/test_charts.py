"""Server-side SVG charts: scales, downsampling, gaps, escaping and size."""

from __future__ import annotations

import re

import pytest

from s25rbl.ui.charts import MAX_POINTS, Line, bar_chart, downsample, fmt, line_chart, nice_ceiling


@pytest.mark.parametrize(
    ("value", "top"),
    [
        (0, 1),
        (-3, 1),
        (0.3, 0.5),
        (1, 1),
        (1.01, 2),
        (3, 5),
        (7, 10),
        (120, 200),
        (999, 1000),
        (float("nan"), 1),
    ],
    ids=["zero", "negative", "fraction", "one", "just-over-one", "three", "seven", "120", "999", "nan"],
)
def test_the_axis_top_is_a_round_number_at_least_the_maximum(value: float, top: float) -> None:
    assert nice_ceiling(value) == pytest.approx(top)


@pytest.mark.parametrize(
    ("value", "text"),
    [(12, "12"), (0.25, "0.25"), (1500, "1.5k"), (2_000_000, "2M")],
    ids=["int", "fraction", "k", "M"],
)
def test_numbers_are_short(value: float, text: str) -> None:
    assert fmt(value) == text


def test_downsampling_averages_neighbours_and_keeps_gaps() -> None:
    assert downsample([1, 3, None, None, 5, 7], 3) == [2, None, 6]
    assert downsample([1, 2], 10) == [1, 2]


def test_a_gap_splits_the_line() -> None:
    svg = str(line_chart("t", [0, 60, 120, 180, 240], [Line("a", [1, 2, None, 3, 4])]))
    assert svg.count("<polyline") == 2


def test_a_lone_point_is_drawn_as_a_dot() -> None:
    svg = str(line_chart("t", [0, 60, 120], [Line("a", [None, 2, None])]))
    assert svg.count("<circle") == 1 and "<polyline" not in svg


def test_labels_are_escaped() -> None:
    svg = str(line_chart("<script>", [0, 60], [Line("<b>", [1, 2])]) + bar_chart("a&b", ["<x>"], [1]))
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "&lt;b&gt;" in svg and "a&amp;b" in svg


def test_a_day_of_samples_draws_at_most_max_points_per_line() -> None:
    times = [float(60 * i) for i in range(1440)]
    svg = str(line_chart("t", times, [Line(f"s{n}", [float(i % 97) for i in range(1440)]) for n in range(6)]))
    points = re.findall(r'points="([^"]*)"', svg)
    assert len(points) == 6 and all(len(p.split()) <= MAX_POINTS for p in points)
    assert len(svg) < 20_000


def test_values_are_drawn_inside_the_plot() -> None:
    svg = str(line_chart("t", [0, 60, 120], [Line("a", [0, 50, 100])]))
    ys = [float(p.split(",")[1]) for p in re.search(r'points="([^"]*)"', svg).group(1).split()]  # type: ignore[union-attr]
    assert min(ys) >= 0 and max(ys) <= 200 and ys[0] > ys[1] > ys[2]  # higher values are higher up


def test_bars_have_a_title_each_for_their_value() -> None:
    svg = str(bar_chart("learned", ["11-30", "12-01"], [3, 0]))
    assert "<title>11-30: 3</title>" in svg and "<title>12-01: 0</title>" in svg and 'role="img"' in svg
