"""Expiry: reports that can no longer count, learned entries past their lifetime, entries past
their expiry, and the policy service's old state are removed on an interval (APScheduler 3.x,
in the serve process); every entry removed is in the audit log.

Each run is plain DELETEs by time in one transaction, so it is idempotent and any number of
nodes sharing one database may run it at once: a row is deleted by whichever node gets there
first, and the others delete nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from s25rbl.clock import Clock
from s25rbl.config import LearningSettings, PolicySettings
from s25rbl.errors import StoreUnavailable
from s25rbl.lists.values import EntryRow
from s25rbl.store.db import Store
from s25rbl.store.entries import EntryRepository
from s25rbl.store.learning import ReportRepository
from s25rbl.store.policy import PassRepository, TarpitRepository, TripletRepository
from s25rbl.store.tokens import AuditRepository

log = logging.getLogger(__name__)

ACTOR = "s25rbl:expiry"
AUDITED_EACH = 1000  # removed entries audited one by one per run; the rest as one count


async def expire_once(store: Store, clock: Clock, settings: LearningSettings) -> dict[str, int]:
    """One expiry pass; returns what it removed, by kind. Each removed entry is audited."""
    now = clock.now()
    async with store.transaction() as session:
        reports = await ReportRepository(session).delete_older_than(now - timedelta(seconds=settings.window))
        entries = EntryRepository(session)
        learned = await entries.delete_expired(now, learned=True)
        manual = await entries.delete_expired(now, learned=False)
        audit = AuditRepository(session)
        await _audit(audit, now, "learned.expire", learned)
        await _audit(audit, now, "entry.expire", manual)
    removed = {"reports": reports, "learned": len(learned), "entries": len(manual)}
    if any(removed.values()):
        log.info(
            "expiry removed %d reports, %d learned entries, %d expired entries",
            reports,
            len(learned),
            len(manual),
        )
    return removed


async def _audit(audit: AuditRepository, now: datetime, action: str, rows: list[EntryRow]) -> None:
    """One audit event per removed entry, up to ``AUDITED_EACH`` a run; one for the rest."""
    for row in rows[:AUDITED_EACH]:
        expired = row.expires_at.isoformat() if row.expires_at else ""
        detail = f"{row.list}list {row.kind} {row.value}, expired {expired}"
        await audit.add(now, ACTOR, action, f"#{row.id}", detail)
    if len(rows) > AUDITED_EACH:
        await audit.add(now, ACTOR, action, "", f"and {len(rows) - AUDITED_EACH} more in this run")


async def expire_policy(store: Store, clock: Clock, settings: PolicySettings) -> dict[str, int]:
    """One pass over the policy state (product §7): triplets never retried within the retry
    window and passed ones not seen for ``max_age``, tarpitted sessions older than the retry
    window (a client that hung up is greylisted that long), passes older than ``max_age``."""
    now = clock.now()
    window, max_age = timedelta(seconds=settings.retry_window), timedelta(seconds=settings.max_age)
    async with store.transaction() as session:
        triplets = await TripletRepository(session).delete_expired(now - window, now - max_age)
        tarpits = await TarpitRepository(session).delete_older_than(now - window)
        passes = await PassRepository(session).delete_older_than(now - max_age)
    removed = {"triplets": triplets, "tarpits": tarpits, "passes": passes}
    if any(removed.values()):
        log.info("expiry removed %d triplets, %d tarpit records, %d policy passes", triplets, tarpits, passes)
    return removed


class ExpiryScheduler:
    """Runs ``expire_once`` every ``learning.expire_interval`` seconds on the event loop."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        settings: LearningSettings,
        on_removed: Callable[[dict[str, int]], None] | None = None,
        policy: PolicySettings | None = None,
    ) -> None:
        self._store, self._clock, self._settings = store, clock, settings
        self._on_removed = on_removed
        self._policy = policy
        self._scheduler = AsyncIOScheduler()

    async def run(self) -> None:
        try:
            removed = await expire_once(self._store, self._clock, self._settings)
            if self._policy is not None:
                removed |= await expire_policy(self._store, self._clock, self._policy)
        except StoreUnavailable as exc:
            log.warning("expiry skipped, store unavailable: %s", exc)
            return
        if self._on_removed is not None:
            self._on_removed(removed)

    def start(self) -> None:
        # coalesce: a node that was busy or asleep runs once, not once per missed interval;
        # max_instances=1: a slow run is never overlapped by the next on the same node.
        self._scheduler.add_job(
            self.run,
            IntervalTrigger(seconds=self._settings.expire_interval),
            id="expire",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
        )
        self._scheduler.start()

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
