"""Repositories of the learning loop: reports, forbidden addresses, pool suggestions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from s25rbl.errors import EntryNotFound
from s25rbl.store.models import LearnBlock, Report, Suggestion


class PoolMember(NamedTuple):
    """One counting attempt of a pool: the address, s25rbl's confirmed name for it, when."""

    ip: str
    name: str
    at: datetime


class ReportRepository:
    """Retry reports: stored once by idempotency key; retries, pools and evidence read by index."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def has_key(self, key: str) -> bool:
        result = await self.session.execute(select(Report.id).where(Report.idempotency_key == key))
        return result.first() is not None

    async def add(self, report: Report) -> bool:
        """Insert; False if the idempotency key exists (maybe just added by another node)."""
        if await self.has_key(report.idempotency_key):
            return False
        self.session.add(report)
        try:
            async with self.session.begin_nested():
                await self.session.flush()
        except IntegrityError:
            return False
        return True

    async def add_new(self, reports: Sequence[Report]) -> list[Report]:
        """Insert the reports whose idempotency keys are new (two queries for all of them);
        returns those inserted. Keys stored by another node a moment ago are found one by one."""
        keys = {r.idempotency_key for r in reports}
        stored = await self.session.execute(
            select(Report.idempotency_key).where(Report.idempotency_key.in_(keys))
        )
        seen = set(stored.scalars())
        fresh = []
        for report in reports:
            if report.idempotency_key not in seen:
                seen.add(report.idempotency_key)
                fresh.append(report)
        if not fresh:
            return []
        try:
            async with self.session.begin_nested():
                self.session.add_all(fresh)
                await self.session.flush()
        except IntegrityError:
            return [r for r in fresh if await self.add(r)]
        return fresh

    async def count_retries(
        self,
        triplet: tuple[str, str, str],
        since: datetime,
        now: datetime,
        min_interval: timedelta,
        enough: int,
    ) -> int:
        """Retries of (ip, sender, recipient) among the attempts that count, received from
        ``since`` to ``now``: each at least ``min_interval`` after the one before, counted up to
        ``enough``. One index seek per retry, however many reports the triplet has."""
        ip, sender, recipient = triplet
        match = (
            Report.client_ip == ip,
            Report.sender_norm == sender,
            Report.recipient == recipient,
            Report.counts.is_(True),
        )
        at = (
            await self.session.execute(
                select(func.min(Report.received_at)).where(*match, Report.received_at >= since)
            )
        ).scalar_one_or_none()
        retries = 0
        while at is not None and retries < enough and at + min_interval <= now:
            # Strictly later, too: with a min_interval of 0, reports received together (one
            # batch) are one attempt, not a retry of each other.
            after = select(func.min(Report.received_at)).where(
                *match, Report.received_at >= at + min_interval, Report.received_at > at
            )
            at = (await self.session.execute(after)).scalar_one_or_none()
            if at is not None:
                retries += 1
        return retries

    async def pool_members(
        self, sender: str, recipient: str, domain: str, since: datetime, *, limit: int
    ) -> list[PoolMember]:
        """The most recent ``limit`` counting attempts of (sender, recipient) from addresses whose
        confirmed names are in ``domain`` (a registrable domain), received since ``since``."""
        result = await self.session.execute(
            select(Report.client_ip, Report.confirmed_name, Report.received_at)
            .where(
                Report.sender_norm == sender,
                Report.recipient == recipient,
                Report.pool_domain == domain,
                Report.received_at >= since,
                Report.counts.is_(True),
            )
            .order_by(Report.received_at.desc())
            .limit(limit)
        )
        return [PoolMember(ip, name, at) for ip, name, at in result.all()]

    async def stop_counting(self, ip: str) -> int:
        """The address's reports so far count no more (it was revoked: its count starts afresh)."""
        result = await self.session.execute(
            update(Report).where(Report.client_ip == ip, Report.counts.is_(True)).values(counts=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def for_ip(self, ip: str, limit: int = 50) -> Sequence[Report]:
        result = await self.session.execute(
            select(Report).where(Report.client_ip == ip).order_by(Report.received_at.desc()).limit(limit)
        )
        return result.scalars().all()

    async def delete_older_than(self, cutoff: datetime) -> int:
        result = await self.session.execute(delete(Report).where(Report.received_at < cutoff))
        return int(getattr(result, "rowcount", 0) or 0)


class LearnBlockRepository:
    """Addresses the operator forbade learning."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def blocked(self, ip: str) -> bool:
        return await self.session.get(LearnBlock, ip) is not None

    async def block(self, ip: str, reason: str, actor: str, now: datetime) -> None:
        if not await self.blocked(ip):
            self.session.add(LearnBlock(ip=ip, reason=reason, created_at=now, created_by=actor))

    async def page(self, *, after: str = "", limit: int = 100) -> Sequence[LearnBlock]:
        """Forbidden addresses in address-text order, from just after ``after``."""
        result = await self.session.execute(
            select(LearnBlock).where(LearnBlock.ip > after).order_by(LearnBlock.ip).limit(limit)
        )
        return result.scalars().all()


class SuggestionRepository:
    """Pool suggestions: opened or refreshed by learning, decided by an operator."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def by_domain(self, domain: str) -> Suggestion | None:
        result = await self.session.execute(select(Suggestion).where(Suggestion.domain == domain))
        return result.scalar_one_or_none()

    async def get(self, suggestion_id: int) -> Suggestion:
        row = await self.session.get(Suggestion, suggestion_id)
        if row is None:
            raise EntryNotFound(f"no suggestion with id {suggestion_id}")
        return row

    async def upsert(self, domain: str, evidence: str, now: datetime) -> Suggestion | None:
        """Open or refresh the suggestion for ``domain``; decided ones stay as decided."""
        row = await self.by_domain(domain)
        if row is None:
            row = Suggestion(domain=domain, status="open", evidence=evidence, created_at=now, updated_at=now)
            self.session.add(row)
            try:
                async with self.session.begin_nested():
                    await self.session.flush()
            except IntegrityError:
                return await self.by_domain(domain)
            return row
        if row.status == "open":
            row.evidence = evidence
            row.updated_at = now
        return row

    async def search(
        self, status: str | None, *, after_id: int = 0, limit: int = 100
    ) -> Sequence[Suggestion]:
        query = select(Suggestion).where(Suggestion.id > after_id)
        if status is not None:
            query = query.where(Suggestion.status == status)
        result = await self.session.execute(query.order_by(Suggestion.id).limit(limit))
        return result.scalars().all()
