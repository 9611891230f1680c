"""Deadlines on one event-loop timer: each delivered once, at or after its time, and only
while its owner still wants it."""

from __future__ import annotations

import asyncio

from s25rbl.resolve.timers import Timers


class Owner:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.token = 0
        self.fired: list[tuple[int, float]] = []

    def live(self, token: int) -> bool:
        return token == self.token

    def expired(self, token: int) -> None:
        self.fired.append((token, self.loop.time()))


async def test_a_deadline_is_delivered_once_at_or_after_its_time() -> None:
    loop = asyncio.get_running_loop()
    timers = Timers(loop, (0.05,))
    lane, other = Owner(loop), Owner(loop)
    start = loop.time()
    timers.add(0.05, lane, 0)  # a lane's delay
    timers.add(0.08, other, 0)  # any other: the heap
    await asyncio.sleep(0.2)
    assert [token for token, _at in lane.fired] == [0]
    assert [token for token, _at in other.fired] == [0]
    assert lane.fired[0][1] - start >= 0.05 - 0.002
    assert other.fired[0][1] - start >= 0.08 - 0.002
    timers.close()


async def test_an_owner_that_moved_on_is_not_told() -> None:
    loop = asyncio.get_running_loop()
    timers = Timers(loop, (0.03,))
    answered, waiting = Owner(loop), Owner(loop)
    timers.add(0.03, answered, 0)
    timers.add(0.03, waiting, 0)
    timers.add(0.05, answered, 0)
    answered.token = 1  # its answer came: the old deadlines no longer count
    await asyncio.sleep(0.15)
    assert answered.fired == []
    assert [token for token, _at in waiting.fired] == [0]
    timers.close()


async def test_later_deadlines_follow_earlier_ones_in_order() -> None:
    loop = asyncio.get_running_loop()
    timers = Timers(loop, (0.02,))
    owners = [Owner(loop) for _ in range(5)]
    for owner in owners:
        timers.add(0.02, owner, 0)
        if owner is owners[2]:
            owner.token = 1  # answered at once
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    times = [owner.fired[0][1] for owner in owners if owner.fired]
    assert [bool(owner.fired) for owner in owners] == [True, True, False, True, True]
    assert times == sorted(times)
    timers.close()


async def test_close_drops_every_deadline() -> None:
    loop = asyncio.get_running_loop()
    timers = Timers(loop, (0.02,))
    owner = Owner(loop)
    timers.add(0.02, owner, 0)
    timers.add(0.03, owner, 0)
    timers.close()
    await asyncio.sleep(0.08)
    assert owner.fired == []
