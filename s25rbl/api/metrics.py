"""Prometheus metrics: read from the parts' own counters at scrape time, so the DNS hot path
only increments a dict entry and never touches a metrics library."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from s25rbl.app import Parts

LOOKUP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 5.0)


class PartsCollector(Collector):
    def __init__(self, parts: Callable[[], Parts]) -> None:
        self._parts = parts

    def collect(self) -> Iterator[Metric]:
        parts = self._parts()
        queries = CounterMetricFamily(
            "s25rbl_dns_queries",
            "DNS queries answered, by zone, result and deciding step",
            labels=["zone", "result", "step"],
        )
        if parts.responder is not None:
            for (zone, result, step), count in list(parts.responder.counts.items()):
                queries.add_metric([zone, result, step], count)
        yield queries
        if parts.rdns is not None:
            stats = parts.rdns.stats
            lookups = CounterMetricFamily(
                "s25rbl_rdns_lookups", "Reverse lookups by outcome", labels=["outcome"]
            )
            for outcome in ("fresh", "cache_hits", "coalesced", "tempfail", "overload", "deadline"):
                lookups.add_metric([outcome], getattr(stats, outcome))
            yield lookups
            yield GaugeMetricFamily(
                "s25rbl_rdns_inflight", "Reverse lookups in flight", value=parts.rdns.inflight
            )
        if parts.lists is not None:
            sizes = GaugeMetricFamily("s25rbl_list_entries", "Entries in memory by index", labels=["index"])
            for name, size in parts.lists.index.sizes().items():
                sizes.add_metric([name], size)
            yield sizes
            yield GaugeMetricFamily(
                "s25rbl_list_version", "List version the node answers from", value=parts.lists.index.version
            )
            yield GaugeMetricFamily(
                "s25rbl_store_up",
                "1 if the last store check succeeded",
                value=1 if parts.lists.healthy else 0,
            )


class Metrics:
    def __init__(self, parts: Callable[[], Parts]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(PartsCollector(parts))
        self.lookup_seconds = Histogram(
            "s25rbl_rdns_lookup_seconds",
            "Time to a reverse-lookup result (PTR and forward confirmation), by outcome",
            ["outcome"],
            buckets=LOOKUP_BUCKETS,
            registry=self.registry,
        )
        self.api_requests = Counter(
            "s25rbl_api_requests",
            "API requests by route and status",
            ["route", "status"],
            registry=self.registry,
        )

        self.expired = Counter(
            "s25rbl_expired", "Rows removed by expiry runs, by kind", ["kind"], registry=self.registry
        )
        self.reports = Counter(
            "s25rbl_reports", "Retry reports by outcome", ["outcome"], registry=self.registry
        )

    def count_expired(self, removed: dict[str, int]) -> None:
        for kind, count in removed.items():
            self.expired.labels(kind).inc(count)

    def observe_lookup(self, seconds: float, outcome: str) -> None:
        self.lookup_seconds.labels(outcome).observe(seconds)


METRICS = web.AppKey("metrics", Metrics)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    status = 500
    try:
        response: web.StreamResponse = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        info = request.match_info.route.resource
        route = info.canonical if info is not None else "unmatched"
        request.app[METRICS].api_requests.labels(route, str(status)).inc()
