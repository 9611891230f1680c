"""Taking reports: validate each, judge its address as s25rbl sees it, store it once, and learn
what the retries show (product §5).

What counts is what s25rbl saw itself: when it received a report, and its own verdict on the
address then (``judge.py``: only an address S25R lists, .2 or .4, can be learned, and a pool is
judged by the names s25rbl confirmed). A reporter's time and client name are evidence only.

A batch costs little and holds the store briefly: validation yields to the event loop (which
answers DNS) every few reports, addresses are judged before any transaction, reports are stored
in short transactions of at most ``CHUNK``, and each retry or pool is counted with a few index
seeks, however many reports it has. A refused report (a bad field, a time outside the window,
an address reported too often) refuses only itself; the answer says why, per report.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from s25rbl.clock import Clock
from s25rbl.config import LearningSettings
from s25rbl.errors import DuplicateEntry, InvalidEntry, ReportsLimited
from s25rbl.learning.judge import Judge, Listing, judge_all
from s25rbl.learning.limits import ReportLimits
from s25rbl.learning.pools import Pool, suggest
from s25rbl.learning.reports import build_report
from s25rbl.lists.domains import registrable_domain
from s25rbl.lists.values import EntryKind, EntrySource, EntrySpec, ListName
from s25rbl.store.db import Store
from s25rbl.store.entries import EntryRepository
from s25rbl.store.learning import LearnBlockRepository, ReportRepository
from s25rbl.store.models import Report
from s25rbl.store.tokens import AuditRepository

log = logging.getLogger(__name__)

MAX_BATCH = 1000
CHUNK = 50  # reports per write transaction: an operator's write waits for one chunk at most
OTHERS_FIRST = 1.0  # seconds a chunk waits at most for other units of work (SQLite)
YIELD_EVERY = 50  # reports validated between two turns of the event loop
RENEW_EVERY = timedelta(hours=1)  # a learned address's lifetime is rewritten at most this often


@dataclass
class IngestResult:
    """What one batch of reports did: counts, per-report errors, what was learned or suggested."""

    accepted: int = 0
    duplicate: int = 0
    refused: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    learned: list[str] = field(default_factory=list)
    suggested: list[str] = field(default_factory=list)
    limited: int = 0  # refused because their address was reported too often (within ``refused``)
    lists_changed: bool = False  # learned, or a pool approved: the node reloads its lists

    def refuse(self, index: int, field: str, problem: str, status: int = 422) -> None:
        self.refused += 1
        error: dict[str, Any] = {"index": index, "field": field, "problem": problem}
        if status != 422:
            error["status"] = status
        self.errors.append(error)

    def as_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicate": self.duplicate,
            "refused": self.refused,
            "errors": self.errors,
            "learned": self.learned,
            "suggested": self.suggested,
        }


async def learn_address(
    session: AsyncSession,
    ip: str,
    *,
    reason: str,
    now: datetime,
    lifetime: timedelta,
    actor: str = "learning",
) -> bool:
    """Learn ``ip`` into the whitelist for ``lifetime`` (inside the caller's unit of work),
    audited. False if the operator forbade it, or another node learned it a moment ago."""
    if await LearnBlockRepository(session).blocked(ip):
        log.info("not learning %s: the operator forbade it", ip)
        return False
    spec = EntrySpec(ListName.WHITE, EntryKind.IP, ip, reason[:255])
    try:
        await EntryRepository(session).add(
            spec, source=EntrySource.LEARNED, creator=actor, now=now, expires_at=now + lifetime
        )
    except DuplicateEntry:
        return False  # learned once
    await AuditRepository(session).add(now, actor, "learned", ip, reason[:2000])
    log.info("learned %s: %s", ip, reason)
    return True


class Learner:
    """Applies the learning rules of product §5, judged by ``judge`` (the node's verdict
    engine; None: nothing is judged, so nothing is learned) within ``limits``."""

    def __init__(
        self,
        settings: LearningSettings,
        clock: Clock,
        *,
        judge: Judge | None = None,
        limits: ReportLimits | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.judge = judge
        self.limits = limits
        self._writing = asyncio.Lock()
        self.window = timedelta(seconds=settings.window)
        self.min_interval = timedelta(seconds=settings.min_interval)
        self.lifetime = timedelta(seconds=settings.lifetime)

    async def ingest(self, store: Store, bodies: Sequence[Any], reporter: str) -> IngestResult:
        """Take a batch; ReportsLimited (nothing taken) if ``reporter`` sent too many lately."""
        if self.limits is not None:
            wait = min(self.limits.reporters.take(reporter, len(bodies)), 3600.0)
            if wait:
                per_minute = self.settings.reports_per_minute
                raise ReportsLimited(
                    f"more than {per_minute:g} reports a minute from {reporter}; nothing of this batch "
                    f"was taken: send it again in {math.ceil(wait)} s",
                    retry_after=wait,
                )
        result = IngestResult()
        now = self.clock.now()
        taken = await self._validate(bodies, reporter, now, result)
        listings = await judge_all(self.judge, (r.client_ip for r in taken))
        self._mark(taken, listings)
        for start in range(0, len(taken), CHUNK):
            # One chunk of this node's reports at a time, after any other unit of work of the
            # process (an operator's write) that is waiting on SQLite.
            async with self._writing:
                await store.after_others(OTHERS_FIRST)
                async with store.transaction() as session:
                    await self._store(session, taken[start : start + CHUNK], now, result)
        return result

    async def _validate(
        self, bodies: Sequence[Any], reporter: str, now: datetime, result: IngestResult
    ) -> list[Report]:
        taken: list[Report] = []
        for index, body in enumerate(bodies):
            if index % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
            try:
                report = build_report(body, reporter=reporter, now=now, window=self.window)
            except InvalidEntry as exc:
                result.refuse(index, exc.field, exc.problem)
                continue
            if self.limits is not None and self.limits.addresses.take(report.client_ip):
                per_minute = self.settings.address_reports_per_minute
                result.refuse(
                    index,
                    "client_ip",
                    f"more than {per_minute:g} reports a minute about {report.client_ip}: this one "
                    "adds nothing its retries need",
                    429,
                )
                result.limited += 1
                continue
            taken.append(report)
        return taken

    @staticmethod
    def _mark(reports: list[Report], listings: dict[str, Listing]) -> None:
        """What s25rbl says about each address now: whether its reports count, and the name a
        pool is judged by (its registrable domain worked out once per address)."""
        domains: dict[str, str] = {}
        for report in reports:
            listing = listings[report.client_ip]
            report.code = listing.code
            report.counts = listing.counts
            report.confirmed_name = listing.pool_name[:255]
            if report.confirmed_name and report.client_ip not in domains:
                domains[report.client_ip] = registrable_domain(report.confirmed_name) or ""
            report.pool_domain = domains.get(report.client_ip, "") if report.confirmed_name else ""

    async def _store(
        self, session: AsyncSession, chunk: list[Report], now: datetime, result: IngestResult
    ) -> None:
        fresh = await ReportRepository(session).add_new(chunk)
        result.accepted += len(fresh)
        result.duplicate += len(chunk) - len(fresh)
        counting = [r for r in fresh if r.counts]
        # Reports of one batch were all received at once: one attempt per triplet, one look
        # per pool, however many reports they are.
        triplets = {(r.client_ip, r.sender_norm, r.recipient): r for r in counting}
        whitelisted = await EntryRepository(session).find_many(
            ListName.WHITE, EntryKind.IP, {ip for ip, _, _ in triplets}
        )
        for triplet, report in triplets.items():
            entry = whitelisted.get(report.client_ip)
            if entry is None:
                if report.client_ip not in result.learned:  # by another triplet just now
                    await self._learn_from(session, triplet, report, now, result)
            elif entry.source is EntrySource.LEARNED:
                # Still seen, still listed but for learning: renew its lifetime (once a while).
                renewed = now + self.lifetime
                if entry.expires_at is None or entry.expires_at < renewed - RENEW_EVERY:
                    entry.expires_at = renewed
        pools: dict[Pool, set[str]] = {}
        for r in counting:
            if r.pool_domain:
                pools.setdefault(Pool(r.sender_norm, r.recipient, r.pool_domain), set()).add(r.confirmed_name)
        for pool, names in pools.items():
            opened = await suggest(
                session,
                pool,
                sorted(names),
                since=now - self.window,
                now=now,
                min_interval=self.min_interval,
                retries=self.settings.retries,
                auto_approve=self.settings.auto_approve_pools,
            )
            for domain, approved in opened:
                if domain not in result.suggested:
                    result.suggested.append(domain)
                result.lists_changed |= approved

    async def _learn_from(
        self,
        session: AsyncSession,
        triplet: tuple[str, str, str],
        report: Report,
        now: datetime,
        result: IngestResult,
    ) -> None:
        retries = await ReportRepository(session).count_retries(
            triplet, now - self.window, now, self.min_interval, self.settings.retries
        )
        if retries < self.settings.retries:
            return
        reason = f"learned: {retries} retries from <{report.sender}> to <{report.recipient}>"
        if await learn_address(session, report.client_ip, reason=reason, now=now, lifetime=self.lifetime):
            result.learned.append(report.client_ip)
            result.lists_changed = True
