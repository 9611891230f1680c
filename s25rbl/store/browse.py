"""Read-only queries of the operator's page: pages newest first (keyset, never OFFSET, so the
last page of 100,000 rows costs what the first does), evidence for a page of addresses in one
query, and counts per time bucket.

A text search (``'%text%'``) cannot use a B-tree, and a common word whose matches all lie in old
rows makes any plan read most of the table before it has a page. So a search reads at most a
window of rows per page, newest first; a page the window cut short says where to go on
("search older"). Each page then costs what its window costs, whatever the table's size.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from s25rbl.store.entries import EntryFilter, contains_text, filtered
from s25rbl.store.models import AuditEvent, Entry, LearnBlock, PolicyPass, Report, Suggestion, TarpitRecord

T = TypeVar("T")
# Rows a text search reads per page: ILIKE on PostgreSQL costs several times SQLite's LIKE a row.
SEARCH_WINDOW = {"postgresql": 20_000}
DEFAULT_SEARCH_WINDOW = 50_000


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """Rows newest first; ``next_before``: the cursor of the next (older) page, None when
    nothing older is left; ``window_ended``: the page is short because the search read its
    window of rows, and goes on below ``next_before``."""

    rows: Sequence[T]
    next_before: int | None = None
    window_ended: bool = False


class BrowseRepository:
    """Pages of entries, evidence, forbidden addresses, suggestions and audit events."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _window(self) -> int:
        return SEARCH_WINDOW.get(self.session.get_bind().dialect.name, DEFAULT_SEARCH_WINDOW)

    async def _page(
        self, query: Any, id_column: Any, *, before_id: int | None, limit: int, search: bool
    ) -> Page[Any]:
        floor = 0
        if search:
            top = before_id
            if top is None:
                highest = await self.session.execute(select(func.max(id_column)))
                top = int(highest.scalar_one_or_none() or 0) + 1
            floor = max(top - self._window(), 0)
            query = query.where(id_column >= floor)
        if before_id is not None:
            query = query.where(id_column < before_id)
        rows = (await self.session.execute(query.order_by(id_column.desc()).limit(limit + 1))).scalars().all()
        if len(rows) > limit:
            return Page(rows[:limit], rows[limit - 1].id)
        if floor > 0:
            lower = await self.session.execute(select(func.min(id_column)))
            if (lower.scalar_one_or_none() or floor) < floor:
                return Page(rows, floor, window_ended=True)
        return Page(rows)

    async def entries(
        self, flt: EntryFilter, now: datetime, *, before_id: int | None, limit: int
    ) -> Page[Entry]:
        query = filtered(select(Entry), flt, now)
        return await self._page(query, Entry.id, before_id=before_id, limit=limit, search=bool(flt.text))

    async def reports_for(self, ips: Sequence[str], per_ip: int) -> dict[str, list[Report]]:
        """The newest ``per_ip`` reports of each address, in one query (newest first)."""
        if not ips:
            return {}
        ranked = (
            select(
                Report.id,
                func.row_number()
                .over(partition_by=Report.client_ip, order_by=(Report.received_at.desc(), Report.id.desc()))
                .label("rank"),
            )
            .where(Report.client_ip.in_(list(ips)))
            .subquery()
        )
        result = await self.session.execute(
            select(Report)
            .join(ranked, ranked.c.id == Report.id)
            .where(ranked.c.rank <= per_ip)
            .order_by(Report.received_at.desc(), Report.id.desc())
        )
        out: dict[str, list[Report]] = defaultdict(list)
        for report in result.scalars().all():
            out[report.client_ip].append(report)
        return dict(out)

    async def report_counts(self, ips: Sequence[str]) -> dict[str, int]:
        if not ips:
            return {}
        result = await self.session.execute(
            select(Report.client_ip, func.count())
            .where(Report.client_ip.in_(list(ips)))
            .group_by(Report.client_ip)
        )
        return {ip: int(count) for ip, count in result.all()}

    async def forbidden(self, *, text: str | None, limit: int) -> Sequence[LearnBlock]:
        query = select(LearnBlock)
        if text:
            query = query.where(contains_text(LearnBlock.ip, text))
        result = await self.session.execute(query.order_by(LearnBlock.created_at.desc()).limit(limit))
        return result.scalars().all()

    async def suggestions(
        self, status: str | None, *, before_id: int | None, limit: int
    ) -> Sequence[Suggestion]:
        query = select(Suggestion)
        if status is not None:
            query = query.where(Suggestion.status == status)
        if before_id is not None:
            query = query.where(Suggestion.id < before_id)
        result = await self.session.execute(query.order_by(Suggestion.id.desc()).limit(limit))
        return result.scalars().all()

    async def audit(
        self, *, text: str | None, action: str | None, before_id: int | None, limit: int
    ) -> Page[AuditEvent]:
        query = select(AuditEvent)
        if action:
            query = query.where(AuditEvent.action == action)
        if text:
            columns = (AuditEvent.actor, AuditEvent.target, AuditEvent.detail)
            query = query.where(or_(*(contains_text(c, text) for c in columns)))
        return await self._page(query, AuditEvent.id, before_id=before_id, limit=limit, search=bool(text))

    async def audit_actions(self) -> list[str]:
        """Every action in the log, one index probe per name (not a scan of the whole log)."""
        actions: list[str] = []
        while len(actions) < 100:
            query = select(func.min(AuditEvent.action))
            if actions:
                query = query.where(AuditEvent.action > actions[-1])
            found = (await self.session.execute(query)).scalar_one_or_none()
            if found is None:
                return actions
            actions.append(str(found))
        return actions

    async def per_bucket(self, what: str, edges: Sequence[datetime]) -> list[int]:
        """How many rows of ``what`` fall in each [edges[i], edges[i + 1]).

        ``what``: ``learned`` (audit events of addresses learned), ``reports`` (reports, by
        the time of the attempt), ``tarpits`` (tarpitted sessions, by their start) or
        ``passes`` (the policy service's passes). One statement of one indexed range count per bucket: each
        reads only its own slice of the index, where a CASE per bucket would evaluate every
        CASE on every row of the whole range (30 buckets of 100,000 rows: a second).
        """
        model: Any
        if what == "learned":
            model, column, where = AuditEvent, AuditEvent.at, [AuditEvent.action == "learned"]
        elif what == "reports":
            model, column, where = Report, Report.reported_at, []
        elif what == "tarpits":
            model, column, where = TarpitRecord, TarpitRecord.started_at, []
        elif what == "passes":
            model, column, where = PolicyPass, PolicyPass.at, []
        else:
            raise ValueError(f"unknown series {what!r}")
        if len(edges) < 2:
            return []
        counts = [
            select(func.count()).select_from(model).where(*where, column >= lo, column < hi).scalar_subquery()
            for lo, hi in itertools.pairwise(edges)
        ]
        row = (await self.session.execute(select(*counts))).one()
        return [int(v) for v in row]
