"""Learning and expiry on a real store (SQLite file, PostgreSQL) with the real migrations; time
is a fake clock, and s25rbl's own verdict on each address comes from a dict judge."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from s25rbl.config import LearningSettings
from s25rbl.jobs.expiry import expire_once
from s25rbl.learning.ingest import Learner
from s25rbl.lists.values import EntryKind, EntrySource, EntrySpec, ListName
from s25rbl.service import Services
from s25rbl.store.db import Store, migrate
from s25rbl.store.entries import EntryRepository
from s25rbl.store.models import Entry, Report
from tests.support.clock import FakeClock
from tests.support.judges import DictJudge

SETTINGS = LearningSettings()
# 60 s, 48 h, 2 retries, 35 days


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    url = database_url
    await asyncio.to_thread(migrate, url)  # Alembic runs its own event loop
    s = Store(url)
    try:
        yield s
    finally:
        await s.close()


def report(
    clock: FakeClock,
    ip: str = "192.0.2.7",
    *,
    key: str,
    sender: str = "news@shop.example",
    name: str = "mx7.shop.example",
) -> dict[str, str]:
    return {
        "client_ip": ip,
        "client_name": name,
        "helo": name,
        "sender": sender,
        "recipient": "alice@example.org",
        "time": clock.now().isoformat(),
        "idempotency_key": key,
    }


def learner_for(
    clock: FakeClock, judge: DictJudge | None = None, settings: LearningSettings = SETTINGS
) -> Learner:
    """A learner whose judge lists every address (no confirmed name, .4) unless told otherwise."""
    return Learner(settings, clock, judge=judge or DictJudge())


async def learned(store: Store) -> list[Entry]:
    async with store.transaction() as session:
        rows = await session.execute(select(Entry).where(Entry.source == EntrySource.LEARNED))
        return list(rows.scalars().all())


async def test_an_mta_that_retries_at_proper_intervals_is_learned(store: Store) -> None:
    clock = FakeClock()
    learner = learner_for(clock)
    for n in range(3):  # the first attempt and two retries, ten minutes apart
        result = await learner.ingest(
            store, [report(clock, key=f"k{n}", sender=f"prvs={n}abc123={n}x@x")], "mx1"
        )
        assert result.accepted == 1
        clock.advance(600)
    assert await learned(store) == []  # different senders each time: three first attempts
    for n in range(3):
        result = await learner.ingest(
            store, [report(clock, key=f"r{n}", sender=f"prvs=00{n}abcd=news@shop.example")], "mx1"
        )
        clock.advance(600)
    assert result.learned == ["192.0.2.7"]
    (entry,) = await learned(store)
    assert entry.value == "192.0.2.7" and entry.list is ListName.WHITE
    assert entry.expires_at is not None and entry.expires_at - clock.now() > timedelta(days=34)


async def test_a_bot_that_retries_once_is_not_learned(store: Store) -> None:
    clock = FakeClock()
    learner = learner_for(clock)
    await learner.ingest(store, [report(clock, key="a")], "mx1")
    clock.advance(300)
    result = await learner.ingest(store, [report(clock, key="b")], "mx1")
    assert result.learned == [] and await learned(store) == []


async def test_retries_faster_than_the_minimum_interval_do_not_count(store: Store) -> None:
    clock = FakeClock()
    learner = learner_for(clock)
    for n in range(5):
        await learner.ingest(store, [report(clock, key=f"f{n}")], "mx1")
        clock.advance(20)
    assert await learned(store) == []


async def test_duplicate_reports_count_once(store: Store) -> None:
    clock = FakeClock()
    learner = learner_for(clock)
    first = report(clock, key="same")
    assert (await learner.ingest(store, [first], "mx1")).accepted == 1
    clock.advance(600)
    again = await learner.ingest(store, [first, first], "mx2")
    assert (again.accepted, again.duplicate) == (0, 2)


async def test_refused_reports_say_why_and_do_not_spoil_the_batch(store: Store) -> None:
    clock = FakeClock()
    learner = learner_for(clock)
    old = report(clock, key="old")
    old["time"] = (clock.now() - timedelta(hours=49)).isoformat()
    future = report(clock, key="future")
    future["time"] = (clock.now() + timedelta(hours=1)).isoformat()
    bad_ip = report(clock, key="bad")
    bad_ip["client_ip"] = "300.1.1.1"
    extra = {**report(clock, key="extra"), "colour": "red"}
    good = report(clock, key="good")
    result = await learner.ingest(store, [old, future, bad_ip, extra, good, "nonsense"], "mx1")
    assert (result.accepted, result.refused) == (1, 5)
    assert [(e["index"], e["field"]) for e in result.errors] == [
        (0, "time"),
        (1, "time"),
        (2, "client_ip"),
        (3, "colour"),
        (5, "report"),
    ]


async def test_forbidden_address_is_never_learned(store: Store) -> None:
    from s25rbl.store.learning import LearnBlockRepository

    clock = FakeClock()
    async with store.transaction() as session:
        await LearnBlockRepository(session).block("192.0.2.7", "spam cannon that retries", "ops", clock.now())
    learner = learner_for(clock)
    for n in range(4):
        await learner.ingest(store, [report(clock, key=f"x{n}")], "mx1")
        clock.advance(600)
    assert await learned(store) == []


async def test_pool_retries_from_several_addresses_become_one_suggestion(store: Store) -> None:
    clock = FakeClock()
    pool = [
        ("198.51.100.1", "a1-1.smtp-out.bigmail.example"),
        ("198.51.100.2", "a2-2.smtp-out.bigmail.example"),
        ("198.51.100.3", "a3-3.smtp-out.bigmail.example"),
    ]
    judge = DictJudge()
    for ip, name in pool:
        judge.name(ip, name)
    learner = learner_for(clock, judge)
    results = []
    for n, (ip, name) in enumerate(pool):
        results.append(await learner.ingest(store, [report(clock, ip, key=f"p{n}", name=name)], "mx1"))
        clock.advance(600)
    assert await learned(store) == []  # no single address retried
    # The narrowest domain that holds the pool's names, not the whole registrable domain.
    assert results[-1].suggested == ["smtp-out.bigmail.example"]
    from s25rbl.store.learning import SuggestionRepository

    async with store.transaction() as session:
        rows = await SuggestionRepository(session).search(None)
    assert [(s.domain, s.status) for s in rows] == [("smtp-out.bigmail.example", "open")]


async def test_expiry_removes_exactly_what_has_expired(store: Store) -> None:
    clock = FakeClock()
    learner = learner_for(clock)
    await Services(store, clock).lists.add_one(
        EntrySpec(ListName.BLACK, EntryKind.IP, "192.0.2.50"),
        actor="t",
        expires_at=clock.now() + timedelta(hours=1),
    )
    await Services(store, clock).lists.add_one(
        EntrySpec(ListName.BLACK, EntryKind.IP, "192.0.2.51"),
        actor="t",
        expires_at=clock.now() + timedelta(days=3),
    )
    await Services(store, clock).lists.add_one(
        EntrySpec(ListName.BLACK, EntryKind.IP, "192.0.2.52"), actor="t"
    )
    for n in range(3):
        await learner.ingest(store, [report(clock, key=f"e{n}")], "mx1")
        clock.advance(600)
    assert len(await learned(store)) == 1
    await learner.ingest(store, [report(clock, "192.0.2.9", key="lonely")], "mx1")

    clock.advance(2 * 3600)  # the 1 h entry is past its expiry
    assert await expire_once(store, clock, SETTINGS) == {"reports": 0, "learned": 0, "entries": 1}
    clock.advance(47 * 3600)  # reports are now older than the 48 h window
    assert await expire_once(store, clock, SETTINGS) == {"reports": 4, "learned": 0, "entries": 0}
    clock.advance(2 * 86400)  # the 3-day entry
    assert await expire_once(store, clock, SETTINGS) == {"reports": 0, "learned": 0, "entries": 1}
    clock.advance(35 * 86400)  # the learned entry's lifetime
    assert await expire_once(store, clock, SETTINGS) == {"reports": 0, "learned": 1, "entries": 0}
    assert await expire_once(store, clock, SETTINGS) == {"reports": 0, "learned": 0, "entries": 0}
    async with store.transaction() as session:
        remaining = (
            await session.execute(select(Entry.value).where(Entry.source == EntrySource.MANUAL))
        ).scalars()
        assert list(remaining) == ["192.0.2.52"]
        assert (await session.execute(select(func.count()).select_from(Report))).scalar_one() == 0


async def test_hits_renew_a_learned_entry(store: Store) -> None:
    clock = FakeClock()
    learner = learner_for(clock)
    for n in range(3):
        await learner.ingest(store, [report(clock, key=f"h{n}")], "mx1")
        clock.advance(600)
    (entry,) = await learned(store)
    first_expiry = entry.expires_at
    clock.advance(10 * 86400)
    async with store.transaction() as session:
        await EntryRepository(session).record_hits({entry.id: (5, clock.now())}, timedelta(days=35))
    (entry,) = await learned(store)
    assert entry.hit_count == 5
    assert entry.expires_at is not None and first_expiry is not None
    assert entry.expires_at - first_expiry >= timedelta(days=9)


async def test_a_stored_suggestion_no_entry_could_hold_is_refused_on_approval(store: Store) -> None:
    # Stored before suggestions were checked: approving it must not write an entry that every
    # other way of adding one refuses.
    from s25rbl.errors import InvalidEntry
    from s25rbl.store.learning import SuggestionRepository

    clock = FakeClock()
    async with store.transaction() as session:
        suggestion = await SuggestionRepository(session).upsert(
            "smtp\\032out.bigmail.example", '{"addresses": []}', clock.now()
        )
        assert suggestion is not None
        suggestion_id = suggestion.id
    with pytest.raises(InvalidEntry, match="not a valid DNS label"):
        await Services(store, clock).learning.approve(suggestion_id, actor="ops")
    async with store.transaction() as session:
        rows = await SuggestionRepository(session).search(None)
        entries = await session.scalar(select(func.count()).select_from(Entry))
    assert [(s.domain, s.status) for s in rows] == [("smtp\\032out.bigmail.example", "open")]
    assert entries == 0
