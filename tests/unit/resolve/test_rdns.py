"""Reverse lookups: forward confirmation, caching by upstream TTL, bounds, coalescing."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import sys
from collections.abc import Callable

import pytest

from s25rbl.resolve.codec import PTR, LookupStatus
from s25rbl.resolve.rdns import RdnsResult, ReverseLookup
from tests.support.clock import FakeClock
from tests.unit.fakes import DictResolver

IP = ipaddress.ip_address("203.0.113.7")
NAME = "p1234-ipad12.tokyo.ocn.ne.jp"


def ptr_calls(resolver: DictResolver) -> int:
    return sum(1 for call in resolver.calls if call[1] == PTR)


async def test_result_is_cached_for_the_upstream_ttl_and_no_longer() -> None:
    resolver = DictResolver().ptr(str(IP), NAME).host(NAME, str(IP))
    resolver.ttl = 120
    clock = FakeClock()
    rdns = ReverseLookup(resolver, clock=clock)
    first, cached = await rdns.lookup(IP)
    assert not cached and first.confirmed == (NAME,) and first.ttl == 120
    clock.advance(119)
    assert (await rdns.lookup(IP))[1] is True
    clock.advance(2)
    assert (await rdns.lookup(IP))[1] is False
    assert ptr_calls(resolver) == 2


async def test_nxdomain_is_cached_too() -> None:
    resolver = DictResolver()
    clock = FakeClock()
    rdns = ReverseLookup(resolver, clock=clock)
    result, _ = await rdns.lookup(IP)
    assert result.names == () and not result.tempfail
    clock.advance(30)  # DictResolver gives negative answers a TTL of 60
    assert (await rdns.lookup(IP))[1] is True
    assert ptr_calls(resolver) == 1


async def test_temporary_failure_is_remembered_only_briefly() -> None:
    resolver = DictResolver().fail(str(IP), LookupStatus.SERVFAIL)
    clock = FakeClock()
    rdns = ReverseLookup(resolver, clock=clock)
    assert (await rdns.lookup(IP))[0].tempfail
    clock.advance(4)
    assert (await rdns.lookup(IP))[1] is True
    clock.advance(2)
    assert (await rdns.lookup(IP))[1] is False


async def test_ttl_zero_is_not_cached() -> None:
    resolver = DictResolver().ptr(str(IP), NAME).host(NAME, str(IP))
    resolver.ttl = 0
    rdns = ReverseLookup(resolver, clock=FakeClock())
    await rdns.lookup(IP)
    assert rdns.cached(IP) is None


async def test_cache_is_bounded_oldest_first() -> None:
    resolver = DictResolver()
    rdns = ReverseLookup(resolver, cache_size=10, clock=FakeClock())
    addresses = [ipaddress.ip_address(f"192.0.2.{n}") for n in range(25)]
    for address in addresses:
        await rdns.lookup(address)
    assert len(rdns._cache) == 10
    assert rdns.cached(addresses[0]) is None
    assert rdns.cached(addresses[-1]) is not None


async def test_concurrent_lookups_of_one_address_share_one_upstream_query() -> None:
    resolver = DictResolver().ptr(str(IP), NAME).host(NAME, str(IP))
    resolver.delay = 0.05
    rdns = ReverseLookup(resolver)
    results = await asyncio.gather(*(rdns.lookup(IP) for _ in range(50)))
    assert {r[0].confirmed for r in results} == {(NAME,)}
    assert ptr_calls(resolver) == 1
    assert rdns.stats.coalesced == 49


async def test_flood_beyond_the_inflight_bound_answers_tempfail_at_once() -> None:
    resolver = DictResolver()
    resolver.delay = 0.2
    # One /24 may hold every slot here (per_prefix=40): this is about the total bound.
    rdns = ReverseLookup(resolver, max_inflight=5, per_prefix=40, deadline=2.0)
    addresses = [ipaddress.ip_address(f"198.51.100.{n}") for n in range(40)]
    results = await asyncio.gather(*(rdns.lookup(a) for a in addresses))
    overloaded = [r for r, _ in results if r.tempfail and "overloaded" in r.notes[0]]
    assert len(overloaded) == 40 - 10  # 5 running and 5 waiting; the rest refused at once
    assert ptr_calls(resolver) == 10  # the refused ones never reached the upstream
    assert rdns.stats.overload == 30


async def test_only_the_first_max_names_are_checked() -> None:
    names = [f"host{n}.example.org" for n in range(8)]
    resolver = DictResolver().ptr(str(IP), *names)
    for name in names:
        resolver.host(name, str(IP))
    result, _ = await ReverseLookup(resolver, max_names=3).lookup(IP)
    assert result.confirmed == tuple(names[:3])
    assert "only the first 3" in result.notes[0]


async def test_forward_failure_with_another_name_confirmed_is_not_tempfail() -> None:
    resolver = DictResolver().ptr(str(IP), "a.example.org", "b.example.org").host("a.example.org", str(IP))
    resolver.fail("b.example.org", LookupStatus.TIMEOUT)
    result, _ = await ReverseLookup(resolver).lookup(IP)
    assert not result.tempfail
    assert result.confirmed == ("a.example.org",)
    assert any("b.example.org: forward lookup timeout" in note for note in result.notes)


def deep_size(obj: object, seen: set[int] | None = None) -> int:
    """The bytes ``obj`` holds: itself and, for containers, addresses and results, all it refers to."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        return size + sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    if isinstance(obj, tuple):
        return size + sum(deep_size(item, seen) for item in obj)
    if isinstance(obj, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return size + sys.getsizeof(int(obj))
    if isinstance(obj, RdnsResult):
        return size + sum(deep_size(getattr(obj, f.name), seen) for f in dataclasses.fields(obj))
    return size


CACHE_MIXES = [
    ("no-ptr", lambda r, ip: r),
    ("confirmed", lambda r, ip: r.ptr(ip, f"p{ip}.pool.example").host(f"p{ip}.pool.example", ip)),
    ("three-unconfirmed", lambda r, ip: r.ptr(ip, *(f"h{n}-{ip}.example.net" for n in range(3)))),
]


@pytest.mark.parametrize("setup", [m[1] for m in CACHE_MIXES], ids=[m[0] for m in CACHE_MIXES])
async def test_cache_is_bounded_in_bytes(setup: Callable[[DictResolver, str], DictResolver]) -> None:
    resolver = DictResolver()
    addresses = [f"10.0.{n >> 8}.{n & 255}" for n in range(3000)]
    for address in addresses:
        setup(resolver, address)
    rdns = ReverseLookup(resolver, cache_bytes=256 * 1024, clock=FakeClock())
    for address in addresses:
        await rdns.lookup(ipaddress.ip_address(address))
    held = deep_size(rdns._cache)
    assert held <= 256 * 1024
    assert rdns.cache_bytes_used <= 256 * 1024
    assert len(rdns._cache) > 200  # yet it keeps what fits
    assert rdns.cached(ipaddress.ip_address(addresses[-1])) is not None
    assert rdns.cached(ipaddress.ip_address(addresses[0])) is None  # the oldest went first
