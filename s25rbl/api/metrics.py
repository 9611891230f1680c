"""Prometheus metrics: read from the node's own counters at scrape time, so the DNS hot path
only increments a dict entry and never touches a metrics library. The DNS counters are the
whole node's: with ``dns.workers`` the workers' last snapshots are added (``node.counters``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from s25rbl.dns.transport import SHED_EVENTS
from s25rbl.node.counters import LOOKUP_BUCKETS, LOOKUP_OUTCOMES, Snapshot
from s25rbl.node.sync import ListSync
from s25rbl.policy.counters import GREYLIST_OUTCOMES, TARPIT_OUTCOMES
from s25rbl.policy.node import PolicyNode


class NodeCollector(Collector):
    """The node's DNS, lookup and list figures, read at scrape time."""

    def __init__(self, counters: Callable[[], Snapshot], lists: ListSync) -> None:
        self._counters = counters
        self._lists = lists

    def collect(self) -> Iterator[Metric]:
        counters = self._counters()
        lists = self._lists
        queries = CounterMetricFamily(
            "s25rbl_dns_queries",
            "DNS queries answered, by zone, result and deciding step",
            labels=["zone", "result", "step"],
        )
        for (zone, result, step), count in sorted(counters.queries.items()):
            queries.add_metric([zone, result, step], count)
        yield queries
        shed = CounterMetricFamily(
            "s25rbl_dns_shed",
            "DNS work shed to protect the node: UDP answers the socket did not take (send buffer "
            "full), TCP connections refused (no room, none idle) or closed while idle to make room",
            labels=["event"],
        )
        for event in SHED_EVENTS:
            shed.add_metric([event], counters.shed[event])
        yield shed
        lookups = CounterMetricFamily("s25rbl_rdns_lookups", "Reverse lookups by outcome", labels=["outcome"])
        for outcome in LOOKUP_OUTCOMES:
            lookups.add_metric([outcome], counters.lookups[outcome])
        yield lookups
        yield GaugeMetricFamily("s25rbl_rdns_inflight", "Reverse lookups in flight", value=counters.inflight)
        latency = HistogramMetricFamily(
            "s25rbl_rdns_lookup_seconds",
            "Time to a reverse-lookup result (PTR and forward confirmation), by outcome",
            labels=["outcome"],
        )
        bounds = [*(str(b) for b in LOOKUP_BUCKETS), "+Inf"]
        for outcome, counts in sorted(counters.latency_counts.items()):
            cumulative, running = [], 0
            for bound, count in zip(bounds, counts, strict=True):
                running += count
                cumulative.append((bound, running))
            latency.add_metric([outcome], cumulative, counters.latency_sums[outcome])
        yield latency
        sizes = GaugeMetricFamily("s25rbl_list_entries", "Entries in memory by index", labels=["index"])
        for name, size in lists.index.sizes().items():
            sizes.add_metric([name], size)
        yield sizes
        yield GaugeMetricFamily(
            "s25rbl_list_version", "List version the node answers from", value=lists.index.version
        )
        yield GaugeMetricFamily(
            "s25rbl_store_up",
            "1 if the last store check succeeded",
            value=1 if lists.healthy else 0,
        )


class PolicyCollector(Collector):
    """The policy service's figures (product §7), read at scrape time."""

    def __init__(self, policy: PolicyNode) -> None:
        self._policy = policy

    def collect(self) -> Iterator[Metric]:
        counters, state = self._policy.counters, self._policy.state

        def counter(name: str, text: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"s25rbl_policy_{name}", text, value=value)

        requests = CounterMetricFamily(
            "s25rbl_policy_requests", "Policy requests by stage and outcome", labels=["stage", "outcome"]
        )
        for (stage, decided), count in sorted(counters.requests.items()):
            requests.add_metric([stage, str(decided)], count)
        yield requests
        tarpits = CounterMetricFamily(
            "s25rbl_policy_tarpits",
            "Tarpitted sessions: started, survived (reached DATA), delivered, abandoned (hung up)",
            labels=["outcome"],
        )
        for outcome in TARPIT_OUTCOMES:
            tarpits.add_metric([outcome], counters.tarpits[outcome])
        yield tarpits
        greylist = CounterMetricFamily(
            "s25rbl_policy_greylist", "Greylisted attempts: deferred, passed", labels=["outcome"]
        )
        for outcome in GREYLIST_OUTCOMES:
            greylist.add_metric([outcome], counters.greylist[outcome])
        yield greylist
        bad = CounterMetricFamily(
            "s25rbl_policy_bad_requests", "Requests answered DUNNO unjudged, by problem", labels=["problem"]
        )
        for problem, count in sorted(counters.bad_requests.items()):
            bad.add_metric([problem], count)
        yield bad
        yield counter(
            "passes",
            "Passes recorded (tarpits delivered, greylists passed), one per session",
            counters.passes,
        )
        yield counter("learned", "Addresses learned through the policy service", counters.learned)
        yield counter(
            "connections_refused", "Connections closed at once (not allowed, too many)", counters.refused
        )
        yield counter("dry_run_answers", "Treatments answered DUNNO because of dry_run", counters.dry_run)
        yield counter("writes_dropped", "State writes lost to a long store outage", state.dropped)
        yield GaugeMetricFamily(
            "s25rbl_policy_connections", "Open policy connections", value=counters.connections
        )
        yield GaugeMetricFamily(
            "s25rbl_policy_tarpits_in_progress",
            "Sessions sitting in a tarpit now",
            value=state.tarpits_in_progress(),
        )


class Metrics:
    """The node's Prometheus registry: its collectors plus the API's own counters."""

    def __init__(
        self, counters: Callable[[], Snapshot], lists: ListSync, policy: PolicyNode | None = None
    ) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(NodeCollector(counters, lists))
        if policy is not None:
            self.registry.register(PolicyCollector(policy))
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


def metrics_middleware(metrics: Metrics) -> Any:
    """Counts every API request by route and status."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
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
            metrics.api_requests.labels(route, str(status)).inc()

    return middleware
