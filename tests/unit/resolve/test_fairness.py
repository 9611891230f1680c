"""Lookup slots shared fairly: by target prefix, by querier, and the reverse lookups that use them."""

from __future__ import annotations

import asyncio
import ipaddress
import random

import pytest

from s25rbl.resolve.codec import LookupStatus
from s25rbl.resolve.fairness import FairSlots, State, Ticket, prefix, querier_prefix
from s25rbl.resolve.rdns import ReverseLookup
from tests.unit.fakes import DictResolver


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.1", bytes([192, 0, 2])),
        ("192.0.2.254", bytes([192, 0, 2])),
        ("2001:db8:1:2:3:4:5:6", bytes.fromhex("20010db800010002")),
        ("2001:db8:1:2::ffff", bytes.fromhex("20010db800010002")),
    ],
    ids=["v4", "v4-same-24", "v6", "v6-same-64"],
)
def test_prefixes_are_the_24_and_the_64(address: str, key: bytes) -> None:
    assert prefix(ipaddress.ip_address(address)) == key
    assert querier_prefix(address) == key


def test_a_querier_that_is_no_address_is_its_own_group() -> None:
    assert querier_prefix("fe80::1%eth0") == bytes.fromhex("fe80000000000000")
    assert querier_prefix("not an address") == b"not an address"


async def test_one_target_prefix_holds_at_most_its_share() -> None:
    slots = FairSlots(slots=8, waiting=8, per_target=3)
    tickets = [slots.enter("q", b"flood") for _ in range(5)]
    assert [t is not None for t in tickets] == [True, True, True, False, False]
    assert slots.enter("q", b"other") is not None  # the other prefixes are untouched


async def test_a_full_room_refuses_the_querier_with_the_most_waiters() -> None:
    slots = FairSlots(slots=1, waiting=3, per_target=100)
    running = slots.enter("flood", 0)
    waiting = [slots.enter("flood", n) for n in range(1, 4)]
    assert running is not None and running.state is State.RUNNING
    assert all(t is not None and t.state is State.WAITING for t in waiting)
    assert slots.enter("flood", 99) is None  # its own waiters fill the room: refused


async def test_a_full_room_makes_place_for_a_querier_with_fewer_waiters() -> None:
    slots = FairSlots(slots=1, waiting=3, per_target=100)
    slots.enter("flood", 0)
    flood = [slots.enter("flood", n) for n in range(1, 4)]
    steady = slots.enter("steady", 100)
    assert steady is not None and steady.state is State.WAITING
    newest = flood[-1]
    assert newest is not None and newest.state is State.OUT
    assert await slots.wait(newest) is False  # displaced: answered "temporarily failed"
    assert slots.displaced == 1 and slots.waiting == 3


async def test_freed_slots_go_to_the_queriers_in_turn() -> None:
    slots = FairSlots(slots=1, waiting=10, per_target=100)
    first = slots.enter("flood", 0)
    assert first is not None
    order: list[str] = []

    async def one(querier: str, target: int) -> None:
        ticket = slots.enter(querier, target)
        assert ticket is not None
        assert await slots.wait(ticket)
        order.append(querier)
        await asyncio.sleep(0)
        slots.leave(ticket)

    tasks = [asyncio.create_task(one("flood", n)) for n in range(1, 6)]
    tasks += [asyncio.create_task(one("steady", n)) for n in range(100, 102)]
    await asyncio.sleep(0)
    slots.leave(first)
    await asyncio.gather(*tasks)
    assert order[:4] == ["flood", "steady", "flood", "steady"]
    assert slots.running == 0 and slots.waiting == 0


async def test_a_waiter_that_gives_up_leaves_the_line() -> None:
    slots = FairSlots(slots=1, waiting=2, per_target=100)
    running = slots.enter("a", 0)
    ticket = slots.enter("a", 1)
    assert running is not None and ticket is not None
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await slots.wait(ticket)
    slots.leave(ticket)
    assert slots.waiting == 0
    slots.leave(running)
    assert slots.running == 0 and not slots._targets


async def test_random_use_keeps_every_count_consistent() -> None:
    rng = random.Random(25)
    slots = FairSlots(slots=4, waiting=6, per_target=3)
    held: list[Ticket] = []
    for _ in range(5000):
        if held and rng.random() < 0.45:
            slots.leave(held.pop(rng.randrange(len(held))))
        else:
            ticket = slots.enter(rng.choice("abc"), rng.randrange(5))
            if ticket is not None:
                held.append(ticket)
        for ticket in [t for t in held if t.state is State.OUT]:  # displaced: told so, they leave
            slots.leave(ticket)
            held.remove(ticket)
        assert slots.running == sum(t.state is State.RUNNING for t in held) <= 4
        assert slots.waiting == sum(t.state is State.WAITING for t in held) <= 6
        assert sum(slots._targets.values()) == len(held)
        largest = max((len(q) for q in slots._queues.values()), default=0)
        assert slots._largest == largest
        if slots.waiting:
            assert slots.running == 4  # nobody waits while a slot is free


# --- reverse lookups under a flood --------------------------------------------------------------

STEADY = [f"203.0.113.{n}" for n in range(1, 21)]


def flooded_resolver() -> DictResolver:
    """Every PTR lookup takes a while; the steady addresses have real names."""
    resolver = DictResolver()
    resolver.delay = 0.05
    for address in STEADY:
        name = f"p{address.rsplit('.', 1)[1]}-ipad12.tokyo.ocn.ne.jp"
        resolver.ptr(address, name).host(name, address)
    return resolver


def random_in(network: str, rng: random.Random) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    net = ipaddress.ip_network(network)
    return net[rng.randrange(net.num_addresses)]


async def steady_verdicts_under(flood_querier: str, flood_network: str) -> tuple[list[bool], int]:
    """Lookups for STEADY from querier 192.0.2.1, one after the other, while ``flood_querier``
    keeps asking for random addresses of ``flood_network`` (20 every 2 ms): which of the
    steady lookups got a real answer, and how many flood lookups were refused."""
    rdns = ReverseLookup(flooded_resolver(), max_inflight=16, deadline=1.0)
    rng = random.Random(7)
    flood: set[asyncio.Task[object]] = set()
    done = asyncio.Event()

    async def flooding() -> None:
        while not done.is_set():
            for _ in range(20):
                task = asyncio.create_task(rdns.lookup(random_in(flood_network, rng), flood_querier))
                flood.add(task)
                task.add_done_callback(flood.discard)
            await asyncio.sleep(0.002)

    flooder = asyncio.create_task(flooding())
    await asyncio.sleep(0.05)
    answers: list[bool] = []
    for address in STEADY:
        result, _cached = await rdns.lookup(ipaddress.ip_address(address), "192.0.2.1")
        answers.append(not result.tempfail and result.confirmed != ())
    done.set()
    await flooder
    await asyncio.gather(*flood)
    return answers, rdns.stats.overload


@pytest.mark.parametrize(
    ("flood_querier", "flood_network"),
    [
        ("2001:db8:bad::1", "2001:db8:bad:1::/64"),  # another client, one /64 of targets
        ("2001:db8:bad::1", "100.64.0.0/10"),  # another client, targets everywhere
        ("192.0.2.1", "2001:db8:bad:1::/64"),  # the same client (a shared resolver), one /64
    ],
    ids=["other-querier-one-64", "other-querier-many-24s", "same-querier-one-64"],
)
async def test_a_flood_from_one_prefix_does_not_starve_other_clients(
    flood_querier: str, flood_network: str
) -> None:
    answers, refused = await steady_verdicts_under(flood_querier, flood_network)
    assert all(answers), answers
    assert refused > 1000  # the flood did overflow the slots


async def test_a_coalesced_lookup_survives_the_cancellation_of_the_first_asker() -> None:
    resolver = flooded_resolver()
    rdns = ReverseLookup(resolver, deadline=1.0)
    ip = ipaddress.ip_address(STEADY[0])
    first = asyncio.create_task(rdns.lookup(ip, "192.0.2.1"))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(rdns.lookup(ip, "192.0.2.2"))
    await asyncio.sleep(0.01)
    first.cancel()  # its client went away (a TCP connection closed)
    result, _cached = await second
    assert result.confirmed and not result.tempfail
    assert first.cancelled()


async def test_a_cancelled_lookup_gives_its_slot_back() -> None:
    resolver = DictResolver().fail("203.0.113.99", LookupStatus.TIMEOUT)
    resolver.delay = 10
    rdns = ReverseLookup(resolver, max_inflight=1, deadline=30)
    task = asyncio.create_task(rdns.lookup(ipaddress.ip_address("203.0.113.99")))
    await asyncio.sleep(0.01)
    assert rdns.slots.running == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rdns.slots.running == 0 and rdns.inflight == 0
