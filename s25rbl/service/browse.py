"""What the operator's page reads: pages newest first, with the evidence behind each learned
address, and counts over time from the store. Reads only; every write is in the other services."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from s25rbl.clock import Clock
from s25rbl.lists.values import EntryKind, EntrySource, ListName
from s25rbl.store.browse import BrowseRepository, Page
from s25rbl.store.db import Store
from s25rbl.store.entries import EntryFilter
from s25rbl.store.models import (
    AuditEvent,
    Entry,
    GreylistTriplet,
    LearnBlock,
    PolicyPass,
    Report,
    Suggestion,
    TarpitRecord,
)
from s25rbl.store.policy_browse import PolicyBrowseRepository, TarpitSearch, TripletSearch

LEARNED = EntryFilter(
    list=ListName.WHITE, kind=EntryKind.IP, source=EntrySource.LEARNED, include_expired=False
)


@dataclass(frozen=True, slots=True)
class Evidence:
    """The newest reports of a learned address and how many there are in all; the same of
    the policy service's passes (tarpits survived, greylists passed)."""

    reports: Sequence[Report]
    total: int
    passes: Sequence[PolicyPass] = ()
    passes_total: int = 0


@dataclass(frozen=True, slots=True)
class Buckets:
    """Counts per time bucket: ``counts[i]`` rows in [edges[i], edges[i + 1])."""

    edges: Sequence[datetime]
    counts: Sequence[int]


class Browse:
    """Read-only views of the store for the operator's page."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def entries(self, flt: EntryFilter, *, before_id: int | None, limit: int) -> Page[Entry]:
        async with self._store.transaction() as session:
            return await BrowseRepository(session).entries(
                flt, self._clock.now(), before_id=before_id, limit=limit
            )

    async def learned(
        self, *, text: str | None, before_id: int | None, limit: int, per_address: int
    ) -> tuple[Page[Entry], dict[int, Evidence]]:
        """Learned addresses newest first, each with its newest ``per_address`` reports and
        policy passes."""
        flt = EntryFilter(
            list=LEARNED.list, kind=LEARNED.kind, source=LEARNED.source, text=text, include_expired=False
        )
        async with self._store.transaction() as session:
            repo, policy = BrowseRepository(session), PolicyBrowseRepository(session)
            page = await repo.entries(flt, self._clock.now(), before_id=before_id, limit=limit)
            ips = [e.value for e in page.rows]
            reports = await repo.reports_for(ips, per_address)
            counts = await repo.report_counts(ips)
            passes = await policy.passes_for(ips, per_address)
            pass_counts = await policy.pass_counts(ips)
        evidence = {
            e.id: Evidence(
                reports.get(e.value, []),
                counts.get(e.value, 0),
                passes.get(e.value, []),
                pass_counts.get(e.value, 0),
            )
            for e in page.rows
        }
        return page, evidence

    async def greylist(
        self, search: TripletSearch, *, before_id: int | None, limit: int
    ) -> tuple[Page[GreylistTriplet], dict[str, str]]:
        """Greylisted triplets newest first, and the names the policy saw for their addresses."""
        async with self._store.transaction() as session:
            repo = PolicyBrowseRepository(session)
            page = await repo.triplets(search, before_id=before_id, limit=limit)
            return page, await repo.names([t.client_ip for t in page.rows])

    async def tarpits(self, search: TarpitSearch, *, before_id: int | None, limit: int) -> Page[TarpitRecord]:
        """Tarpitted sessions newest first."""
        async with self._store.transaction() as session:
            return await PolicyBrowseRepository(session).tarpits(search, before_id=before_id, limit=limit)

    async def forbidden(self, *, text: str | None, limit: int) -> Sequence[LearnBlock]:
        async with self._store.transaction() as session:
            return await BrowseRepository(session).forbidden(text=text, limit=limit)

    async def suggestions(
        self, status: str | None, *, before_id: int | None, limit: int
    ) -> Sequence[Suggestion]:
        async with self._store.transaction() as session:
            return await BrowseRepository(session).suggestions(status, before_id=before_id, limit=limit)

    async def audit(
        self, *, text: str | None, action: str | None, before_id: int | None, limit: int
    ) -> tuple[Page[AuditEvent], list[str]]:
        """A page of audit events newest first, and every action name (for the filter)."""
        async with self._store.transaction() as session:
            repo = BrowseRepository(session)
            events = await repo.audit(text=text, action=action, before_id=before_id, limit=limit)
            return events, await repo.audit_actions()

    async def per_bucket(self, what: str, *, bucket: timedelta, count: int) -> Buckets:
        """``count`` buckets of ``bucket`` each, the last one ending at the next bucket boundary
        after now (UTC): learned addresses (``learned``) or reports received (``reports``)."""
        now = self._clock.now()
        step = bucket.total_seconds()
        end_ts = (int(now.timestamp() // step) + 1) * step
        end = datetime.fromtimestamp(end_ts, tz=now.tzinfo)
        edges = [end - bucket * (count - i) for i in range(count + 1)]
        async with self._store.transaction() as session:
            counts = await BrowseRepository(session).per_bucket(what, edges)
        return Buckets(edges, counts)
