"""Batched store reads: many requests' misses in one query, failures failing open at once."""

from __future__ import annotations

import asyncio

import pytest

from s25rbl.errors import StoreUnavailable
from s25rbl.policy.reads import BatchReader


class Store:
    """A stand-in for the store's batch read: records each query, answers from a dict."""

    def __init__(self, rows: dict[str, int], delay: float = 0.0, fail: bool = False) -> None:
        self.rows, self.delay, self.fail = rows, delay, fail
        self.queries: list[list[str]] = []

    async def read_many(self, keys: list[str]) -> dict[str, int]:
        self.queries.append(keys)
        await asyncio.sleep(self.delay)
        if self.fail:
            raise StoreUnavailable("database gone")
        return {k: self.rows[k] for k in keys if k in self.rows}


async def test_the_misses_of_many_requests_go_out_in_one_query() -> None:
    store = Store({"a": 1, "b": 2}, delay=0.01)
    reader = BatchReader(store.read_many, timeout=1.0)
    got = await asyncio.gather(*(reader.get(k) for k in ("a", "b", "c", "a", "b")))
    assert list(got) == [1, 2, None, 1, 2]
    assert store.queries == [["a", "b", "c"]]


async def test_keys_asked_while_a_query_is_out_go_in_the_next_one() -> None:
    store = Store({"a": 1, "b": 2, "c": 3})
    out, held = asyncio.Event(), asyncio.Event()  # the first query stays out until released

    async def first_held(keys: list[str]) -> dict[str, int]:
        if not out.is_set():
            out.set()
            await held.wait()
        return await store.read_many(keys)

    reader = BatchReader(first_held, timeout=5.0)
    first = asyncio.ensure_future(reader.get("a"))
    await out.wait()  # the first query is out now
    later = asyncio.gather(reader.get("a"), reader.get("b"), reader.get("c"))
    await asyncio.sleep(0)  # the later keys are asked
    held.set()
    assert (await first, list(await later)) == (1, [1, 2, 3])
    assert store.queries == [["a"], ["b", "c"]]  # "a" shared the query already out


@pytest.mark.parametrize(
    ("store", "timeout"),
    [(Store({}, fail=True), 1.0), (Store({}, delay=1.0), 0.02)],
    ids=["store-unavailable", "store-too-slow"],
)
async def test_a_failed_or_slow_query_fails_every_waiter_with_store_unavailable(
    store: Store, timeout: float
) -> None:
    reader = BatchReader(store.read_many, timeout=timeout)
    results = await asyncio.gather(reader.get("a"), reader.get("b"), return_exceptions=True)
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    store.fail, store.delay = False, 0.0
    assert await reader.get("a") is None  # and the next read is tried afresh


async def test_a_waiter_that_goes_away_leaves_the_query_to_the_others() -> None:
    store = Store({"a": 1}, delay=0.02)
    reader = BatchReader(store.read_many, timeout=1.0)
    impatient = asyncio.ensure_future(reader.get("a"))
    patient = asyncio.ensure_future(reader.get("a"))
    await asyncio.sleep(0.005)
    impatient.cancel()
    assert await patient == 1
