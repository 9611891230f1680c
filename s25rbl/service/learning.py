"""The learning loop's writes and reviews: reports in, learned addresses and pool suggestions
reviewed, revoked, forbidden, approved or rejected."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from s25rbl.clock import Clock
from s25rbl.errors import DuplicateEntry, EntryNotFound
from s25rbl.learning.ingest import IngestResult, Learner
from s25rbl.learning.pools import approve_suggestion
from s25rbl.lists.values import EntryKind, EntrySource, ListName
from s25rbl.store.db import Store
from s25rbl.store.entries import EntryFilter, EntryRepository
from s25rbl.store.learning import LearnBlockRepository, ReportRepository, SuggestionRepository
from s25rbl.store.models import Entry, LearnBlock, PolicyPass, Report, Suggestion
from s25rbl.store.policy import PassRepository
from s25rbl.store.tokens import AuditRepository

SUGGESTION_STATUSES = ("open", "approved", "rejected")
FORBIDDEN_INLINE = 100  # forbidden addresses shown with each page of learned ones; the rest paged


@dataclass(frozen=True, slots=True)
class LearnedPage:
    """Learned addresses with the reports (and the policy service's passes) behind each, and the
    first ``FORBIDDEN_INLINE`` addresses forbidden to learn (``forbidden_more``: there are others,
    ``Learning.forbidden``)."""

    entries: Sequence[Entry]
    evidence: dict[int, Sequence[Report]]
    forbidden: Sequence[LearnBlock]
    forbidden_more: bool = False
    passes: dict[int, Sequence[PolicyPass]] = field(default_factory=dict)


class Learning:
    """Reports, learned addresses and pool suggestions in the store."""

    def __init__(
        self, store: Store, clock: Clock, changed: Callable[[], Awaitable[None]], learner: Learner
    ) -> None:
        self._store = store
        self._clock = clock
        self._changed = changed
        self._learner = learner

    async def report(self, bodies: Sequence[Any], *, reporter: str) -> IngestResult:
        """Take a batch of reports (product §5); what it learned is answered at once.
        ReportsLimited: ``reporter`` sent too many lately, nothing was taken."""
        result = await self._learner.ingest(self._store, bodies, reporter)
        if result.lists_changed:
            await self._changed()
        return result

    async def learned(self, *, after_id: int = 0, limit: int = 100) -> LearnedPage:
        flt = EntryFilter(
            list=ListName.WHITE, kind=EntryKind.IP, source=EntrySource.LEARNED, include_expired=False
        )
        async with self._store.transaction() as session:
            rows = await EntryRepository(session).search(
                flt, self._clock.now(), after_id=after_id, limit=limit
            )
            reports = ReportRepository(session)
            evidence = {e.id: await reports.for_ip(e.value) for e in rows}
            blocks = await LearnBlockRepository(session).page(limit=FORBIDDEN_INLINE + 1)
            passes = {e.id: await PassRepository(session).for_ip(e.value) for e in rows}
        return LearnedPage(rows, evidence, blocks[:FORBIDDEN_INLINE], len(blocks) > FORBIDDEN_INLINE, passes)

    async def forbidden(self, *, after: str = "", limit: int = 100) -> Sequence[LearnBlock]:
        """The addresses forbidden to learn, a page at a time in address-text order."""
        async with self._store.transaction() as session:
            return await LearnBlockRepository(session).page(after=after, limit=limit)

    async def revoke(self, ip: str, *, actor: str, forbid: bool = False, reason: str = "") -> None:
        """Remove a learned address and start its count afresh (its reports so far count no
        more); with ``forbid``, never learn it again."""
        now = self._clock.now()
        async with self._store.transaction() as session:
            entries = EntryRepository(session)
            entry = await entries.find(ListName.WHITE, EntryKind.IP, ip)
            learned = entry is not None and entry.source is EntrySource.LEARNED
            if not learned and not forbid:
                raise EntryNotFound(f"{ip} is not a learned address")
            audit = AuditRepository(session)
            if learned and entry is not None:
                await entries.remove(entry.id, now)
                await audit.add(now, actor, "learned.revoke", ip, reason)
            await ReportRepository(session).stop_counting(ip)
            if forbid:
                await LearnBlockRepository(session).block(ip, reason, actor, now)
                await audit.add(now, actor, "learned.forbid", ip, reason)
        await self._changed()

    async def suggestions(
        self, status: str | None = None, *, after_id: int = 0, limit: int = 100
    ) -> Sequence[Suggestion]:
        async with self._store.transaction() as session:
            return await SuggestionRepository(session).search(status, after_id=after_id, limit=limit)

    async def approve(self, suggestion_id: int, *, actor: str) -> tuple[Suggestion, Entry]:
        """Whitelist the suggested domain."""
        async with self._store.transaction() as session:
            suggestion, entry = await approve_suggestion(
                session, suggestion_id, actor=actor, now=self._clock.now()
            )
        await self._changed()
        return suggestion, entry

    async def reject(self, suggestion_id: int, *, actor: str) -> Suggestion:
        now = self._clock.now()
        async with self._store.transaction() as session:
            suggestion = await SuggestionRepository(session).get(suggestion_id)
            if suggestion.status != "open":
                raise DuplicateEntry(f"suggestion {suggestion_id} is already {suggestion.status}")
            suggestion.status = "rejected"
            suggestion.updated_at = now
            await AuditRepository(session).add(now, actor, "suggestion.reject", suggestion.domain)
        return suggestion
