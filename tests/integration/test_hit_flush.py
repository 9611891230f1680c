"""Hit counts written in slices, on a real SQLite file and a real PostgreSQL database: every
slice is either stored or put back into the counter, never both, whatever fails and whenever
the writer is stopped; and the driver-level write stores what SQLAlchemy's binds stored."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select

import s25rbl.node.sync as sync_module
from s25rbl.errors import StoreUnavailable
from s25rbl.lists.values import EntryKind, EntrySource, EntrySpec, ListName
from s25rbl.node.sync import ListSync
from s25rbl.service import Services
from s25rbl.store.db import Store, migrate
from s25rbl.store.entries import EntryRepository
from s25rbl.store.models import Entry
from s25rbl.verdict.hits import HitCounter
from tests.support.clock import FakeClock

ENTRIES = 10
SLICE = 3  # 10 entries: slices of 3, 3, 3 and 1


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    await asyncio.to_thread(migrate, database_url)
    s = Store(database_url)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture(autouse=True)
def small_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sync_module, "HITS_SLICE", SLICE)


async def entries(store: Store, clock: FakeClock) -> list[int]:
    lists = Services(store, clock).lists
    ids = []
    for n in range(ENTRIES):
        spec = EntrySpec(ListName.BLACK, EntryKind.IP, f"192.0.2.{n + 1}")
        ids.append((await lists.add_one(spec, actor="test")).id)
    return ids


def counted(clock: FakeClock, ids: list[int]) -> HitCounter:
    hits = HitCounter(clock)
    for n, entry_id in enumerate(ids):
        for _ in range(n + 1):  # entry n: n + 1 hits
            hits.hit_entry(entry_id)
    return hits


async def stored(store: Store) -> dict[int, int]:
    async with store.transaction() as session:
        rows = await session.execute(select(Entry.id, Entry.hit_count))
        return {entry_id: count for entry_id, count in rows.all()}


def pending(hits: HitCounter) -> dict[int, int]:
    return {entry_id: count for entry_id, (count, _last) in hits.take().items()}


def failing_on(call: int, monkeypatch: pytest.MonkeyPatch, error: BaseException) -> list[int]:
    """record_hits writes every slice, and raises ``error`` after writing the ``call``-th one
    (so a transaction that is not rolled back would keep its hits)."""
    real = EntryRepository.record_hits
    calls = [0]

    async def flaky(self: EntryRepository, *args: object, **kwargs: object) -> None:
        calls[0] += 1
        await real(self, *args, **kwargs)  # type: ignore[arg-type]
        if calls[0] == call:
            raise error

    monkeypatch.setattr(EntryRepository, "record_hits", flaky)
    return calls


async def test_a_flush_writes_every_slice_once(store: Store) -> None:
    clock = FakeClock()
    ids = await entries(store, clock)
    hits = counted(clock, ids)
    await ListSync(store, clock, interval=3600).flush_hits(hits)
    assert await stored(store) == {entry_id: n + 1 for n, entry_id in enumerate(ids)}
    assert pending(hits) == {}


@pytest.mark.parametrize(
    "error", [StoreUnavailable("the database went away"), RuntimeError("something nobody expected")]
)
async def test_a_failed_slice_is_put_back_with_the_rest_and_written_once_later(
    store: Store, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    clock = FakeClock()
    ids = await entries(store, clock)
    hits = counted(clock, ids)
    calls = failing_on(2, monkeypatch, error)
    sync = ListSync(store, clock, interval=3600)
    if isinstance(error, StoreUnavailable):
        await sync.flush_hits(hits)
    else:
        with pytest.raises(RuntimeError):
            await sync.flush_hits(hits)
    assert calls[0] == 2  # nothing was tried after the failed slice
    after_failure = await stored(store)
    written = {i for i, count in after_failure.items() if count}
    assert len(written) == SLICE  # the first slice only: the failed one was rolled back
    hits.hit_entry(ids[0])  # counted meanwhile
    expected = {entry_id: n + 1 for n, entry_id in enumerate(ids)}
    left = pending(hits)
    assert left == {
        entry_id: expected[entry_id] - after_failure[entry_id] + (entry_id == ids[0])
        for entry_id in ids
        if entry_id not in written or entry_id == ids[0]
    }
    for entry_id, count in left.items():  # put back for the next flush
        for _ in range(count):
            hits.hit_entry(entry_id)
    await sync.flush_hits(hits)
    expected[ids[0]] += 1
    assert await stored(store) == expected


async def test_a_stopped_flush_finishes_its_slice_and_keeps_the_rest(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    ids = await entries(store, clock)
    hits = counted(clock, ids)
    real = EntryRepository.record_hits
    in_second, release = asyncio.Event(), asyncio.Event()
    calls = 0

    async def slow(self: EntryRepository, *args: object, **kwargs: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            in_second.set()
            await release.wait()
        await real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(EntryRepository, "record_hits", slow)
    sync = ListSync(store, clock, interval=3600)
    task = asyncio.create_task(sync.flush_hits(hits))
    await in_second.wait()
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done()  # waits for the slice in flight
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == 2
    assert len([c for c in (await stored(store)).values() if c]) == 2 * SLICE
    await sync.flush_hits(hits)  # what the node does last when it stops
    assert await stored(store) == {entry_id: n + 1 for n, entry_id in enumerate(ids)}


async def test_the_written_times_are_the_ones_sqlalchemy_binds_find(store: Store) -> None:
    clock = FakeClock()
    (entry_id, *_rest) = await entries(store, clock)
    when = datetime(2026, 7, 4, 23, 59, 1, 123456, tzinfo=timezone(timedelta(hours=-7)))
    async with store.transaction() as session:
        await EntryRepository(session).record_hits({entry_id: (4, when)})
    async with store.transaction() as session:
        found = await session.execute(
            select(Entry.hit_count, Entry.last_hit_at).where(Entry.last_hit_at == when)
        )
        assert found.all() == [(4, when.astimezone(UTC))]
        later = await session.execute(
            select(Entry.id).where(Entry.last_hit_at > when - timedelta(microseconds=1))
        )
        assert list(later.scalars()) == [entry_id]


async def test_slices_cover_every_hit_once() -> None:
    clock = FakeClock()
    hits = counted(clock, list(range(1, ENTRIES + 1)))
    parts = list(hits.take_slices(SLICE))
    assert [len(p) for p in parts] == [3, 3, 3, 1]
    merged = {k: v for p in parts for k, v in p.items()}
    assert {k: n for k, (n, _at) in merged.items()} == {i: i for i in range(1, ENTRIES + 1)}
    assert all(at == clock.now() for _n, at in merged.values())
    assert hits.take() == {}
    assert list(hits.take_slices(SLICE)) == []


def test_a_last_hit_is_dated_to_its_whole_second() -> None:
    """Hits a moment apart are dated alike (each second converted once, not each entry): the
    start of the monotonic second they fell in, at most a second early, never late."""
    clock = FakeClock()
    hits = HitCounter(clock)
    start = clock.now()
    for entry_id in range(1, 101):
        clock.advance(0.0099)  # 100 hits within 0.99 s of the first second
        hits.hit_entry(entry_id)
    clock.advance(0.5)
    hits.hit_entry(101)  # in the next second
    clock.advance(3)
    dated = hits.take()
    assert {at for _count, at in dated.values()} == {start, start + timedelta(seconds=1)}
    assert dated[100][1] == start and dated[101][1] == start + timedelta(seconds=1)


def test_a_batch_put_back_keeps_its_dates() -> None:
    """A flush that failed puts its batch back; taken again, each hit keeps the date it had
    (a float's rounding must not move a date to the second before, flush after flush)."""
    clock = FakeClock()
    hits = HitCounter(clock)
    for entry_id in range(1, 201):
        clock.advance(0.0137)
        hits.hit_entry(entry_id)
    first = hits.take()
    batch = first
    for _ in range(5):  # five failed flushes in a row
        clock.advance(30)
        hits.restore(batch)
        batch = hits.take()
    assert batch == first


@pytest.mark.parametrize("lifetime", [timedelta(days=35), timedelta(days=1, microseconds=250_001)])
async def test_a_hit_renews_a_learned_entry_to_the_microsecond(store: Store, lifetime: timedelta) -> None:
    last = datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    early, late = last - timedelta(days=3), last + timedelta(days=400)

    def row(value: str, source: EntrySource, expires: datetime | None) -> Entry:
        return Entry(
            list=ListName.WHITE,
            kind=EntryKind.IP,
            value=value,
            source=source,
            created_at=early,
            updated_at=early,
            reason="",
            created_by="test",
            expires_at=expires,
            hit_count=0,
        )

    rows = [
        row("192.0.2.1", EntrySource.LEARNED, early),  # renewed
        row("192.0.2.2", EntrySource.LEARNED, late),  # already later: kept
        row("192.0.2.3", EntrySource.MANUAL, early),  # not learned: kept
        row("192.0.2.4", EntrySource.MANUAL, None),  # no expiry: stays none
    ]
    async with store.transaction() as session:
        session.add_all(rows)
        await session.flush()
        ids = [r.id for r in rows]
    # Each entry its own last hit, a second and a microsecond apart: each written as its own.
    lasts = {i: last - timedelta(seconds=n, microseconds=n) for n, i in enumerate(ids)}
    async with store.transaction() as session:
        await EntryRepository(session).record_hits({i: (1, lasts[i]) for i in ids}, lifetime)
    async with store.transaction() as session:
        found = await session.execute(
            select(Entry.id, Entry.expires_at, Entry.last_hit_at).where(Entry.id.in_(ids))
        )
        by_id = {i: (expires, hit) for i, expires, hit in found.all()}
    assert [by_id[i][0] for i in ids] == [lasts[ids[0]] + lifetime, late, early, None]
    assert [by_id[i][1] for i in ids] == [lasts[i] for i in ids]
