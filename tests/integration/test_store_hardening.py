"""The store under misuse and mishap, on a real SQLite file and a real PostgreSQL database with
the real migrations: a pool that runs dry, a SQLite file deleted or replaced under it, search
text full of LIKE wildcards, expiry and failed logins on record, a hit-count writer that
survives what it does not expect."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from s25rbl.api.auth import FailedLogins
from s25rbl.config import LearningSettings
from s25rbl.errors import StoreUnavailable
from s25rbl.jobs.expiry import expire_once
from s25rbl.lists.values import EntryKind, EntrySpec, ListName
from s25rbl.node.sync import ListSync
from s25rbl.service import Services
from s25rbl.store.db import Store, migrate, sqlite_path
from s25rbl.store.entries import EntryFilter, EntryRepository
from s25rbl.verdict.hits import HitCounter
from tests.support.clock import FakeClock


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    await asyncio.to_thread(migrate, database_url)
    s = Store(database_url)
    try:
        yield s
    finally:
        await s.close()


async def test_a_dry_pool_is_store_unavailable_not_a_pool_timeout(database_url: str) -> None:
    await asyncio.to_thread(migrate, database_url)
    store = Store(database_url, connections=1, pool_timeout=0.2)
    try:
        async with store.transaction() as session:
            await session.execute(text("SELECT 1"))
            with pytest.raises(StoreUnavailable, match=r"busy: no connection free within 0\.2 s"):
                async with store.transaction() as other:
                    await other.execute(text("SELECT 1"))
    finally:
        await store.close()


@pytest.mark.parametrize("mishap", ["deleted", "replaced"])
async def test_a_sqlite_file_gone_from_under_the_store_refuses_writes(
    tmp_path: Path, mishap: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 's25rbl.db'}"
    await asyncio.to_thread(migrate, url)
    store = Store(url)
    lists = Services(store, FakeClock()).lists
    path = sqlite_path(url)
    assert path is not None
    try:
        await lists.add_one(EntrySpec(ListName.BLACK, EntryKind.IP, "192.0.2.1"), actor="test")
        shutil.copy(path, tmp_path / "copy.db")
        os.rename(path, tmp_path / "moved.db")
        if mishap == "replaced":
            os.rename(tmp_path / "copy.db", path)
        for _ in range(3):
            with pytest.raises(StoreUnavailable, match=f"was {mishap}"):
                await lists.add_one(EntrySpec(ListName.BLACK, EntryKind.IP, "192.0.2.2"), actor="test")
        errors = [r for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and "restart s25rbl" in errors[0].getMessage()  # said once
        # The same file put back: usable again, and nothing was written to the lost one.
        os.replace(tmp_path / "moved.db", path)
        await lists.add_one(EntrySpec(ListName.BLACK, EntryKind.IP, "192.0.2.3"), actor="test")
        values = [e.value async for e in lists.every(EntryFilter(list=ListName.BLACK))]
        assert values == ["192.0.2.1", "192.0.2.3"]
    finally:
        await store.close()


async def test_search_text_with_like_wildcards_matches_itself(store: Store) -> None:
    lists = Services(store, FakeClock()).lists
    for value, reason in [
        ("192.0.2.1", "100% spam"),
        ("192.0.2.2", "1000 spams"),
        ("192.0.2.3", "under_score"),
        ("192.0.2.4", "underXscore"),
        ("192.0.2.5", "back\\slash"),
    ]:
        await lists.add_one(EntrySpec(ListName.BLACK, EntryKind.IP, value, reason), actor="test")

    async def found(text: str) -> list[str]:
        return [e.value for e in await lists.search(EntryFilter(list=ListName.BLACK, text=text))]

    assert await found("0%") == ["192.0.2.1"]
    assert await found("%") == ["192.0.2.1"]
    assert await found("under_") == ["192.0.2.3"]
    assert await found("\\") == ["192.0.2.5"]
    assert await found("spam") == ["192.0.2.1", "192.0.2.2"]


async def test_expiry_puts_each_removed_entry_in_the_audit_log(store: Store) -> None:
    clock = FakeClock()
    services = Services(store, clock)
    spec = EntrySpec(ListName.BLACK, EntryKind.IP, "192.0.2.9", "for a day")
    await services.lists.add_one(spec, actor="token:ops", expires_at=clock.now() + timedelta(days=1))
    clock.advance(2 * 86400)
    assert (await expire_once(store, clock, LearningSettings()))["entries"] == 1
    events = [e for e in await services.audit.events(limit=1000) if e.action == "entry.expire"]
    assert len(events) == 1
    assert events[0].actor == "s25rbl:expiry" and "blacklist ip 192.0.2.9" in events[0].detail
    # Another node running the same pass removes nothing and audits nothing.
    assert (await expire_once(store, clock, LearningSettings()))["entries"] == 0
    assert len([e for e in await services.audit.events(limit=1000) if e.action == "entry.expire"]) == 1


async def test_a_failed_login_flood_is_audited_once_then_summed_up(store: Store) -> None:
    services = Services(store, FakeClock())
    failures = FailedLogins(services.audit, window=0.3)
    for i in range(500):
        await failures.record(f"203.0.113.{i % 7}", "an unknown or revoked token")
    await asyncio.sleep(0.5)
    events = [e for e in await services.audit.events(limit=1000) if e.action == "auth.fail"]
    assert len(events) == 2, [e.detail for e in events]
    assert events[0].target == "203.0.113.0"
    assert events[1].detail.startswith("499 more failed logins") and "203.0.113.6" in events[1].detail
    await failures.close()


async def test_the_hit_writer_outlives_an_unexpected_error(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    entry = await Services(store, clock).lists.add_one(
        EntrySpec(ListName.BLACK, EntryKind.IP, "192.0.2.7"), actor="test"
    )
    sync = ListSync(store, clock, interval=3600, hits_interval=0.05)
    hits = HitCounter(clock)
    real = EntryRepository.record_hits
    calls = 0

    async def flaky(self: EntryRepository, *args: object, **kwargs: object) -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError("something nobody expected")
        await real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(EntryRepository, "record_hits", flaky)
    task = asyncio.create_task(sync.run_hits(hits))
    try:
        hits.hit_entry(entry.id)
        for _ in range(200):
            await asyncio.sleep(0.05)
            if calls >= 3:
                break
        await asyncio.sleep(0.1)
        assert not task.done(), "the hit writer died"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    stored = await Services(store, clock).lists.get(entry.id)
    assert stored.hit_count == 1  # kept through the failures, written once
    assert len([r for r in caplog.records if "writing hit counts failed" in r.getMessage()]) == 1
