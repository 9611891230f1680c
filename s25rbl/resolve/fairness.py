"""Lookup slots shared fairly, so a flood from one prefix cannot starve everyone else.

A reverse lookup belongs to a *querier* (the DNS client that asked: its /24 or /64) and a
*target* (the address looked up: its /24 or /64). At most ``slots`` lookups run at once and
``waiting`` more may wait for a slot (the deadline covers the wait). Three rules share them:

- one target prefix holds at most ``per_target`` of them, running and waiting together
  (an IPv6 /64 supplies random addresses without end: its flood is capped where it starts);
- a freed slot goes to the queriers with waiters in turn, each one's oldest waiter first;
- when the waiting room is full, an arrival takes the place of the newest waiter of the
  querier with the most waiters, if that querier would still have at least as many as the
  arrival's; otherwise the arrival is refused.

A refused or displaced lookup is answered "temporarily failed" (code .5) at once. Plain
code, no I/O: ``rdns`` drives it, the unit tests drive it directly.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import ipaddress
from collections import OrderedDict
from collections.abc import Hashable

from s25rbl.lists.values import IPAddress


def prefix(ip: IPAddress) -> bytes:
    """The /24 of an IPv4 address, the /64 of an IPv6 address, as a dictionary key."""
    return ip.packed[:3] if ip.version == 4 else ip.packed[:8]


@functools.lru_cache(maxsize=4096)
def querier_prefix(host: str) -> bytes:
    """The /24 or /64 of a DNS client's address as the socket gives it (``"192.0.2.1"``,
    ``"2001:db8::1"``, possibly with a ``%scope``); the text itself if it is no address.
    Kept for the last 4,096 clients: parsing the text cost a few µs of each fresh verdict."""
    try:
        return prefix(ipaddress.ip_address(host.partition("%")[0]))
    except ValueError:
        return host.encode()


class State(enum.Enum):
    """Where a ticket is: waiting for a slot, holding one, or neither (refused or left)."""

    WAITING = "waiting"
    RUNNING = "running"
    OUT = "out"


class Ticket:
    """One lookup's claim on a slot: who asked, for which prefix, and where it stands."""

    __slots__ = ("future", "querier", "state", "target")

    def __init__(self, querier: Hashable, target: Hashable) -> None:
        self.querier = querier
        self.target = target
        self.state = State.OUT
        self.future: asyncio.Future[bool] | None = None


class FairSlots:
    """``slots`` lookups at once, ``waiting`` more in line, shared as the module says."""

    def __init__(self, slots: int, waiting: int, per_target: int) -> None:
        if slots < 1 or waiting < 0 or per_target < 1:
            raise ValueError("slots and per_target must be at least 1, waiting at least 0")
        self.slots = slots
        self.max_waiting = waiting
        self.per_target = per_target
        self.running = 0
        self.waiting = 0
        self.refused = 0  # at the door: a full prefix, or a full waiting room
        self.displaced = 0  # waiters whose place went to another querier
        self._targets: dict[Hashable, int] = {}  # tickets (running or waiting) per target
        self._queues: OrderedDict[Hashable, OrderedDict[Ticket, None]] = OrderedDict()  # turn order
        self._by_size: dict[int, dict[Hashable, None]] = {}  # queriers by their number of waiters
        self._largest = 0

    def enter(self, querier: Hashable, target: Hashable) -> Ticket | None:
        """A ticket, running or waiting (``wait`` says when it runs), or None if refused."""
        held = self._targets.get(target, 0)
        if held >= self.per_target:
            self.refused += 1
            return None
        ticket = Ticket(querier, target)
        if self.running < self.slots and not self.waiting:
            ticket.state = State.RUNNING
            self.running += 1
        elif self.waiting < self.max_waiting or self._displace_for(querier):
            ticket.future = asyncio.get_running_loop().create_future()
            self._enqueue(ticket)
        else:
            self.refused += 1
            return None
        self._targets[target] = held + 1
        return ticket

    async def wait(self, ticket: Ticket) -> bool:
        """True once the ticket holds a slot; False if its place was given to another querier."""
        if ticket.state is State.RUNNING:
            return True
        assert ticket.future is not None
        return await ticket.future

    def leave(self, ticket: Ticket) -> None:
        """Give back what the ticket holds (a slot, or a place in line); always call it once."""
        if ticket.state is State.RUNNING:
            self.running -= 1
            self._grant()
        elif ticket.state is State.WAITING:
            self._dequeue(ticket)
        ticket.state = State.OUT
        held = self._targets[ticket.target] - 1
        if held:
            self._targets[ticket.target] = held
        else:
            del self._targets[ticket.target]

    # --- the line ------------------------------------------------------------------------

    def _grant(self) -> None:
        while self.running < self.slots and self._queues:
            querier, queue = next(iter(self._queues.items()))
            ticket = next(iter(queue))
            self._dequeue(ticket)
            if querier in self._queues:
                self._queues.move_to_end(querier)  # its next waiter waits for the others' turn
            ticket.state = State.RUNNING
            self.running += 1
            assert ticket.future is not None
            if not ticket.future.done():
                ticket.future.set_result(True)

    def _displace_for(self, querier: Hashable) -> bool:
        """Make room in the full waiting room for ``querier`` if fairness allows (see above)."""
        queue = self._queues.get(querier)
        mine = len(queue) if queue is not None else 0
        if self._largest < mine + 2:
            return False
        victim_querier = next(iter(self._by_size[self._largest]))
        victim = next(reversed(self._queues[victim_querier]))
        self._dequeue(victim)
        victim.state = State.OUT  # its leave() then only gives back its target's share
        self.displaced += 1
        assert victim.future is not None
        if not victim.future.done():
            victim.future.set_result(False)
        return True

    def _enqueue(self, ticket: Ticket) -> None:
        queue = self._queues.get(ticket.querier)
        if queue is None:
            queue = self._queues[ticket.querier] = OrderedDict()
        size = len(queue)
        queue[ticket] = None
        ticket.state = State.WAITING
        self.waiting += 1
        self._resize(ticket.querier, size, size + 1)

    def _dequeue(self, ticket: Ticket) -> None:
        queue = self._queues[ticket.querier]
        size = len(queue)
        del queue[ticket]
        if not queue:
            del self._queues[ticket.querier]
        self.waiting -= 1
        self._resize(ticket.querier, size, size - 1)

    def _resize(self, querier: Hashable, old: int, new: int) -> None:
        """Keep ``_by_size`` and ``_largest`` (the most waiters any querier has) in step."""
        if old:
            bucket = self._by_size[old]
            del bucket[querier]
            if not bucket:
                del self._by_size[old]
                if self._largest == old and new < old:
                    self._largest = new
        if new:
            self._by_size.setdefault(new, {})[querier] = None
            self._largest = max(self._largest, new)
