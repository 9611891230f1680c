"""Keeps the in-memory list snapshot in step with the store, and writes batched hit counts.

Nodes poll a version counter (one tiny query per interval) and rebuild their snapshot when it
moves. Polling converges even after missed changes or a restart; while the store is away the
last snapshot keeps answering.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta

from s25rbl.clock import Clock
from s25rbl.errors import StoreUnavailable
from s25rbl.store.db import Store
from s25rbl.store.entries import EntryRepository
from s25rbl.verdict.hits import HitCounter
from s25rbl.verdict.lists import ListIndex

log = logging.getLogger(__name__)

# Entries whose hits one transaction writes (~5 ms of CPU on SQLite).
HITS_SLICE = 5000


async def load_index(store: Store, *, clock: Clock) -> ListIndex:
    """Read every active entry and build the in-memory snapshot.

    The build runs in a worker thread: with 100,000s of entries it takes seconds, and the
    event loop must go on answering DNS meanwhile (it gets the GIL back every few ms).
    """
    async with store.transaction() as session:
        repo = EntryRepository(session)
        version = await repo.version()
        rows = await repo.active_rows(clock.now())
    return await asyncio.to_thread(ListIndex.build, rows, version)


class ListSync:
    """The node's current ``ListIndex``: rebuilt when the store's version moves (polled) or when
    told (``reload``); hit counts written back in batches."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        interval: float,
        hits_interval: float = 30.0,
        learned_lifetime: timedelta | None = None,
    ) -> None:
        self._store = store
        self._learned_lifetime = learned_lifetime
        self._clock = clock
        self._interval = interval
        self._hits_interval = hits_interval
        self.index = ListIndex()
        self.healthy = False
        self.loaded = False
        # One reload at a time, each reading the store after the last one finished, so a
        # slower reload of older rows can never replace a newer snapshot. Reloads asked for
        # while one runs share the next one: a burst of writes costs two builds, not one each.
        self._reloading = asyncio.Lock()
        self._asked = 0  # reload requests so far
        self._covered = 0  # requests answered by a reload that read the store after them

    def current(self) -> ListIndex:
        return self.index

    async def reload(self) -> None:
        """Make the snapshot reflect the store as of this call (or later)."""
        self._asked += 1
        ticket = self._asked
        async with self._reloading:
            if self._covered >= ticket:
                return  # a reload that read the store after this call was made has finished
            covers = self._asked  # every request so far was made before the read below
            started = time.perf_counter()
            index = await load_index(self._store, clock=self._clock)
            self.index = index
            self._covered = covers
            self.loaded = self.healthy = True
        log.info(
            "lists loaded: version %d, %s, in %.3f s",
            index.version,
            ", ".join(f"{k} {v}" for k, v in index.sizes().items()),
            time.perf_counter() - started,
        )

    async def poll_once(self) -> bool:
        """Reload if the store's version moved or an entry expired. True if reloaded."""
        async with self._store.transaction() as session:
            version = await EntryRepository(session).version()
        expired = self.index.next_expiry is not None and self.index.next_expiry <= self._clock.now()
        if version != self.index.version or expired or not self.loaded:
            await self.reload()
            return True
        return False

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.poll_once()
                if not self.healthy:
                    log.warning("store reachable again")
                self.healthy = True
            except StoreUnavailable as exc:
                if self.healthy:
                    log.warning("store unavailable, answering from the last lists: %s", exc)
                self.healthy = False
            except Exception:
                # Never let the refresher die: DNS would answer stale lists forever.
                if self.healthy:
                    log.exception("list refresh failed; answering from the last lists")
                self.healthy = False

    async def flush_hits(self, hits: HitCounter) -> None:
        """Write the hits counted so far, ``HITS_SLICE`` entries per transaction, the event loop
        free between two (100,000 entries in one statement held DNS answers up for seconds).

        A slice is either stored or put back into ``hits``, never both: one that fails is rolled
        back and restored with every slice not yet written; a cancellation (shutdown) lets the
        slice in flight finish first, and the node's last flush writes what was put back.
        """
        slices = hits.take_slices(HITS_SLICE)
        for batch in slices:
            written = asyncio.ensure_future(self._write_hits(batch))
            try:
                try:
                    await asyncio.shield(written)
                except asyncio.CancelledError:
                    await asyncio.wait([written])
                    raise
            except BaseException as exc:
                if written.cancelled() or written.exception() is not None:
                    hits.restore(batch)
                for rest in slices:
                    hits.restore(rest)
                if isinstance(exc, StoreUnavailable):
                    return  # hit counts are statistics: tried again next time
                raise
            await asyncio.sleep(0)

    async def _write_hits(self, batch: dict[int, tuple[int, datetime]]) -> None:
        async with self._store.transaction() as session:
            await EntryRepository(session).record_hits(batch, self._learned_lifetime)

    async def run_hits(self, hits: HitCounter) -> None:
        """Flush the hit counts every ``hits_interval`` for as long as the node runs: an error is
        logged once (and once more when flushing works again), never the end of the task."""
        failing = False
        while True:
            await asyncio.sleep(self._hits_interval)
            try:
                await self.flush_hits(hits)
            except Exception:
                if not failing:
                    log.exception("writing hit counts failed; they are kept and tried again")
                failing = True
                continue
            if failing:
                log.warning("hit counts written again")
            failing = False
