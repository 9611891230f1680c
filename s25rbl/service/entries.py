"""Entries: add, change, remove, search, import and export, each one audited unit of work."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime

from s25rbl.clock import Clock
from s25rbl.lists.formats import Export, StoredEntry
from s25rbl.lists.values import EntryKind, EntrySource, EntrySpec, ListName
from s25rbl.store.db import Store
from s25rbl.store.entries import EntryFilter, EntryRepository
from s25rbl.store.models import Entry
from s25rbl.store.tokens import AuditRepository

log = logging.getLogger(__name__)

EXPORT_PAGE = 5_000  # entries read per transaction while exporting


def describe(entry: Entry) -> str:
    return f"{entry.list}list {entry.kind} {entry.value}"


class Lists:
    """The operator's lists in the store."""

    def __init__(self, store: Store, clock: Clock, changed: Callable[[], Awaitable[None]]) -> None:
        self._store = store
        self._clock = clock
        self._changed = changed

    async def add(
        self,
        items: Sequence[tuple[EntrySpec, datetime | None]],
        *,
        actor: str,
        source: EntrySource = EntrySource.MANUAL,
    ) -> list[Entry]:
        """Add (spec, expiry) pairs, all or none: a duplicate anywhere rolls the batch back."""
        now = self._clock.now()
        async with self._store.transaction() as session:
            repo, audit = EntryRepository(session), AuditRepository(session)
            added = []
            for spec, expires_at in items:
                entry = await repo.add(spec, source=source, creator=actor, now=now, expires_at=expires_at)
                await audit.add(now, actor, "entry.add", f"#{entry.id}", describe(entry))
                added.append(entry)
        await self._changed()
        return added

    async def add_one(self, spec: EntrySpec, *, actor: str, expires_at: datetime | None = None) -> Entry:
        (entry,) = await self.add([(spec, expires_at)], actor=actor)
        return entry

    async def get(self, entry_id: int) -> Entry:
        async with self._store.transaction() as session:
            return await EntryRepository(session).get(entry_id)

    async def update(
        self,
        entry_id: int,
        *,
        actor: str,
        reason: str | None = None,
        expires_at: datetime | None = None,
        clear_expiry: bool = False,
    ) -> Entry:
        """Change an entry's reason and/or expiry."""
        now = self._clock.now()
        async with self._store.transaction() as session:
            entry = await EntryRepository(session).update(
                entry_id, now, reason=reason, expires_at=expires_at, clear_expiry=clear_expiry
            )
            change = {"reason": reason, "expires_at": expires_at.isoformat() if expires_at else None}
            await AuditRepository(session).add(now, actor, "entry.update", f"#{entry_id}", json.dumps(change))
        await self._changed()
        return entry

    async def remove(self, entry_id: int, *, actor: str) -> Entry:
        now = self._clock.now()
        async with self._store.transaction() as session:
            entry = await EntryRepository(session).remove(entry_id, now)
            await AuditRepository(session).add(now, actor, "entry.remove", f"#{entry_id}", describe(entry))
        await self._changed()
        return entry

    async def search(self, flt: EntryFilter, *, after_id: int = 0, limit: int = 1000) -> Sequence[Entry]:
        async with self._store.transaction() as session:
            return await EntryRepository(session).search(
                flt, self._clock.now(), after_id=after_id, limit=limit
            )

    async def pages(self, flt: EntryFilter, size: int = EXPORT_PAGE) -> AsyncIterator[Sequence[StoredEntry]]:
        """Every entry the filter selects as plain rows, a page per transaction: no limit, no long
        lock, at most a page in memory. At least one page, maybe empty."""
        after = 0
        while True:
            async with self._store.transaction() as session:
                page = await EntryRepository(session).search_rows(
                    flt, self._clock.now(), after_id=after, limit=size
                )
            yield page
            if len(page) < size:
                return
            after = page[-1].id

    async def every(self, flt: EntryFilter) -> AsyncIterator[Entry]:
        """Every entry the filter selects, read a page per transaction."""
        after = 0
        while True:
            page = await self.search(flt, after_id=after, limit=EXPORT_PAGE)
            for entry in page:
                yield entry
            if len(page) < EXPORT_PAGE:
                return
            after = page[-1].id

    async def import_specs(self, specs: Sequence[EntrySpec], *, actor: str) -> tuple[int, int]:
        """Add every spec not already present, in one transaction. Returns (added, already present)."""
        now = self._clock.now()
        async with self._store.transaction() as session:
            added, present = await EntryRepository(session).add_missing(
                specs, source=EntrySource.IMPORTED, creator=actor, now=now
            )
            await AuditRepository(session).add(now, actor, "import", "", f"{added} added, {present} present")
        if added:
            await self._changed()
        return added, present

    async def export_pieces(
        self, fmt: str, list_: ListName | None, *, learned: bool = True
    ) -> AsyncGenerator[str, None]:
        """Every unexpired entry of ``list_`` (both lists if None) in an export format, piece by
        piece: the format's head, then one piece per page of entries (at least one), then its tail.
        ``learned=False`` leaves out addresses learned from retries."""
        out = Export(fmt, list_)
        if out.fmt == "rbldnsd":  # its head says what an ip4set cannot hold, before the rows
            flt = EntryFilter(list=out.list, include_expired=False)
            async with self._store.transaction() as session:
                counts = await EntryRepository(session).count_by_kind(flt, self._clock.now())
            out.left_out = {k: n for k, n in counts.items() if k not in (EntryKind.IP, EntryKind.CIDR)}
        yield out.begin()
        async for page in self.pages(EntryFilter(list=list_, include_expired=False)):
            yield out.rows(e for e in page if learned or e.source is not EntrySource.LEARNED)
        yield out.end()

    async def export(self, fmt: str, list_: ListName | None, *, learned: bool = True) -> str:
        """``export_pieces`` joined."""
        return "".join([piece async for piece in self.export_pieces(fmt, list_, learned=learned)])
