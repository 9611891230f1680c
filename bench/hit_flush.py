"""Benchmark: one flush of the entries' hit counts to the store, in process (not a test).

Fills a fresh SQLite store (or an empty PostgreSQL database given by ``--url``) with N
blacklist entries, counts hits on all of them (half through ``hit_entry`` as the Python path
does, half through the tables the C path adds into), and times ``ListSync.flush_hits``: wall
time, the process's CPU time, and the longest the event loop went without running a 1 ms
timer meanwhile (what a DNS answer waits at worst). Best of ``--rounds`` by CPU.

    .venv/bin/python bench/hit_flush.py [--entries 100000] [--rounds 3] [--url postgresql://...] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import delete, func, insert, select  # noqa: E402

from s25rbl.clock import SystemClock  # noqa: E402
from s25rbl.lists.values import EntryKind, EntrySource, ListName  # noqa: E402
from s25rbl.node.sync import ListSync  # noqa: E402
from s25rbl.store.db import Store, migrate  # noqa: E402
from s25rbl.store.models import Entry  # noqa: E402
from s25rbl.verdict.hits import HitCounter  # noqa: E402


async def fill(store: Store, count: int) -> list[int]:
    now = datetime.now(UTC)
    rows = [
        {
            "list": ListName.BLACK,
            "kind": EntryKind.IP,
            "value": f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
            "source": EntrySource.LEARNED if i % 4 == 0 else EntrySource.IMPORTED,
            "created_at": now,
            "updated_at": now,
            "expires_at": now + timedelta(days=1) if i % 4 == 0 else None,
            "reason": "",
            "created_by": "bench",
            "hit_count": 0,
        }
        for i in range(count)
    ]
    async with store.transaction() as session:
        await session.execute(delete(Entry))
        for start in range(0, count, 10_000):
            await session.execute(insert(Entry), rows[start : start + 10_000])
    async with store.transaction() as session:
        return list((await session.execute(select(Entry.id))).scalars())


async def stalls(stop: asyncio.Event, worst: list[float]) -> None:
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        worst[0] = max(worst[0], now - last)
        last = now


async def one_flush(store: Store, ids: list[int]) -> tuple[float, float, float]:
    clock = SystemClock()
    hits = HitCounter(clock)
    counts, last = hits.tables()
    for n, entry_id in enumerate(ids):
        if n % 2:
            hits.hit_entry(entry_id)
        else:
            counts[entry_id] = counts.get(entry_id, 0) + 3
            last[entry_id] = clock.monotonic() - (n % 30)
    sync = ListSync(store, clock, interval=3600, learned_lifetime=timedelta(days=35))
    stop, worst = asyncio.Event(), [0.0]
    probe = asyncio.create_task(stalls(stop, worst))
    await asyncio.sleep(0.01)
    worst[0] = 0.0
    t0, c0 = time.perf_counter(), time.process_time()
    await sync.flush_hits(hits)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    stop.set()
    await probe
    return wall, cpu, worst[0]


async def run(args: argparse.Namespace, url: str) -> None:
    store = Store(url)
    try:
        ids = await fill(store, args.entries)
        results = []
        for _ in range(args.rounds):
            results.append(await one_flush(store, ids))
        async with store.transaction() as session:
            total = (await session.execute(select(func.sum(Entry.hit_count)))).scalar_one()
        if args.url:
            async with store.transaction() as session:
                await session.execute(delete(Entry))
    finally:
        await store.close()
    wall, cpu, stall = min(results, key=lambda r: r[1])
    per = args.entries // 2
    print(
        f"{store.engine.dialect.name}: {args.entries} entries hit, {args.rounds} flushes, hits stored {total}"
        f" (expected {args.rounds * (per + 3 * (args.entries - per))})"
    )
    for w, c, s in results:
        print(
            f"  flush: wall {w * 1000:.0f} ms, CPU {c * 1000:.0f} ms ({c / args.entries * 1e6:.1f} µs/entry),"
            f" longest loop stall {s * 1000:.0f} ms"
        )
    print(f"best by CPU: {cpu * 1000:.0f} ms CPU, {wall * 1000:.0f} ms wall, stall {stall * 1000:.0f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--url",
        default="",
        help="a scratch database instead of a temporary SQLite file: its entries are deleted",
    )
    parser.add_argument("--quick", action="store_true", help="2,000 entries, one flush: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.entries, args.rounds = 2000, 1
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{tmp}/hits.db"
        migrate(url)
        asyncio.run(run(args, url))
