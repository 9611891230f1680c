"""Figures: charts over time from what the node keeps itself: its counters sampled in memory
(``history``) and per-day and per-hour counts from the store; not only from Prometheus."""

from __future__ import annotations

import time
from datetime import timedelta

from aiohttp import web
from markupsafe import Markup

from s25rbl.node.counters import LOOKUP_BUCKETS, LOOKUP_OUTCOMES
from s25rbl.ui.base import render, view
from s25rbl.ui.charts import Line, bar_chart, line_chart
from s25rbl.ui.context import ui_of
from s25rbl.ui.history import Window

WINDOWS = (("1h", 3600), ("6h", 6 * 3600), ("24h", 86400))
ZONES = (("blocklist", "Blocklist zone"), ("whitelist", "Whitelist zone"), ("hostname", "Hostname zone"))
# Charts of counters other parts add as sources (series named ``<prefix><what>``): shown once
# such a series exists. The policy service's counters are ``policy:<what>``.
EXTRA_CHARTS: list[tuple[str, str]] = [
    ("policy:tarpit_", "Policy service: tarpitted sessions per minute by outcome"),
    ("policy:greylist_", "Policy service: greylisted attempts per minute by outcome"),
]
POLICY_STORE = (
    ("tarpits", "Tarpitted sessions", "Tarpits per hour"),
    ("passes", "Policy passes (tarpits survived, greylists passed)", "Passes per hour"),
)
LEARNED_DAYS = 30
REPORT_HOURS = 48


def _per_minute(values: list[float], interval: float) -> list[float | None]:
    return [v * 60.0 / interval for v in values]


def hit_rate(window: Window) -> list[float | None]:
    hits, fresh = window.series("lookup:cache_hits"), window.series("lookup:fresh")
    return [100.0 * h / (h + f) if h + f else None for h, f in zip(hits, fresh, strict=True)]


def latency(window: Window) -> tuple[list[float | None], list[float | None]]:
    """Mean and 95th percentile (bucket upper bound) of reverse-lookup times, in ms."""
    buckets = [window.series(f"latency:le{i}") for i in range(len(LOOKUP_BUCKETS) + 1)]
    sums = window.series("latency:sum")
    mean: list[float | None] = []
    p95: list[float | None] = []
    bounds = [*LOOKUP_BUCKETS, LOOKUP_BUCKETS[-1] * 2]
    for t in range(len(window.times)):
        counts = [b[t] for b in buckets]
        total = sum(counts)
        if not total:
            mean.append(None)
            p95.append(None)
            continue
        mean.append(1000.0 * sums[t] / total)
        running = 0.0
        for bound, count in zip(bounds, counts, strict=True):
            running += count
            if running >= 0.95 * total:
                p95.append(1000.0 * bound)
                break
    return mean, p95


def node_charts(window: Window, interval: float) -> list[tuple[str, Markup]]:
    charts: list[tuple[str, Markup]] = []
    times = window.times
    for zone, title in ZONES:
        names = window.names(f"q:{zone}:")
        if not names:
            continue
        lines = [Line(n.split(":", 2)[2], _per_minute(window.series(n), interval)) for n in names]
        charts.append(
            (f"{title}: queries per minute by answer", line_chart(title, times, lines, unit="/min"))
        )
    outcomes = [
        Line(o.replace("_", " "), _per_minute(window.series(f"lookup:{o}"), interval))
        for o in LOOKUP_OUTCOMES
    ]
    charts.append(
        ("Reverse lookups per minute by outcome", line_chart("Lookups", times, outcomes, unit="/min"))
    )
    charts.append(
        (
            "Lookup cache hit rate",
            line_chart("Cache hit rate", times, [Line("hit rate %", hit_rate(window))], unit="%"),
        )
    )
    mean, p95 = latency(window)
    charts.append(
        (
            "Reverse lookup latency",
            line_chart("Lookup latency", times, [Line("mean ms", mean), Line("p95 ms", p95)], unit="ms"),
        )
    )
    for prefix, title in EXTRA_CHARTS:
        names = window.names(prefix)
        if names:
            lines = [
                Line(n[len(prefix) :].replace("_", " "), _per_minute(window.series(n), interval))
                for n in names
            ]
            charts.append((title, line_chart(title, times, lines, unit="/min")))
    return charts


@view()
async def figures(request: web.Request) -> web.StreamResponse:
    ui = ui_of(request)
    chosen = request.query.get("window", "1h")
    seconds = dict(WINDOWS).get(chosen)
    if seconds is None:
        chosen, seconds = WINDOWS[0]
    history = ui.history
    window = history.window(max(1, int(seconds / history.interval)))
    browse = ui.api.services.browse
    learned = await browse.per_bucket("learned", bucket=timedelta(days=1), count=LEARNED_DAYS)
    reports = await browse.per_bucket("reports", bucket=timedelta(hours=1), count=REPORT_HOURS)
    store_charts = [
        (
            f"Addresses learned per day, last {LEARNED_DAYS} days",
            bar_chart(
                "Learned per day",
                [e.strftime("%m-%d") for e in learned.edges[:-1]],
                list(learned.counts),
                unit="/day",
            ),
        ),
        (
            f"Retry reports per hour, last {REPORT_HOURS} hours",
            bar_chart(
                "Reports per hour",
                [e.strftime("%m-%d %H:00") for e in reports.edges[:-1]],
                list(reports.counts),
                unit="/h",
            ),
        ),
    ]
    if ui.api.policy is not None:  # the policy service's state, on every node's store
        for what, title, label in POLICY_STORE:
            hours = await browse.per_bucket(what, bucket=timedelta(hours=1), count=REPORT_HOURS)
            store_charts.append(
                (
                    f"{title} per hour, last {REPORT_HOURS} hours",
                    bar_chart(
                        label,
                        [e.strftime("%m-%d %H:00") for e in hours.edges[:-1]],
                        list(hours.counts),
                        unit="/h",
                    ),
                )
            )
    counters = ui.api.counters()
    totals: dict[str, int] = {}
    for (zone, _result, _step), count in counters.queries.items():
        totals[zone] = totals.get(zone, 0) + count
    return render(
        request,
        "figures.html",
        windows=[name for name, _ in WINDOWS],
        chosen=chosen,
        samples=len(window.times),
        interval=history.interval,
        since=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(window.times[0])) if window.times else "",
        node_charts=node_charts(window, history.interval),
        store_charts=store_charts,
        totals=totals,
        hit_rate=counters.cache_hit_rate,
        sizes=ui.api.lists.index.sizes(),
        learned_total=sum(learned.counts),
        reports_total=sum(reports.counts),
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/figures", figures)
