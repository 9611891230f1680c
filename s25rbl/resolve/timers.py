"""Many deadlines on one event-loop timer, for the fresh-verdict path.

A ``loop.call_at`` handle per lookup (made, then cancelled a few milliseconds later when the
answer comes) cost several µs each, twice or three times per verdict. Here a deadline is a
tuple in a queue: ``add`` appends ``(when, owner, token)``, and when the time comes
``owner.expired(token)`` is called; an owner that has moved on (answered, or waiting under a
newer token) ignores it, so nothing is ever cancelled.

Deadlines of one fixed delay (a ``lane``) are due in the order they were added, so a lane is
a plain FIFO; any other delay goes to a heap. Entries whose owner is done are dropped from
a lane's head as new ones arrive, and the loop's timer is armed only for the earliest entry
still wanted: with lookups answered in milliseconds it fires about once per delay, not once
per lookup.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import typing
from collections import deque


class Owner(typing.Protocol):
    """What waits on a deadline: ``live(token)`` while it still wants it, ``expired(token)``
    when it passes."""

    def live(self, token: int) -> bool: ...

    def expired(self, token: int) -> None: ...


# Due within this of now counts as due: loop timers are rounded to the millisecond.
_RESOLUTION = 0.001

Entry: typing.TypeAlias = "tuple[float, Owner, int]"


class Timers:
    """Deadlines on ``loop.time()``, each delivered once, at or after its time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, lanes: typing.Iterable[float] = ()) -> None:
        self._loop = loop
        self._lanes: dict[float, deque[Entry]] = {delay: deque() for delay in lanes}
        self._heap: list[tuple[float, int, Owner, int]] = []
        self._order = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = 0.0

    def add(self, delay: float, owner: Owner, token: int) -> None:
        """Call ``owner.expired(token)`` ``delay`` seconds from now, if still ``live`` then."""
        when = self._loop.time() + delay
        lane = self._lanes.get(delay)
        if lane is not None:
            while lane and not lane[0][1].live(lane[0][2]):
                lane.popleft()
            lane.append((when, owner, token))
            if len(lane) > 1:
                # An earlier entry of this lane is due first, and the timer covers it.
                if self._handle is not None and self._armed_at <= lane[0][0]:
                    return
                when = lane[0][0]
        else:
            heapq.heappush(self._heap, (when, next(self._order), owner, token))
        self._arm(when)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        for lane in self._lanes.values():
            lane.clear()
        self._heap.clear()

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            if self._armed_at <= when:
                return
            self._handle.cancel()
        self._armed_at = when
        self._handle = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        now = self._loop.time() + _RESOLUTION
        due: list[tuple[Owner, int]] = []
        earliest: float | None = None
        for lane in self._lanes.values():
            while lane:
                when, owner, token = lane[0]
                if not owner.live(token):
                    lane.popleft()
                    continue
                if when > now:
                    earliest = when if earliest is None else min(earliest, when)
                    break
                lane.popleft()
                due.append((owner, token))
        heap = self._heap
        while heap:
            when, _order, owner, token = heap[0]
            if not owner.live(token):
                heapq.heappop(heap)
                continue
            if when > now:
                earliest = when if earliest is None else min(earliest, when)
                break
            heapq.heappop(heap)
            due.append((owner, token))
        if earliest is not None:
            self._arm(earliest)
        for owner, token in due:
            if owner.live(token):
                owner.expired(token)
