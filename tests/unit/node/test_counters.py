"""A node's DNS counters: one process's snapshot, and the sum over its worker processes."""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection

from s25rbl.node.counters import LOOKUP_BUCKETS, LatencyHistogram, Snapshot, WorkerCounters, total


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
        shed=Counter({"tcp_connection_refused": slow, "udp_answer_dropped": queries}),
    )


def test_snapshots_add_up_key_by_key_and_bucket_by_bucket() -> None:
    summed = total([snapshot(10, 2, 1, 1), snapshot(5, 4, 2, 3), Snapshot()])
    assert summed.queries == Counter({("blocklist", "listed", "r1"): 15, ("-", "refused", "-"): 2})
    assert summed.lookups["fresh"] == 6 and summed.lookups["cache_hits"] == 18
    assert summed.inflight == 3
    assert summed.latency_counts["timeout"][-1] == 4 and sum(summed.latency_counts["timeout"]) == 4
    assert summed.latency_sums["timeout"] == 24.0
    assert summed.cache_hit_rate == 0.75
    assert summed.shed == Counter({"tcp_connection_refused": 4, "udp_answer_dropped": 15})


def eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def queries(counters: WorkerCounters) -> int:
    return total(counters.snapshots()).queries["blocklist", "listed", "r1"]


def test_a_dead_workers_counts_stay_but_not_its_lookups_in_flight() -> None:
    counters = WorkerCounters()
    first, second = counters.open(1), counters.open(2)
    counters.start()
    try:
        first.send(snapshot(7, 1, 5, 0))
        first.send(snapshot(9, 1, 4, 0))  # the newer snapshot of the same process wins
        second.send(snapshot(1, 1, 2, 0))
        eventually(lambda: queries(counters) == 10 and total(counters.snapshots()).inflight == 6, "both read")
        first.close()  # the first worker died: end of file on its pipe
        eventually(lambda: total(counters.snapshots()).inflight == 2, "the dead one's in-flight dropped")
        assert queries(counters) == 10  # never goes backwards
        third = counters.open(3)  # its replacement starts from zero, beside the old counts
        third.send(snapshot(2, 1, 0, 0))
        eventually(lambda: queries(counters) == 12, "the replacement counted")
    finally:
        counters.stop()


def test_a_garbled_message_costs_only_its_own_pipe() -> None:
    counters = WorkerCounters()
    bad, good = counters.open(1), counters.open(2)
    counters.start()
    try:
        bad.send_bytes(b"not a pickle")
        good.send(snapshot(4, 1, 0, 0))
        eventually(lambda: queries(counters) == 4, "the good pipe still read")
        good.send(snapshot(5, 1, 0, 0))
        eventually(lambda: queries(counters) == 5, "and read on")
    finally:
        counters.stop()


def send_from_child(writer: Connection) -> None:
    writer.send(snapshot(3, 1, 0, 2))
    writer.close()


def test_a_snapshot_crosses_from_a_spawned_process() -> None:
    counters = WorkerCounters()
    writer = counters.open(1)
    counters.start()
    try:
        child = multiprocessing.get_context("spawn").Process(target=send_from_child, args=(writer,))
        child.start()
        writer.close()
        child.join(30)
        assert child.exitcode == 0
        eventually(lambda: counters.snapshots() == [snapshot(3, 1, 0, 2)], "the child's snapshot read")
    finally:
        counters.stop()
