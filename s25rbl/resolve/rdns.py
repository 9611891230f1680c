"""Reverse lookups with forward confirmation: one deadline, shared in-flight work, lookup slots
shared fairly (``fairness``), and a cache bounded in bytes.

A PTR name is chosen by whoever controls the address, so it only counts once the name's own
A/AAAA records contain the address again (forward-confirmed).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass

from s25rbl.clock import Clock, SystemClock
from s25rbl.lists.values import IPAddress
from s25rbl.resolve.codec import AAAA, PTR, A, LookupResult, LookupStatus, Resolver, reverse_name
from s25rbl.resolve.fairness import FairSlots, Ticket, prefix, querier_prefix

log = logging.getLogger(__name__)

MAX_CACHE_TTL = 3600  # an hour: PTR data changes rarely, but a fixed pool gets reassigned
TEMPFAIL_CACHE_TTL = 5  # shields a failing upstream from a retry storm, yet recovers fast
_TEMPORARY = (LookupStatus.SERVFAIL, LookupStatus.TIMEOUT)
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
# What a cache entry costs besides its result's tuples and strings (CPython 3.11, 64-bit): a
# dict slot (up to ~100 bytes just after the table doubled), the address object that keys it
# (an IPv6 one holds a larger int), the (expiry, result) tuple, the float, the result object.
_ENTRY_BYTES = 104 + 100 + sys.getsizeof((0.0, None)) + sys.getsizeof(0.0) + 96
_OVERLOADED = ("overloaded: too many lookups in flight",)


@dataclass(frozen=True, slots=True)
class RdnsResult:
    """The reverse lookup of one address: PTR names and which of them are forward-confirmed."""

    names: tuple[str, ...] = ()
    confirmed: tuple[str, ...] = ()
    tempfail: bool = False
    notes: tuple[str, ...] = ()
    ttl: int = 0

    def size(self) -> int:
        """Roughly what this result holds in memory, in bytes (its tuples and strings)."""
        strings = {id(text): text for part in (self.names, self.confirmed, self.notes) for text in part}
        tuples = sum(sys.getsizeof(part) for part in (self.names, self.confirmed, self.notes) if part)
        return tuples + sum(sys.getsizeof(text) for text in strings.values())


@dataclass(slots=True)
class LookupStats:
    """How reverse lookups ended, counted since start."""

    fresh: int = 0
    cache_hits: int = 0
    coalesced: int = 0
    tempfail: int = 0
    overload: int = 0
    deadline: int = 0


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
        self._inflight: dict[IPAddress, asyncio.Future[RdnsResult]] = {}
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
        for future in self._inflight.values():
            future.cancel()
        await self._resolver.close()

    async def lookup(self, ip: IPAddress, querier: str | None = None) -> tuple[RdnsResult, bool]:
        """The reverse lookup of ``ip`` and whether it came from the cache; ``querier`` is the
        address of the DNS client that asked (None: asked from here, by the API or the CLI)."""
        hit = self.cached(ip)
        if hit is not None:
            return hit, True
        pending = self._inflight.get(ip)
        if pending is not None:
            self.stats.coalesced += 1
            try:
                return await asyncio.shield(pending), False
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not pending.cancelled() or (task is not None and task.cancelling()):
                    raise
                # The lookup we joined was cancelled with the client that started it (its
                # connection closed): this one still wants the answer, so it asks again.
                return await self.lookup(ip, querier)
        ticket = self.slots.enter(querier_prefix(querier) if querier is not None else None, prefix(ip))
        if ticket is None:
            # A flood of random addresses: answer "temporarily failed" at once rather than
            # queue without bound; the MTA defers and retries, which is the S25R way anyway.
            self.stats.overload += 1
            return RdnsResult(tempfail=True, notes=_OVERLOADED), False
        future: asyncio.Future[RdnsResult] = asyncio.get_running_loop().create_future()
        self._inflight[ip] = future
        try:
            result, keep = await self._run(ip, ticket)
            future.set_result(result)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._inflight[ip]
        if keep:
            self._store(ip, result)
        return result, False

    async def _run(self, ip: IPAddress, ticket: Ticket) -> tuple[RdnsResult, bool]:
        """The lookup once it holds a slot, and whether its result may be cached."""
        start = self._clock.monotonic()
        try:
            # The deadline covers the wait for a slot too: an answer late is an answer lost.
            async with asyncio.timeout(self._deadline):
                if not await self.slots.wait(ticket):
                    # Its place in line went to a querier with fewer waiters (see fairness).
                    self.stats.overload += 1
                    return RdnsResult(tempfail=True, notes=_OVERLOADED), False
                self.stats.fresh += 1
                result = await self._resolve(ip)
            if self._observe is not None:
                outcome = (
                    "tempfail" if result.tempfail else "confirmed" if result.confirmed else "unconfirmed"
                )
                self._observe(self._clock.monotonic() - start, outcome)
            return result, True
        except TimeoutError:
            self.stats.deadline += 1
            self.stats.tempfail += 1
            elapsed = self._clock.monotonic() - start
            if self._observe is not None:
                self._observe(elapsed, "deadline")
            note = f"deadline of {self._deadline:g} s passed after {elapsed:.2f} s"
            return RdnsResult(tempfail=True, notes=(note,)), True
        finally:
            self.slots.leave(ticket)

    async def _resolve(self, ip: IPAddress) -> RdnsResult:
        try:
            ptr = await self._resolver.lookup(reverse_name(ip), PTR)
        except ValueError as exc:
            return RdnsResult(notes=(f"PTR lookup impossible: {exc}",))
        if ptr.status in _TEMPORARY:
            self.stats.tempfail += 1
            return RdnsResult(tempfail=True, notes=(f"PTR lookup: {self._failure(ptr)}",))
        if ptr.status is not LookupStatus.OK or not ptr.values:
            return RdnsResult(notes=(f"PTR lookup: {ptr.status.value}",), ttl=ptr.ttl)
        names = tuple(dict.fromkeys(n.lower().rstrip(".") for n in ptr.values if n.strip(".")))
        notes: list[str] = []
        if len(names) > self._max_names:
            notes.append(f"{len(names)} PTR names; only the first {self._max_names} were checked")
            names = names[: self._max_names]
        rdtype = A if ip.version == 4 else AAAA
        forward = await asyncio.gather(*(self._forward(name, rdtype) for name in names))
        confirmed: list[str] = []
        ttl = ptr.ttl
        temporary = False
        for name, result in zip(names, forward, strict=True):
            if result is None:
                notes.append(f"{name}: not a name that can be looked up")
                continue
            if result.status in _TEMPORARY:
                temporary = True
                notes.append(f"{name}: forward lookup {self._failure(result)}")
                continue
            ttl = min(ttl, result.ttl)
            if result.status is LookupStatus.OK and _contains(result, ip):
                confirmed.append(name)
            else:
                notes.append(f"{name}: forward lookup does not give {ip} ({result.status.value})")
        if temporary and not confirmed:
            self.stats.tempfail += 1
            return RdnsResult(names=names, tempfail=True, notes=tuple(notes))
        return RdnsResult(names=names, confirmed=tuple(confirmed), notes=tuple(notes), ttl=ttl)

    def _failure(self, result: LookupResult) -> str:
        """A temporary failure as a note says it: a timeout where the upstreams refused the
        queries (ICMP port unreachable) is reported as that refusal."""
        refusing = getattr(self._resolver, "refusing", None)
        if result.status is LookupStatus.TIMEOUT and refusing is not None and (where := refusing()):
            return f"refused by {', '.join(where)} (connection refused: no DNS server listens there)"
        return result.status.value

    async def _forward(self, name: str, rdtype: int) -> LookupResult | None:
        try:
            return await self._resolver.lookup(name, rdtype)
        except ValueError:
            return None

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


def _contains(result: LookupResult, ip: IPAddress) -> bool:
    for value in result.values:
        try:
            if ipaddress.ip_address(value) == ip:
                return True
        except ValueError:
            continue
    return False
