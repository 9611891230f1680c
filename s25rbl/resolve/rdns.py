"""Reverse lookups with forward confirmation: one deadline, shared in-flight work, a bounded cache.

A PTR name is chosen by whoever controls the address, so it only counts once the name's own
A/AAAA records contain the address again (forward-confirmed).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from s25rbl.clock import Clock, SystemClock
from s25rbl.lists.values import IPAddress
from s25rbl.resolve.codec import AAAA, PTR, A, LookupResult, LookupStatus, Resolver, reverse_name

log = logging.getLogger(__name__)

MAX_CACHE_TTL = 3600  # an hour: PTR data changes rarely, but a fixed pool gets reassigned
TEMPFAIL_CACHE_TTL = 5  # shields a failing upstream from a retry storm, yet recovers fast
_TEMPORARY = (LookupStatus.SERVFAIL, LookupStatus.TIMEOUT)


@dataclass(frozen=True, slots=True)
class RdnsResult:
    """The reverse lookup of one address: PTR names and which of them are forward-confirmed."""

    names: tuple[str, ...] = ()
    confirmed: tuple[str, ...] = ()
    tempfail: bool = False
    notes: tuple[str, ...] = ()
    ttl: int = 0


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
    """PTR + forward confirmation for one address at a time, for many addresses at once."""

    def __init__(
        self,
        resolver: Resolver,
        *,
        deadline: float = 1.5,
        max_names: int = 5,
        max_inflight: int = 512,
        cache_size: int = 200_000,
        clock: Clock | None = None,
        observe: Callable[[float, str], None] | None = None,
    ) -> None:
        self._resolver = resolver
        self._observe = observe
        self._deadline = deadline
        self._max_names = max_names
        self._max_inflight = max_inflight
        self._cache_size = cache_size
        self._clock = clock or SystemClock()
        self._cache: OrderedDict[IPAddress, tuple[float, RdnsResult]] = OrderedDict()
        self._inflight: dict[IPAddress, asyncio.Future[RdnsResult]] = {}
        self._slots = asyncio.Semaphore(max_inflight)
        self._waiting = 0
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
            del self._cache[ip]
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

    async def lookup(self, ip: IPAddress) -> tuple[RdnsResult, bool]:
        """The reverse lookup of ``ip`` and whether it came from the cache."""
        hit = self.cached(ip)
        if hit is not None:
            return hit, True
        pending = self._inflight.get(ip)
        if pending is not None:
            self.stats.coalesced += 1
            return await asyncio.shield(pending), False
        if self._slots.locked() and self._waiting >= self._max_inflight:
            # A flood of random addresses: answer "temporarily failed" at once rather than
            # queue without bound; the MTA defers and retries, which is the S25R way anyway.
            self.stats.overload += 1
            return RdnsResult(tempfail=True, notes=("overloaded: too many lookups in flight",)), False
        future: asyncio.Future[RdnsResult] = asyncio.get_running_loop().create_future()
        self._inflight[ip] = future
        try:
            result = await self._run(ip)
            future.set_result(result)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._inflight[ip]
        self._store(ip, result)
        return result, False

    async def _run(self, ip: IPAddress) -> RdnsResult:
        start = self._clock.monotonic()
        waiting = True
        self._waiting += 1
        try:
            # The deadline covers the wait for a slot too: an answer late is an answer lost.
            async with asyncio.timeout(self._deadline):
                async with self._slots:
                    self._waiting -= 1
                    waiting = False
                    self.stats.fresh += 1
                    result = await self._resolve(ip)
            if self._observe is not None:
                outcome = (
                    "tempfail" if result.tempfail else "confirmed" if result.confirmed else "unconfirmed"
                )
                self._observe(self._clock.monotonic() - start, outcome)
            return result
        except TimeoutError:
            self.stats.deadline += 1
            self.stats.tempfail += 1
            elapsed = self._clock.monotonic() - start
            if self._observe is not None:
                self._observe(elapsed, "deadline")
            note = f"deadline of {self._deadline:g} s passed after {elapsed:.2f} s"
            return RdnsResult(tempfail=True, notes=(note,))
        finally:
            if waiting:
                self._waiting -= 1

    async def _resolve(self, ip: IPAddress) -> RdnsResult:
        try:
            ptr = await self._resolver.lookup(reverse_name(ip), PTR)
        except ValueError as exc:
            return RdnsResult(notes=(f"PTR lookup impossible: {exc}",))
        if ptr.status in _TEMPORARY:
            self.stats.tempfail += 1
            return RdnsResult(tempfail=True, notes=(f"PTR lookup: {ptr.status.value}",))
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
                notes.append(f"{name}: forward lookup {result.status.value}")
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

    async def _forward(self, name: str, rdtype: int) -> LookupResult | None:
        try:
            return await self._resolver.lookup(name, rdtype)
        except ValueError:
            return None

    def _store(self, ip: IPAddress, result: RdnsResult) -> None:
        if self._cache_size <= 0:
            return
        ttl = TEMPFAIL_CACHE_TTL if result.tempfail else min(result.ttl, MAX_CACHE_TTL)
        if ttl <= 0:
            return
        self._cache[ip] = (self._clock.monotonic() + ttl, result)
        self._cache.move_to_end(ip)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


def _contains(result: LookupResult, ip: IPAddress) -> bool:
    for value in result.values:
        try:
            if ipaddress.ip_address(value) == ip:
                return True
        except ValueError:
            continue
    return False
