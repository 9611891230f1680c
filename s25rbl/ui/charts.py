"""Charts as inline SVG, drawn on the server: no script, no library, nothing fetched; a few
kilobytes each (at most MAX_POINTS points a line). Colours come from the stylesheet's classes,
so both themes apply and the page's Content-Security-Policy needs no inline styles."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 48, 8, 10, 22  # room for the axis labels
MAX_POINTS = 160
_ids = iter(range(1, 1 << 62))


@dataclass(frozen=True, slots=True)
class Line:
    """One series of a line chart; ``None`` where there is nothing to show (a gap)."""

    label: str
    values: Sequence[float | None]


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is at least ``value`` (1 for nothing)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value * (1 - 1e-9):
            return float(step * power)
    return float(10 * power)


def fmt(value: float) -> str:
    """A number as an axis or a caption shows it: 1.5k, 2M, 0.25, 12."""
    if value >= 1_000_000:
        return f"{value / 1_000_000:.3g}M"
    if value >= 1_000:
        return f"{value / 1_000:.3g}k"
    if value == int(value):
        return str(int(value))
    return f"{value:.3g}"


def downsample(values: Sequence[float | None], points: int) -> list[float | None]:
    """At most ``points`` values: each the mean of a run of neighbours (gaps left out)."""
    if len(values) <= points:
        return list(values)
    out: list[float | None] = []
    per = len(values) / points
    for i in range(points):
        chunk = [v for v in values[int(i * per) : int((i + 1) * per)] if v is not None]
        out.append(sum(chunk) / len(chunk) if chunk else None)
    return out


def _clock(ts: float) -> str:
    return time.strftime("%H:%M", time.gmtime(ts)) if math.isfinite(ts) else ""


def _frame(chart_id: str, title: str, top: float, unit: str, x_labels: tuple[str, str]) -> list[str]:
    plot_h = HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="{chart_id}">',
        f'<title id="{chart_id}">{escape(title)}</title>',
    ]
    for frac in (0, 0.5, 1):
        y = TOP + plot_h * (1 - frac)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.0f}" y2="{y:.0f}"/>')
        parts.append(
            f'<text class="ax" x="{LEFT - 4}" y="{y + 4:.0f}" text-anchor="end">{fmt(top * frac)}</text>'
        )
    parts.append(f'<text class="ax" x="{LEFT}" y="{HEIGHT - 6}">{escape(x_labels[0])}</text>')
    right = WIDTH - RIGHT
    parts.append(
        f'<text class="ax" x="{right}" y="{HEIGHT - 6}" text-anchor="end">{escape(x_labels[1])}</text>'
    )
    if unit:
        parts.append(f'<text class="ax" x="{LEFT + 4}" y="{TOP + 10}">{escape(unit)}</text>')
    return parts


def line_chart(title: str, times: Sequence[float], lines: Sequence[Line], *, unit: str = "") -> Markup:
    """Lines over time (``times``: each sample's Unix time), with a legend."""
    chart_id = f"chart{next(_ids)}"
    series = [(line.label, downsample(line.values, MAX_POINTS)) for line in lines]
    stamps = (
        [times[int(i * len(times) / MAX_POINTS)] for i in range(MAX_POINTS)]
        if len(times) > MAX_POINTS
        else times
    )
    top = nice_ceiling(max((v for _, vs in series for v in vs if v is not None), default=0.0))
    x_labels = (_clock(stamps[0]), _clock(stamps[-1]) + " UTC") if stamps else ("", "")
    parts = _frame(chart_id, title, top, unit, x_labels)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    n = max(len(stamps), 2)
    for index, (_, values) in enumerate(series):
        run: list[str] = []
        runs: list[list[str]] = []
        for i, value in enumerate(values):
            if value is None:
                if run:
                    runs.append(run)
                run = []
                continue
            x = LEFT + plot_w * i / (n - 1)
            y = TOP + plot_h * (1 - value / top)
            run.append(f"{x:.1f},{y:.1f}")
        if run:
            runs.append(run)
        for points in runs:
            if len(points) == 1:
                cx, cy = points[0].split(",")
                parts.append(f'<circle class="s{index % 8 + 1}" cx="{cx}" cy="{cy}" r="2"/>')
            else:
                parts.append(f'<polyline class="s{index % 8 + 1}" points="{" ".join(points)}"/>')
    parts.append("</svg>")
    return Markup("".join(parts)) + legend([label for label, _ in series], [_last(v) for _, v in series])


def _last(values: Sequence[float | None]) -> float | None:
    return next((v for v in reversed(values) if v is not None), None)


def legend(labels: Sequence[str], latest: Sequence[float | None]) -> Markup:
    items = []
    for index, (label, value) in enumerate(zip(labels, latest, strict=True)):
        shown = "" if value is None else f" <b>{fmt(round(value, 3))}</b>"
        items.append(f'<li><span class="sw s{index % 8 + 1}"></span>{escape(label)}{shown}</li>')
    return Markup(f'<ul class="legend">{"".join(items)}</ul>')


def bar_chart(title: str, labels: Sequence[str], values: Sequence[int], *, unit: str = "") -> Markup:
    """One bar per bucket (``labels``: each bucket's name, e.g. its day)."""
    chart_id = f"chart{next(_ids)}"
    top = nice_ceiling(max(values, default=0))
    x_labels = (labels[0], labels[-1]) if labels else ("", "")
    parts = _frame(chart_id, title, top, unit, x_labels)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(values), 1)
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        h = plot_h * value / top
        parts.append(
            f'<rect class="bar" x="{LEFT + slot * i + slot * 0.15:.1f}" y="{TOP + plot_h - h:.1f}" '
            f'width="{slot * 0.7:.1f}" height="{h:.1f}"><title>{escape(label)}: {value}</title></rect>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
