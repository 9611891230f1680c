"""The DNS side's counters of one process, and their sum over the processes of a node.

With ``dns.workers = N`` every worker answers its share of the clients and counts in its own
memory. Each sends a snapshot of its counters to the primary every ``REPORT_INTERVAL``
seconds and once more as it stops; the primary's ``/metrics`` and ``/v1/stats`` add the last
snapshot of every worker process it started to its own counters. A worker that died keeps
its last snapshot in the sum (its replacement is another process and starts from zero), so
the node's counters never go backwards.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from s25rbl.app import Parts
    from s25rbl.dns.handler import Responder
    from s25rbl.resolve.rdns import ReverseLookup

log = logging.getLogger(__name__)

REPORT_INTERVAL = 1.0  # seconds between a worker's snapshots
LOOKUP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 5.0)

QueryKey = tuple[str, str, str]  # (zone, result, deciding step)
LOOKUP_OUTCOMES = ("fresh", "cache_hits", "coalesced", "tempfail", "overload", "deadline")


class LatencyHistogram:
    """Reverse-lookup latencies by outcome, in LOOKUP_BUCKETS (upper bounds) plus +Inf.

    Plain counts per bucket, so histograms of several processes add up bucket by bucket.
    """

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {}
        self.sums: dict[str, float] = {}

    def observe(self, seconds: float, outcome: str) -> None:
        counts = self.counts.get(outcome)
        if counts is None:
            counts = self.counts[outcome] = [0] * (len(LOOKUP_BUCKETS) + 1)
            self.sums[outcome] = 0.0
        counts[bisect.bisect_left(LOOKUP_BUCKETS, seconds)] += 1  # le: a value on a bound is in it
        self.sums[outcome] += seconds


@dataclass
class Snapshot:
    """One process's DNS counters at one moment (picklable: it crosses process boundaries)."""

    queries: Counter[QueryKey] = field(default_factory=Counter)
    lookups: Counter[str] = field(default_factory=Counter)  # LookupStats by field name
    inflight: int = 0
    latency_counts: dict[str, list[int]] = field(default_factory=dict)
    latency_sums: dict[str, float] = field(default_factory=dict)

    @property
    def cache_hit_rate(self) -> float | None:
        total = self.lookups["cache_hits"] + self.lookups["fresh"]
        return round(self.lookups["cache_hits"] / total, 4) if total else None


def take(responder: Responder | None, rdns: ReverseLookup | None, latency: LatencyHistogram) -> Snapshot:
    snap = Snapshot()
    if responder is not None:
        snap.queries.update(responder.counts)
    if rdns is not None:
        snap.lookups.update({f.name: getattr(rdns.stats, f.name) for f in fields(rdns.stats)})
        snap.inflight = rdns.inflight
    snap.latency_counts = {k: list(v) for k, v in latency.counts.items()}
    snap.latency_sums = dict(latency.sums)
    return snap


def total(snapshots: Iterable[Snapshot]) -> Snapshot:
    out = Snapshot()
    for snap in snapshots:
        out.queries.update(snap.queries)
        out.lookups.update(snap.lookups)
        out.inflight += snap.inflight
        for outcome, counts in snap.latency_counts.items():
            mine = out.latency_counts.setdefault(outcome, [0] * len(counts))
            out.latency_counts[outcome] = [a + b for a, b in zip(mine, counts, strict=True)]
            out.latency_sums[outcome] = out.latency_sums.get(outcome, 0.0) + snap.latency_sums[outcome]
    return out


def node_snapshot(parts: Parts) -> Snapshot:
    """This node's counters: the primary's own plus every worker's last snapshot."""
    own = take(parts.responder, parts.rdns, parts.latency)
    if parts.workers is None:
        return own
    return total([own, *parts.workers.counters.snapshots(parts.workers.pids)])


class WorkerCounters:
    """The primary's side: the last snapshot of each worker process, read from a queue."""

    def __init__(self, queue: Any) -> None:
        self._queue = queue  # a multiprocessing Queue of (pid, Snapshot), None to stop
        self._latest: dict[int, Snapshot] = {}
        self._thread = threading.Thread(target=self._drain, name="worker-counters", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            pid, snap = item
            self._latest[pid] = snap  # one dict assignment: safe to read from the loop thread

    def stop(self) -> None:
        """After the workers stopped (their last snapshots are in the queue before this)."""
        self._queue.put(None)
        self._thread.join(10)

    def snapshots(self, live: Iterable[int]) -> list[Snapshot]:
        """Every worker's last snapshot; ``inflight`` only from ``live`` processes."""
        alive = set(live)
        out = []
        for pid, snap in list(self._latest.items()):
            if pid not in alive and snap.inflight:
                snap = Snapshot(snap.queries, snap.lookups, 0, snap.latency_counts, snap.latency_sums)
            out.append(snap)
        return out
