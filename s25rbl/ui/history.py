"""The figures' memory: every ``sample_interval`` the node's counters are read and what each
grew by since the last sample is kept, for the last ``history`` samples, in fixed-size arrays
(8 bytes a value, at most MAX_SERIES series): a day of per-minute samples costs well under a
megabyte, and nothing here grows with traffic.

Counters come from sources, each a function returning cumulative counts by series name (the
node's DNS counters are one; the policy service adds its own), so a new kind of figure needs
one more source and one more chart, nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from s25rbl.node.counters import LOOKUP_BUCKETS, LOOKUP_OUTCOMES, Snapshot
from s25rbl.policy.counters import GREYLIST_OUTCOMES, TARPIT_OUTCOMES, PolicyCounters

log = logging.getLogger(__name__)

MAX_SERIES = 256  # names beyond this are not kept (they would be a bug in a source)
Source = Callable[[], Mapping[str, float]]


def snapshot_counters(snap: Snapshot) -> dict[str, float]:
    """The node's DNS counters as cumulative series: ``q:<zone>:<answer>``, ``lookup:<outcome>``,
    ``latency:le<i>`` (lookups per histogram bucket, all outcomes) and ``latency:sum``."""
    out: dict[str, float] = {}
    for (zone, result, _step), count in snap.queries.items():
        key = f"q:{zone}:{result}"
        out[key] = out.get(key, 0) + count
    for outcome in LOOKUP_OUTCOMES:
        out[f"lookup:{outcome}"] = snap.lookups[outcome]
    buckets = [0] * (len(LOOKUP_BUCKETS) + 1)
    total = 0.0
    for outcome, counts in snap.latency_counts.items():
        for i, count in enumerate(counts):
            buckets[i] += count
        total += snap.latency_sums.get(outcome, 0.0)
    for i, count in enumerate(buckets):
        out[f"latency:le{i}"] = count
    out["latency:sum"] = total
    return out


def policy_counters(counters: PolicyCounters) -> dict[str, float]:
    """The policy service's counters as cumulative series: ``policy:tarpit_<outcome>`` (started,
    survived, delivered, abandoned) and ``policy:greylist_<outcome>`` (deferred, passed)."""
    out: dict[str, float] = {f"policy:tarpit_{o}": counters.tarpits[o] for o in TARPIT_OUTCOMES}
    out.update({f"policy:greylist_{o}": counters.greylist[o] for o in GREYLIST_OUTCOMES})
    return out


@dataclass(frozen=True, slots=True)
class Window:
    """The last samples, oldest first: their times and what each series grew by in each."""

    times: list[float]
    values: dict[str, list[float]]

    def series(self, name: str) -> list[float]:
        return self.values.get(name) or [0.0] * len(self.times)

    def names(self, prefix: str) -> list[str]:
        return sorted(n for n in self.values if n.startswith(prefix))


class History:
    """Per-sample growth of every series of the sources, the last ``size`` samples."""

    def __init__(
        self, sources: Iterable[Source], *, size: int, interval: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.size = size
        self.interval = interval
        self._sources = list(sources)
        self._clock = clock
        self._times = array("d", [math.nan] * size)
        self._values: dict[str, array[float]] = {}
        self._last: dict[str, float] | None = None
        self._head = 0  # where the next sample goes
        self._count = 0

    def add_source(self, source: Source) -> None:
        self._sources.append(source)

    def _read(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for source in self._sources:
            try:
                totals.update(source())
            except Exception:  # a broken source loses its figures, never the others'
                log.exception("figures: a counter source failed")
        return totals

    def start(self) -> None:
        """Read the counters the first sample will be measured from."""
        self._last = self._read()

    def sample(self) -> None:
        """Keep what every series grew by since the last call (or since ``start``)."""
        totals = self._read()
        last = self._last if self._last is not None else totals
        self._last = totals
        slot = self._head
        self._times[slot] = self._clock()
        for name, value in totals.items():
            column = self._values.get(name)
            if column is None:
                if len(self._values) >= MAX_SERIES:
                    continue
                column = self._values[name] = array("d", [0.0] * self.size)
            before = last.get(name, 0.0)
            # A counter that went back (a worker process replaced) restarted from zero.
            column[slot] = value - before if value >= before else value
        for name, column in self._values.items():
            if name not in totals:
                column[slot] = 0.0
        self._head = (slot + 1) % self.size
        self._count = min(self._count + 1, self.size)

    def window(self, samples: int | None = None) -> Window:
        """The last ``samples`` samples (all kept, if None), oldest first."""
        n = self._count if samples is None else min(samples, self._count)
        slots = [(self._head - n + i) % self.size for i in range(n)]
        times = [self._times[s] for s in slots]
        return Window(times, {name: [col[s] for s in slots] for name, col in self._values.items()})

    async def run(self) -> None:
        """Sample every ``interval`` seconds until cancelled."""
        self.start()
        while True:
            await asyncio.sleep(self.interval)
            self.sample()
