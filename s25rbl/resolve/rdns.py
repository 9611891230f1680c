"""Reverse lookups with forward confirmation: one deadline, shared in-flight work, lookup slots
shared fairly (``fairness``), and a cache bounded in bytes.

A PTR name is chosen by whoever controls the address, so it only counts once the name's own
A/AAAA records contain the address again (forward-confirmed).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections.abc import Callable

from s25rbl.clock import Clock, SystemClock
from s25rbl.lists.values import IPAddress
from s25rbl.resolve.codec import LookupResult, LookupStatus, Resolver
from s25rbl.resolve.confirm import Asker, Job, LookupStats, RdnsResult
from s25rbl.resolve.fairness import FairSlots, Ticket, prefix, querier_prefix
from s25rbl.resolve.timers import Timers

__all__ = ["MAX_CACHE_TTL", "TEMPFAIL_CACHE_TTL", "LookupStats", "RdnsResult", "ReverseLookup"]

log = logging.getLogger(__name__)

MAX_CACHE_TTL = 3600  # an hour: PTR data changes rarely, but a fixed pool gets reassigned
TEMPFAIL_CACHE_TTL = 5  # shields a failing upstream from a retry storm, yet recovers fast
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
# What a cache entry costs besides its result's tuples and strings (CPython 3.11, 64-bit): a
# dict slot (up to ~100 bytes just after the table doubled), the address object that keys it
# (an IPv6 one holds a larger int), the (expiry, result) tuple, the float, the result object.
_ENTRY_BYTES = 104 + 100 + sys.getsizeof((0.0, None)) + sys.getsizeof(0.0) + 96
_OVERLOADED = ("overloaded: too many lookups in flight",)

# Who waits for a lookup: the result and whether it came from the cache, or the exception.
Waiter = Callable[["RdnsResult | BaseException", bool], None]


class _Running:
    """A job in flight and everyone waiting for its result."""

    __slots__ = ("job", "ticket", "waiters")

    def __init__(self, job: Job, ticket: Ticket, waiter: Waiter) -> None:
        self.job = job
        self.ticket = ticket
        self.waiters = [waiter]


class ReverseLookup:
    """PTR + forward confirmation for one address at a time, for many addresses at once.

    At most ``max_inflight`` verdicts are looked up at once and as many more wait, shared
    fairly between queriers and target prefixes (``fairness``; one /24 or /64 holds at most
    ``per_prefix`` of them, by default an eighth); beyond that a lookup is answered
    "temporarily failed" at once. Results are kept for their TTL in at most ``cache_bytes``
    (and ``cache_size`` entries, if given; 0 in either: none kept).
    """

    def __init__(
        self,
        resolver: Resolver,
        *,
        deadline: float = 1.5,
        max_names: int = 5,
        max_inflight: int = 512,
        per_prefix: int | None = None,
        cache_size: int | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        clock: Clock | None = None,
        observe: Callable[[float, str], None] | None = None,
    ) -> None:
        self._resolver = resolver
        self._observe = observe
        self._deadline = deadline
        self._max_names = max_names
        self._max_entries = cache_size
        self._max_bytes = cache_bytes if cache_size != 0 else 0
        self.cache_bytes_used = 0
        self._clock = clock or SystemClock()
        # Insertion order is eviction order: the oldest eighth goes when full.
        self._cache: dict[IPAddress, tuple[float, RdnsResult]] = {}
        self._inflight: dict[IPAddress, _Running] = {}
        self._asker = Asker(resolver)
        self._timers: Timers | None = None
        share = per_prefix if per_prefix is not None else max(4, max_inflight // 8)
        self.slots = FairSlots(max_inflight, max_inflight, share)
        self.stats = LookupStats()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def cached(self, ip: IPAddress) -> RdnsResult | None:
        """The cached result, if fresh: lets the responder answer without awaiting anything."""
        item = self._cache.get(ip)
        if item is None:
            return None
        if item[0] <= self._clock.monotonic():
            self._forget(ip)
            return None
        self.stats.cache_hits += 1
        return item[1]

    def expires_at(self, ip: IPAddress, result: RdnsResult) -> float | None:
        """When the cached ``result`` for ``ip`` expires (clock.monotonic() time), or None if
        that very result is not cached: what is built from it must not outlive it."""
        item = self._cache.get(ip)
        if item is None or item[1] is not result:
            return None
        return item[0]

    async def close(self) -> None:
        for running in list(self._inflight.values()):
            running.job.abort()
            self._release(running)
            for waiter in running.waiters:
                waiter(asyncio.CancelledError(), False)
        if self._timers is not None:
            self._timers.close()
        await self._resolver.close()

    def start(self, ip: IPAddress, querier: str | None, waiter: Waiter) -> None:
        """The reverse lookup of ``ip`` for ``querier`` (the address of the DNS client that
        asked; None: asked from here, by the API or the CLI): ``waiter(result, cached)`` is
        called once, possibly before this returns; with the exception instead of a result if
        the lookup failed with one (a bug) or was given up (CancelledError)."""
        hit = self.cached(ip)
        if hit is not None:
            waiter(hit, True)
            return
        running = self._inflight.get(ip)
        if running is not None:
            self.stats.coalesced += 1
            running.waiters.append(waiter)
            return
        ticket = self.slots.enter(querier_prefix(querier) if querier is not None else None, prefix(ip))
        if ticket is None:
            # A flood of random addresses: answer "temporarily failed" at once rather than
            # queue without bound; the MTA defers and retries, which is the S25R way anyway.
            self.stats.overload += 1
            waiter(RdnsResult(tempfail=True, notes=_OVERLOADED), False)
            return
        job = Job(
            ip,
            self._asker,
            self.stats,
            self._clock,
            self._deadline,
            self._max_names,
            self._failure,
            self._done,
        )
        running = self._inflight[ip] = _Running(job, ticket, waiter)
        timers = self._timers
        if timers is None:
            timers = self._timers = Timers(asyncio.get_running_loop(), (self._deadline,))
        # The deadline covers the wait for a slot too: an answer late is an answer lost.
        job.arm(timers)
        future = ticket.future
        if future is None:
            job.run()
        else:
            future.add_done_callback(functools.partial(self._granted, running))

    def cancel(self, ip: IPAddress, waiter: Waiter) -> None:
        """``waiter`` no longer wants the result of ``ip``'s lookup; one nobody waits for stops
        and gives its slot back."""
        running = self._inflight.get(ip)
        if running is None or waiter not in running.waiters:
            return
        running.waiters.remove(waiter)
        if not running.waiters:
            running.job.abort()
            self._release(running)

    async def lookup(self, ip: IPAddress, querier: str | None = None) -> tuple[RdnsResult, bool]:
        """The reverse lookup of ``ip`` and whether it came from the cache; ``querier`` is the
        address of the DNS client that asked (None: asked from here, by the API or the CLI)."""
        future: asyncio.Future[tuple[RdnsResult, bool]] = asyncio.get_running_loop().create_future()
        waiter = functools.partial(_settle, future)
        self.start(ip, querier, waiter)
        try:
            return await future
        except asyncio.CancelledError:
            self.cancel(ip, waiter)
            raise

    def _granted(self, running: _Running, future: asyncio.Future[bool]) -> None:
        if running.job.done or self._inflight.get(running.job.ip) is not running:
            return
        if future.cancelled() or not future.result():
            # Its place in line went to a querier with fewer waiters (see fairness).
            self.stats.overload += 1
            running.job.abort()
            self._release(running)
            self._hand_out(running, RdnsResult(tempfail=True, notes=_OVERLOADED), False)
            return
        running.job.run()

    def _done(self, job: Job, result: RdnsResult, keep: bool) -> None:
        running = self._inflight.get(job.ip)
        if running is None or running.job is not job:
            return
        if job.error is None and self._observe is not None:
            self._observe(self._clock.monotonic() - job.start, job.outcome)
        self._release(running)
        if job.error is not None:
            for waiter in running.waiters:
                waiter(job.error, False)
            return
        if keep:
            self._store(job.ip, result)
        self._hand_out(running, result, False)

    def _release(self, running: _Running) -> None:
        self.slots.leave(running.ticket)
        if self._inflight.get(running.job.ip) is running:
            del self._inflight[running.job.ip]

    @staticmethod
    def _hand_out(running: _Running, result: RdnsResult, cached: bool) -> None:
        for waiter in running.waiters:
            try:
                waiter(result, cached)
            except Exception:
                log.exception("error handing a reverse lookup's result on")

    def _failure(self, result: LookupResult) -> str:
        """A temporary failure as a note says it: a timeout where the upstreams refused the
        queries (ICMP port unreachable) is reported as that refusal."""
        refusing = getattr(self._resolver, "refusing", None)
        if result.status is LookupStatus.TIMEOUT and refusing is not None and (where := refusing()):
            return f"refused by {', '.join(where)} (connection refused: no DNS server listens there)"
        return result.status.value

    def _store(self, ip: IPAddress, result: RdnsResult) -> None:
        if self._max_bytes <= 0:
            return
        ttl = TEMPFAIL_CACHE_TTL if result.tempfail else min(result.ttl, MAX_CACHE_TTL)
        if ttl <= 0:
            return
        if ip in self._cache:
            self._forget(ip)
        cost = _ENTRY_BYTES + result.size()
        if cost > self._max_bytes // 8:
            return  # a result that big (or a cache that small): not worth the room
        if self.cache_bytes_used + cost > self._max_bytes or (
            self._max_entries is not None and len(self._cache) >= self._max_entries
        ):
            self._evict(cost)
        self._cache[ip] = (self._clock.monotonic() + ttl, result)
        self.cache_bytes_used += cost

    def _forget(self, ip: IPAddress) -> None:
        self.cache_bytes_used -= _ENTRY_BYTES + self._cache.pop(ip)[1].size()

    def _evict(self, room: int) -> None:
        """Drop the oldest entries until an eighth of the room is free and ``room`` fits."""
        target = min(self._max_bytes - room, self._max_bytes - self._max_bytes // 8)
        entries = self._max_entries
        keep = len(self._cache) if entries is None else entries - max(1, entries // 8)
        freed = 0
        gone: list[IPAddress] = []
        for ip, (_expires, result) in self._cache.items():
            if self.cache_bytes_used - freed <= target and len(self._cache) - len(gone) <= keep:
                break
            gone.append(ip)
            freed += _ENTRY_BYTES + result.size()
        for ip in gone:
            del self._cache[ip]
        self.cache_bytes_used -= freed


def _settle(
    future: asyncio.Future[tuple[RdnsResult, bool]], result: RdnsResult | BaseException, cached: bool
) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        if isinstance(result, asyncio.CancelledError):
            future.cancel()
        else:
            future.set_exception(result)
    else:
        future.set_result((result, cached))
