"""Reloading the lists from a real store: off the event loop, and never back to older lists."""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from collections.abc import AsyncIterator, Iterable

import pytest

from s25rbl.lists.values import EntryKind, EntryRow, EntrySpec, ListName
from s25rbl.node.sync import ListSync
from s25rbl.service import Services
from s25rbl.store.db import Store, migrate
from s25rbl.verdict.lists import ListIndex
from tests.support.clock import FakeClock

BUILD = ListIndex.build


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    await asyncio.to_thread(migrate, database_url)
    s = Store(database_url)
    try:
        yield s
    finally:
        await s.close()


async def blacklist(store: Store, clock: FakeClock, ip: str) -> None:
    await Services(store, clock).lists.add_one(EntrySpec(ListName.BLACK, EntryKind.IP, ip), actor="test")


def listed(sync: ListSync, ip: str) -> bool:
    return sync.current().black_address(ipaddress.ip_address(ip)) is not None


async def test_the_lists_are_built_off_the_event_loop(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # A build that waits for the event loop to do something: it would wait forever (here:
    # fail after 10 s) if it ran on the loop's own thread, as DNS would wait for a big build.
    clock = FakeClock()
    await blacklist(store, clock, "192.0.2.1")
    loop_ran = threading.Event()
    threads: list[threading.Thread] = []

    def build(rows: Iterable[EntryRow], version: int = 0) -> ListIndex:
        threads.append(threading.current_thread())
        assert loop_ran.wait(10), "the event loop did not run while the lists were being built"
        return BUILD(rows, version)

    monkeypatch.setattr(ListIndex, "build", staticmethod(build))
    sync = ListSync(store, clock, interval=3600)
    reload = asyncio.create_task(sync.reload())
    await asyncio.sleep(0)
    while not threads and not reload.done():  # the build has started ...
        await asyncio.sleep(0.01)
    loop_ran.set()  # ... and this coroutine still runs
    await reload
    assert threads != [threading.main_thread()]
    assert listed(sync, "192.0.2.1")


class HeldFirstBuild:
    """Patches ListIndex.build: the first build waits for ``release``; counts every build."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.release = threading.Event()
        self.builds = 0
        monkeypatch.setattr(ListIndex, "build", staticmethod(self._build))

    def _build(self, rows: Iterable[EntryRow], version: int = 0) -> ListIndex:
        self.builds += 1
        if self.builds == 1:
            assert self.release.wait(10)
        return BUILD(rows, version)

    async def first_reload(self, sync: ListSync) -> asyncio.Task[None]:
        """Start a reload and return once it has read the store and is held in its build."""
        task = asyncio.create_task(sync.reload())
        while self.builds == 0 and not task.done():
            await asyncio.sleep(0.01)
        return task


async def test_a_slow_reload_never_replaces_newer_lists(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    await blacklist(store, clock, "192.0.2.1")
    held = HeldFirstBuild(monkeypatch)
    sync = ListSync(store, clock, interval=3600)
    first = await held.first_reload(sync)  # it read the store before the second entry
    await blacklist(store, clock, "192.0.2.2")
    second = asyncio.create_task(sync.reload())  # as an API write does after its commit
    await asyncio.wait({second}, timeout=1)
    # Without one reload at a time, the second would have finished here with both entries,
    # and the first, released below, would then have put back the lists without 192.0.2.2.
    held.release.set()
    await asyncio.gather(first, second)
    assert listed(sync, "192.0.2.1") and listed(sync, "192.0.2.2")


async def test_reloads_asked_for_meanwhile_share_one_build(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A burst of writes, each followed by a reload (as the API does), while a reload is busy:
    # one more build serves them all, and it sees every write.
    clock = FakeClock()
    await blacklist(store, clock, "192.0.2.1")
    held = HeldFirstBuild(monkeypatch)
    sync = ListSync(store, clock, interval=3600)
    first = await held.first_reload(sync)
    burst = []
    for n in range(2, 7):
        await blacklist(store, clock, f"192.0.2.{n}")
        burst.append(asyncio.create_task(sync.reload()))
    await asyncio.sleep(0.1)
    held.release.set()
    await asyncio.gather(first, *burst)
    assert held.builds == 2
    assert all(listed(sync, f"192.0.2.{n}") for n in range(1, 7))
