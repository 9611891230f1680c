"""A node's DNS counters: one process's snapshot, and the sum over its worker processes."""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter

from s25rbl.counters import LOOKUP_BUCKETS, LatencyHistogram, Snapshot, WorkerCounters, total


def test_latency_goes_in_the_first_bucket_whose_bound_holds_it() -> None:
    h = LatencyHistogram()
    h.observe(0.001, "ok")  # on the first bound: in it (Prometheus buckets are "le")
    h.observe(0.0011, "ok")
    h.observe(9.0, "ok")  # beyond the last bound: +Inf
    h.observe(0.3, "nxdomain")
    counts = h.counts["ok"]
    assert len(counts) == len(LOOKUP_BUCKETS) + 1
    assert counts[0] == 1 and counts[1] == 1 and counts[-1] == 1 and sum(counts) == 3
    assert h.counts["nxdomain"][LOOKUP_BUCKETS.index(0.5)] == 1
    assert abs(h.sums["ok"] - 9.0021) < 1e-9


def snapshot(queries: int, fresh: int, inflight: int, slow: int) -> Snapshot:
    latency = [0] * (len(LOOKUP_BUCKETS) + 1)
    latency[-1] = slow
    return Snapshot(
        queries=Counter({("blocklist", "listed", "r1"): queries, ("-", "refused", "-"): 1}),
        lookups=Counter({"fresh": fresh, "cache_hits": 3 * fresh}),
        inflight=inflight,
        latency_counts={"timeout": latency},
        latency_sums={"timeout": 6.0 * slow},
    )


def test_snapshots_add_up_key_by_key_and_bucket_by_bucket() -> None:
    summed = total([snapshot(10, 2, 1, 1), snapshot(5, 4, 2, 3), Snapshot()])
    assert summed.queries == Counter({("blocklist", "listed", "r1"): 15, ("-", "refused", "-"): 2})
    assert summed.lookups["fresh"] == 6 and summed.lookups["cache_hits"] == 18
    assert summed.inflight == 3
    assert summed.latency_counts["timeout"][-1] == 4 and sum(summed.latency_counts["timeout"]) == 4
    assert summed.latency_sums["timeout"] == 24.0
    assert summed.cache_hit_rate == 0.75


def test_worker_counters_keep_a_dead_workers_counts_but_not_its_lookups_in_flight() -> None:
    queue = multiprocessing.get_context("spawn").Queue()
    counters = WorkerCounters(queue)
    counters.start()
    try:
        queue.put((101, snapshot(7, 1, 5, 0)))
        queue.put((101, snapshot(9, 1, 4, 0)))  # the newer snapshot of the same process wins
        queue.put((102, snapshot(1, 1, 2, 0)))
    finally:
        counters.stop()  # drains everything put before it
    live = total(counters.snapshots(live=[101, 102]))
    assert live.queries["blocklist", "listed", "r1"] == 10 and live.inflight == 6
    after_101_died = total(counters.snapshots(live=[102]))
    assert after_101_died.queries["blocklist", "listed", "r1"] == 10  # never goes backwards
    assert after_101_died.inflight == 2


def test_a_snapshot_survives_the_queue_between_processes() -> None:
    queue = multiprocessing.get_context("spawn").Queue()
    queue.put((os.getpid(), snapshot(3, 1, 0, 2)))
    pid, received = queue.get(timeout=10)
    assert pid == os.getpid() and received == snapshot(3, 1, 0, 2)
