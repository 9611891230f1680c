"""A node's policy memory: bounded caches, tarpit slots per MTA, tarpits counted as abandoned."""

from __future__ import annotations

import asyncio
import tracemalloc
import typing
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from s25rbl.config import LearningSettings
from s25rbl.policy import state as policy_state
from s25rbl.policy.decide import ClientTarpit, Session, TripletState
from s25rbl.policy.state import ABSENT, Lru, PolicyState
from s25rbl.service.policy import Applied, PolicyStore, TripletWrite, Write
from s25rbl.store.db import Store
from tests.support.clock import FakeClock

TARPIT = 10


async def _nothing() -> None:
    return None


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def state(tmp_path: Path, clock: FakeClock) -> Iterator[PolicyState]:
    # The store is never opened by these tests: memory only.
    store = PolicyStore(
        Store(f"sqlite:///{tmp_path / 'unused.db'}"),
        clock,
        LearningSettings(),
        learn_after=2,
        retry_window=86400,
        changed=_nothing,
    )
    yield PolicyState(store, clock, tarpit=TARPIT, max_tarpits=2, cache_size=3)


def test_a_cache_forgets_the_least_recently_used_beyond_its_size() -> None:
    cache: Lru[str, int] = Lru(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c"), len(cache)) == (1, None, 3, 2)


WORST = "2001:db8:1234:5678:9abc:def0:1234:5678 " + "i" * 64  # the longest session key
ENTRIES: list[tuple[str, Callable[[int], tuple[str, object]]]] = [
    ("triplet", lambda i: (f"{i:032x}", (TripletState(1e9 + i, 1e9 + i), 1e9 + i))),
    (
        "client",
        lambda i: (
            f"2001:db8:1234:5678:9abc:def0:{i >> 16:x}:{i & 0xFFFF:x}",
            (ClientTarpit("i" * 64, 1e9, False, False), 1e9 + i),
        ),
    ),
    ("session", lambda i: (f"{WORST}{i}", Session.TARPITTED)),
    ("pending-tarpit", lambda i: (f"{WORST}{i}", 1e9 + i)),
]


@pytest.mark.parametrize("make", [e[1] for e in ENTRIES], ids=[e[0] for e in ENTRIES])
def test_a_cache_entry_of_the_longest_kind_stays_under_500_bytes(
    make: Callable[[int], tuple[str, object]],
) -> None:
    count = 20_000
    cache: Lru[str, object] = Lru(count)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(count):
            cache.put(*make(i))
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown / count < 500, f"{grown / count:.0f} bytes per entry"


def test_an_mta_gets_max_tarpits_slots_freed_as_each_tarpit_ends(
    state: PolicyState, clock: FakeClock
) -> None:
    assert state.slot_free("mx1")
    state.remember_tarpit("192.0.2.1", "s1", "mx1", clock.now().timestamp())
    clock.advance(1)
    state.remember_tarpit("192.0.2.2", "s2", "mx1", clock.now().timestamp())
    assert not state.slot_free("mx1") and state.slot_free("mx2")  # slots are per MTA
    assert state.tarpits_in_progress() == 2
    clock.advance(TARPIT - 1)  # the first tarpit is over
    assert state.slot_free("mx1") and state.tarpits_in_progress() == 1


def test_no_slot_at_all_with_max_tarpits_zero(state: PolicyState) -> None:
    state.max_tarpits = 0
    assert not state.slot_free("mx1")


def test_a_tarpit_whose_session_never_reached_data_is_counted_abandoned_once(
    state: PolicyState, clock: FakeClock
) -> None:
    now = clock.now().timestamp()
    state.remember_tarpit("192.0.2.1", "hung-up", "mx1", now)
    state.remember_tarpit("192.0.2.2", "patient", "mx1", now)
    clock.advance(TARPIT)
    state.remember_session("192.0.2.2", "patient", Session.SURVIVED)
    assert state.abandoned_since() == 0  # still within the grace after the tarpit
    clock.advance(TARPIT + 1)
    assert state.abandoned_since() == 1
    assert state.abandoned_since() == 0


def test_a_client_without_tarpit_is_remembered_only_for_a_tarpit_long(
    state: PolicyState, clock: FakeClock
) -> None:
    state.clients.put("192.0.2.1", (ABSENT, clock.monotonic() + TARPIT))
    assert state.cached_client("192.0.2.1") is ABSENT
    clock.advance(TARPIT + 0.1)
    assert state.cached_client("192.0.2.1") is None  # read it again


def test_a_session_this_node_tarpitted_updates_the_client_it_remembers(
    state: PolicyState, clock: FakeClock
) -> None:
    state.remember_tarpit("192.0.2.1", "s1", "mx1", clock.now().timestamp())
    state.remember_session("192.0.2.1", "s1", Session.DELIVERED)
    record = state.cached_client("192.0.2.1")
    assert isinstance(record, ClientTarpit) and record.survived and record.delivered
    assert state.sessions.get("192.0.2.1 s1") is Session.DELIVERED


def test_a_passed_triplet_seen_again_is_written_back_at_most_hourly(
    state: PolicyState, clock: FakeClock
) -> None:
    state.remember_triplet("k", TripletState(1.0, 2.0))
    assert not state.should_touch("k")
    clock.advance(3600)
    assert state.should_touch("k") and not state.should_touch("k")


class _BatchesStore:
    """A store that records the batches it is given."""

    def __init__(self) -> None:
        self.batches: list[list[Write]] = []
        self.applied = asyncio.Event()

    async def read_clients(self, ips: list[str]) -> dict[str, ClientTarpit]:
        return {}

    async def read_triplets(self, keys: list[str]) -> dict[str, TripletState]:
        return {}

    async def apply(self, writes: list[Write]) -> Applied:
        self.batches.append(list(writes))
        self.applied.set()
        return Applied()


async def test_a_steady_stream_of_writes_is_committed_in_few_batches(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    monkeypatch.setattr(policy_state, "FLUSH_INTERVAL", 5.0)  # wide, however slow the machine
    store = _BatchesStore()
    state = PolicyState(typing.cast(PolicyStore, store), clock, tarpit=TARPIT, max_tarpits=2, cache_size=3)
    writes = [TripletWrite("touch", f"{i:032x}", 1e9 + i) for i in range(5)]
    runner = asyncio.create_task(state.run_writes())
    try:
        state.write(writes[0])  # after a quiet spell: committed at once (FLUSH_DELAY)
        await asyncio.wait_for(store.applied.wait(), 5)
        for write in writes[1:]:  # then more, each after the one before was answered
            await asyncio.sleep(policy_state.FLUSH_DELAY * 2)
            state.write(write)
        while sum(len(batch) for batch in store.batches) < len(writes):
            await asyncio.sleep(0.05)
    finally:
        runner.cancel()
    assert store.batches == [writes[:1], writes[1:]]  # not one batch per FLUSH_DELAY
