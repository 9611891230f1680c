"""The starter whitelist in a store: the domains it was offered, and the builtin entries they added.

Safe with several nodes starting at once on one database: a domain is claimed by inserting its
offer row (primary key, ``ON CONFLICT DO NOTHING``: the first insert wins, a concurrent one
waits for it to commit and then skips), and an entry is inserted the same way against the
entries' unique key, so nothing is read first and written later on a guess.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from s25rbl.lists.values import EntryKind, EntrySource, ListName
from s25rbl.store.models import Entry, StarterOffer

CHUNK = 200  # rows per INSERT: well under every driver's limit on bound parameters


class StarterRepository:
    """Starter offers, and the builtin entries that starter releases add."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _insert(self, table: type[Entry] | type[StarterOffer]) -> Any:
        dialect = postgresql if self.session.get_bind().dialect.name == "postgresql" else sqlite
        return dialect.insert(table)

    async def offered(self) -> set[str]:
        result = await self.session.execute(select(StarterOffer.domain))
        return set(result.scalars().all())

    async def claim(self, offers: Iterable[tuple[str, str]], now: datetime) -> set[str]:
        """Record (domain, release) offers as ``added``; the domains this call recorded.

        Domains go in sorted order, so two concurrent claims wait on each other instead of
        deadlocking. A domain another transaction recorded is left out of the answer.
        """
        rows = [
            {"domain": domain, "release": release, "offered_at": now, "outcome": "added"}
            for domain, release in sorted(offers)
        ]
        claimed: set[str] = set()
        for start in range(0, len(rows), CHUNK):
            statement = (
                self._insert(StarterOffer)
                .values(rows[start : start + CHUNK])
                .on_conflict_do_nothing(index_elements=["domain"])
                .returning(StarterOffer.domain)
            )
            result = await self.session.execute(statement)
            claimed.update(result.scalars().all())
        return claimed

    async def set_outcome(self, domains: Collection[str], outcome: str) -> None:
        if domains:
            await self.session.execute(
                update(StarterOffer).where(StarterOffer.domain.in_(domains)).values(outcome=outcome)
            )

    async def domains_present(self, domains: Collection[str]) -> set[str]:
        """Those of ``domains`` that either list holds as a domain entry."""
        result = await self.session.execute(
            select(Entry.value).where(Entry.kind == EntryKind.DOMAIN, Entry.value.in_(domains))
        )
        return set(result.scalars().all())

    async def add_entries(self, entries: Sequence[tuple[str, str, str]], now: datetime) -> set[str]:
        """Insert (domain, reason, release) as builtin white domain entries, skipping any the
        whitelist holds by then; the domains inserted."""
        rows = [
            {
                "list": ListName.WHITE,
                "kind": EntryKind.DOMAIN,
                "value": domain,
                "reason": reason,
                "source": EntrySource.BUILTIN,
                "created_at": now,
                "updated_at": now,
                "created_by": "s25rbl",
                "hit_count": 0,
                "starter_release": release,
            }
            for domain, reason, release in entries
        ]
        added: set[str] = set()
        for start in range(0, len(rows), CHUNK):
            statement = (
                self._insert(Entry)
                .values(rows[start : start + CHUNK])
                .on_conflict_do_nothing(index_elements=["list", "kind", "value"])
                .returning(Entry.value)
            )
            result = await self.session.execute(statement)
            added.update(result.scalars().all())
        return added
