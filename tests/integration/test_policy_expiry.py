"""The policy state expires (product §7) and its tables are what the models say, on SQLite and
PostgreSQL with the real migrations."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, select

from s25rbl.config import PolicySettings
from s25rbl.jobs.expiry import expire_policy
from s25rbl.store.db import Store, migrate
from s25rbl.store.models import Base, GreylistTriplet, PolicyPass, TarpitRecord
from tests.support.clock import FakeClock

SETTINGS = PolicySettings(retry_window=3600, max_age=86400)
POLICY_TABLES = {"policy_triplets", "policy_tarpits", "policy_passes"}


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    await asyncio.to_thread(migrate, database_url)
    s = Store(database_url)
    try:
        yield s
    finally:
        await s.close()


async def test_the_migrated_policy_tables_are_the_models(store: Store) -> None:
    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diffs = compare_metadata(context, Base.metadata)
        return [d for d in diffs if POLICY_TABLES & set(str(d).replace("'", " ").split())]

    async with store.engine.connect() as connection:
        assert await connection.run_sync(differences) == []


async def test_expiry_removes_what_can_no_longer_count_and_keeps_the_rest(store: Store) -> None:
    clock = FakeClock()
    now = clock.now()
    hour, day = timedelta(hours=1), timedelta(days=1)

    def triplet(key: str, first: timedelta, seen: timedelta, passed: bool) -> GreylistTriplet:
        at = now - first
        return GreylistTriplet(
            key=key,
            network="198.51.100.0/24",
            sender="a@example.com",
            recipient=f"{key}@example.org",
            client_ip="198.51.100.7",
            first_seen=at,
            last_seen=now - seen,
            passed_at=at if passed else None,
        )

    async with store.transaction() as session:
        session.add_all(
            [
                triplet("waiting-fresh", hour - timedelta(seconds=1), timedelta(0), passed=False),
                triplet("waiting-stale", hour + timedelta(seconds=1), timedelta(0), passed=False),
                triplet("passed-seen", 10 * day, day - timedelta(seconds=1), passed=True),
                triplet("passed-unseen", 10 * day, day + timedelta(seconds=1), passed=True),
                TarpitRecord(client_ip="198.51.100.7", instance="new", started_at=now - hour / 2),
                TarpitRecord(client_ip="198.51.100.7", instance="old", started_at=now - 2 * hour),
                PolicyPass(client_ip="198.51.100.7", instance="new", kind="tarpit", at=now - hour),
                PolicyPass(client_ip="198.51.100.7", instance="old", kind="tarpit", at=now - 2 * day),
            ]
        )
    # Two nodes at once: each row is removed once, by whichever gets there first.
    runs = await asyncio.gather(*(expire_policy(store, clock, SETTINGS) for _ in range(2)))
    assert {k: sum(r[k] for r in runs) for k in runs[0]} == {"triplets": 2, "tarpits": 1, "passes": 1}
    async with store.transaction() as session:
        keys = (
            (await session.execute(select(GreylistTriplet.key).order_by(GreylistTriplet.key))).scalars().all()
        )
        tarpits = (await session.execute(select(TarpitRecord.instance))).scalars().all()
        passes = (await session.execute(select(PolicyPass.instance))).scalars().all()
    assert list(keys) == ["passed-seen", "waiting-fresh"]
    assert (list(tarpits), list(passes)) == (["new"], ["new"])
