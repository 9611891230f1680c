"""Read-only queries of the operator's page on the policy service's state: greylisted triplets
and tarpitted sessions a page at a time, newest first (keyset, and a text or status search reads
a bounded window of rows per page, as ``store.browse`` explains), the names the policy saw for a
page of addresses, and the passes behind learned addresses."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select

from s25rbl.store.browse import BrowseRepository, Page
from s25rbl.store.entries import contains_text
from s25rbl.store.models import GreylistTriplet, PolicyPass, TarpitRecord

TRIPLET_STATUSES = ("all", "waiting", "passed")
# Rows a text or status search reads per page: three columns matched a row, and a mail server's
# triplets come and go by the hundred thousand, so a smaller window than the lists' one.
POLICY_SEARCH_WINDOW = 20_000
TARPIT_STATUSES = ("all", "in tarpit", "survived", "abandoned")


@dataclass(frozen=True, slots=True)
class TripletSearch:
    """Which triplets: of one client ``network`` (an index probe), or with ``text`` in the
    address, sender or recipient; ``status`` one of TRIPLET_STATUSES."""

    network: str | None = None
    text: str | None = None
    status: str = "all"


@dataclass(frozen=True, slots=True)
class TarpitSearch:
    """Which tarpitted sessions: of one ``client`` address (an index probe), or with ``text`` in
    the name, sender or recipient; ``status`` one of TARPIT_STATUSES, where a session not yet
    survived counts as abandoned once it started before ``hung_up_before``."""

    hung_up_before: datetime
    client: str | None = None
    text: str | None = None
    status: str = "all"


class PolicyBrowseRepository(BrowseRepository):
    """Pages of the policy state, and the evidence of policy passes."""

    def _window(self) -> int:
        return POLICY_SEARCH_WINDOW

    async def triplets(
        self, search: TripletSearch, *, before_id: int | None, limit: int
    ) -> Page[GreylistTriplet]:
        t = GreylistTriplet
        query = select(t)
        if search.network is not None:
            query = query.where(t.network == search.network)
        elif search.text:
            query = query.where(
                or_(*(contains_text(c, search.text) for c in (t.client_ip, t.sender, t.recipient)))
            )
        if search.status == "waiting":
            query = query.where(t.passed_at.is_(None))
        elif search.status == "passed":
            query = query.where(t.passed_at.is_not(None))
        windowed = search.network is None and (bool(search.text) or search.status != "all")
        return await self._page(query, t.id, before_id=before_id, limit=limit, search=windowed)

    async def tarpits(self, search: TarpitSearch, *, before_id: int | None, limit: int) -> Page[TarpitRecord]:
        r = TarpitRecord
        query = select(r)
        if search.client is not None:
            query = query.where(r.client_ip == search.client)
        elif search.text:
            query = query.where(
                or_(*(contains_text(c, search.text) for c in (r.client_name, r.sender, r.recipient)))
            )
        if search.status == "survived":
            query = query.where(r.survived_at.is_not(None))
        elif search.status == "abandoned":
            query = query.where(r.survived_at.is_(None), r.started_at < search.hung_up_before)
        elif search.status == "in tarpit":
            query = query.where(r.survived_at.is_(None), r.started_at >= search.hung_up_before)
        windowed = search.client is None and (bool(search.text) or search.status != "all")
        return await self._page(query, r.id, before_id=before_id, limit=limit, search=windowed)

    async def names(self, ips: Sequence[str]) -> dict[str, str]:
        """A name the policy service saw for each of these addresses (its own confirmed one,
        recorded with a tarpitted session or a pass), where it saw one."""
        ips = list(set(ips))
        if not ips:
            return {}
        found: dict[str, str] = {}
        for model in (TarpitRecord, PolicyPass):
            result = await self.session.execute(
                select(model.client_ip, func.max(model.client_name))
                .where(model.client_ip.in_(ips), model.client_name != "", model.client_name != "unknown")
                .group_by(model.client_ip)
            )
            for ip, name in result.all():
                found.setdefault(ip, name)
        return found

    async def passes_for(self, ips: Sequence[str], per_ip: int) -> dict[str, list[PolicyPass]]:
        """The newest ``per_ip`` policy passes of each address, in one query (newest first)."""
        if not ips:
            return {}
        p = PolicyPass
        ranked = (
            select(
                p.id,
                func.row_number()
                .over(partition_by=p.client_ip, order_by=(p.at.desc(), p.id.desc()))
                .label("rank"),
            )
            .where(p.client_ip.in_(list(ips)))
            .subquery()
        )
        result = await self.session.execute(
            select(p)
            .join(ranked, ranked.c.id == p.id)
            .where(ranked.c.rank <= per_ip)
            .order_by(p.at.desc(), p.id.desc())
        )
        out: dict[str, list[PolicyPass]] = defaultdict(list)
        for row in result.scalars().all():
            out[row.client_ip].append(row)
        return dict(out)

    async def pass_counts(self, ips: Sequence[str]) -> dict[str, int]:
        if not ips:
            return {}
        result = await self.session.execute(
            select(PolicyPass.client_ip, func.count())
            .where(PolicyPass.client_ip.in_(list(ips)))
            .group_by(PolicyPass.client_ip)
        )
        return {ip: int(count) for ip, count in result.all()}
