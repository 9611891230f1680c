"""The DNS side's counters of one process, and their sum over the processes of a node.

With ``dns.workers = N`` every worker answers its share of the clients and counts in its own
memory. Each sends a snapshot of its counters to the primary, through a pipe of its own,
every ``REPORT_INTERVAL`` seconds and once more as it stops; the primary's ``/metrics`` and
``/v1/stats`` add the last snapshot of every worker process it started to its own counters.
A worker that died keeps its last snapshot in the sum (its replacement is another process
and starts from zero), so the node's counters never go backwards.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import multiprocessing
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from multiprocessing.connection import Connection, wait

from s25rbl.dns.handler import Responder
from s25rbl.dns.transport import Listeners
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
    shed: Counter[str] = field(default_factory=Counter)  # Listeners.shed, by event

    @property
    def cache_hit_rate(self) -> float | None:
        total = self.lookups["cache_hits"] + self.lookups["fresh"]
        return round(self.lookups["cache_hits"] / total, 4) if total else None


def take(
    responder: Responder,
    rdns: ReverseLookup,
    latency: LatencyHistogram,
    listeners: Iterable[Listeners] = (),
) -> Snapshot:
    """This process's counters now."""
    snap = Snapshot()
    for listening in listeners:
        snap.shed.update(listening.shed())
    snap.queries.update(responder.counts)
    snap.lookups.update({f.name: getattr(rdns.stats, f.name) for f in fields(rdns.stats)})
    snap.inflight = rdns.inflight
    snap.latency_counts = {k: list(v) for k, v in latency.counts.items()}
    snap.latency_sums = dict(latency.sums)
    return snap


def total(snapshots: Iterable[Snapshot]) -> Snapshot:
    """The sum of several processes' counters."""
    out = Snapshot()
    for snap in snapshots:
        out.queries.update(snap.queries)
        out.lookups.update(snap.lookups)
        out.inflight += snap.inflight
        out.shed.update(snap.shed)
        for outcome, counts in snap.latency_counts.items():
            mine = out.latency_counts.setdefault(outcome, [0] * len(counts))
            out.latency_counts[outcome] = [a + b for a, b in zip(mine, counts, strict=True)]
            out.latency_sums[outcome] = out.latency_sums.get(outcome, 0.0) + snap.latency_sums[outcome]
    return out


class WorkerCounters:
    """The primary's side: the last snapshot of every worker process it started.

    Each worker process gets a pipe of its own (``open``), so a worker killed in the middle
    of a message harms nothing but its own pipe: no lock is shared between processes, as a
    multiprocessing Queue would share one. A thread reads whatever pipe is ready and keeps
    the last snapshot per process; a pipe whose worker died is closed, and its last snapshot
    stays (without its lookups in flight).
    """

    def __init__(self) -> None:
        self._latest: dict[int, Snapshot] = {}  # by spawn number: unique, unlike pids
        self._readers: dict[int, Connection] = {}
        self._lock = threading.Lock()  # guards _readers (the thread reads, open() adds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, name="worker-counters", daemon=True)

    def open(self, spawn: int) -> Connection:
        """A new pipe for the worker process of spawn number ``spawn``: its sending end."""
        reader, writer = multiprocessing.Pipe(duplex=False)
        with self._lock:
            self._readers[spawn] = reader
        return writer

    def start(self) -> None:
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                readers = dict(self._readers)
            if not readers:
                self._stop.wait(0.2)
                continue
            by_id = {id(conn): (spawn, conn) for spawn, conn in readers.items()}
            for ready in wait(list(readers.values()), timeout=0.2):
                spawn, reader = by_id[id(ready)]
                try:
                    snap = reader.recv()
                except (EOFError, OSError):  # the worker is gone (or sent half a message)
                    self._retire(spawn)
                    continue
                except Exception:  # never let a bad message stop the counting
                    log.exception("unreadable counters from dns worker process %d", spawn)
                    self._retire(spawn)
                    continue
                if isinstance(snap, Snapshot):
                    self._latest[spawn] = snap  # one dict assignment: safe to read from the loop

    def _retire(self, spawn: int) -> None:
        with self._lock:
            reader = self._readers.pop(spawn, None)
        if reader is not None:
            reader.close()
        last = self._latest.get(spawn)
        if last is not None and last.inflight:
            self._latest[spawn] = dataclasses.replace(last, inflight=0)

    def stop(self) -> None:
        """After the workers stopped: reads what they sent last, then ends the thread."""
        deadline = time.monotonic() + 2
        while self._readers and time.monotonic() < deadline:
            time.sleep(0.05)  # each stopped worker's pipe ends in EOF once read to the end
        self._stop.set()
        self._thread.join(5)
        with self._lock:
            for reader in self._readers.values():
                reader.close()
            self._readers.clear()

    def snapshots(self) -> list[Snapshot]:
        return list(self._latest.values())
