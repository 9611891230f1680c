"""Entry hits counted in memory and written to the store in batches (``node.sync``)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import datetime, timedelta
from itertools import islice

from s25rbl.clock import Clock
from s25rbl.verdict.model import Match


class HitCounter:
    """Entry hits counted in memory and written in batches, never a write per query.

    A hit costs two dict updates and a monotonic clock read (answer-cache hits count too);
    the wall-clock time of each entry's last hit is worked out when a batch is taken.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._counts: dict[int, int] = {}
        self._last: dict[int, float] = {}  # clock.monotonic() of the last hit

    def hit(self, match: Match | None) -> None:
        if match is not None:
            self.hit_entry(match.entry_id)

    def hit_entry(self, entry_id: int) -> None:
        counts = self._counts
        counts[entry_id] = counts.get(entry_id, 0) + 1
        self._last[entry_id] = self._clock.monotonic()

    def tables(self) -> tuple[dict[int, int], dict[int, float]]:
        """The hits by entry id and the clock.monotonic() time of each one's last hit, for the C
        answer loop (``s25rbl.dns.fast``) to add what it counted to, between two ``take``."""
        return self._counts, self._last

    def take(self) -> dict[int, tuple[int, datetime]]:
        """Every hit counted so far: by entry id, the count and the time of the last hit."""
        batch: dict[int, tuple[int, datetime]] = {}
        for part in self.take_slices(max(1, len(self._counts))):
            batch.update(part)
        return batch

    def take_slices(self, size: int) -> Iterator[dict[int, tuple[int, datetime]]]:
        """Every hit counted so far, taken at once (counting goes on in fresh tables), handed out
        ``size`` entries at a time: the caller can write and yield to the loop between slices."""
        counts, last = self._counts, self._last
        self._counts, self._last = {}, {}
        return _dated(counts, last, self._clock.now(), self._clock.monotonic(), size)

    def restore(self, batch: dict[int, tuple[int, datetime]]) -> None:
        """Put back a batch that could not be written, merged with hits counted since."""
        now, mono = self._clock.now(), self._clock.monotonic()
        for entry_id, (count, last) in batch.items():
            self._counts[entry_id] = self._counts.get(entry_id, 0) + count
            if entry_id not in self._last:
                # 1 µs later than the arithmetic gives: a time dated to its whole second must
                # come back within that second, not a float's rounding before it.
                self._last[entry_id] = mono - (now - last).total_seconds() + 1e-6


def _dated(
    counts: dict[int, int], last: dict[int, float], now: datetime, mono: float, size: int
) -> Iterator[dict[int, tuple[int, datetime]]]:
    # A last hit is dated to the whole second of the monotonic clock (at most a second early):
    # each second is converted once, not each entry (the Python path stamps every hit apart:
    # converting 5,000 distinct times held the event loop for ~10 ms; the C answer path
    # stamps one drain's hits alike, once a second, anyway).
    when: dict[int, datetime] = {}
    entries = iter(counts.items())
    while True:
        part: dict[int, tuple[int, datetime]] = {}
        for entry_id, count in islice(entries, size):
            second = math.floor(last[entry_id])
            stamp = when.get(second)
            if stamp is None:
                stamp = when[second] = now - timedelta(seconds=mono - second)
            part[entry_id] = (count, stamp)
        if not part:
            return
        yield part
