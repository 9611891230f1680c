"""Pool suggestions: one (sender, recipient) retried from several addresses of a provider's pool
of outgoing servers, judged by the names s25rbl confirmed itself (never a name a reporter sent).

The suggestion is the narrowest domain that holds the retrying addresses' names: two servers
``a1-1.smtp-out.bigmail.example`` and ``a2-2.smtp-out.bigmail.example`` suggest
``smtp-out.bigmail.example``, not all of ``bigmail.example``, and never more than a
registrable domain. A suggestion waits for an operator; ``auto_approve_pools`` approves one
only if no name behind it hits S25R's general rules 1-6, since names that look dynamic are
what an ISP's pool of end users looks like too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from s25rbl.errors import DuplicateEntry, InvalidEntry
from s25rbl.learning.retries import count_retries
from s25rbl.lists.values import EntryKind, EntrySource, EntrySpec, ListName, parse_domain
from s25rbl.store.entries import EntryRepository
from s25rbl.store.learning import PoolMember, ReportRepository, SuggestionRepository
from s25rbl.store.models import Entry, Suggestion
from s25rbl.store.tokens import AuditRepository
from s25rbl.verdict.s25r import first_general_rule

log = logging.getLogger(__name__)

POOL_ROWS = 200  # the most recent attempts of one pool looked at: enough to see it, bounded


@dataclass(frozen=True, slots=True)
class Pool:
    """Where one (sender, recipient) was attempted from, within one registrable domain."""

    sender: str
    recipient: str
    domain: str  # the registrable domain (the widest a suggestion may be)


class PoolView:
    """One pool's recent attempts, and which of its domains they make a suggestion: each
    domain is worked out once, however many reported names lie under it."""

    def __init__(
        self, pool: Pool, members: Sequence[PoolMember], min_interval: timedelta, retries: int
    ) -> None:
        self.pool = pool
        self._members = members
        self._min_interval = min_interval
        self._retries = retries
        self._seen: dict[str, list[PoolMember] | None] = {}

    def narrowest(self, name: str) -> tuple[str, list[PoolMember]] | None:
        """The narrowest parent of ``name`` (down to the registrable domain) whose names came
        from two or more addresses that retried together ``retries`` times; its members."""
        labels = name.split(".")
        for cut in range(1, len(labels)):
            suffix = ".".join(labels[cut:])
            if len(suffix) < len(self.pool.domain):
                break
            if suffix not in self._seen:
                self._seen[suffix] = self._members_if_pool(suffix)
            inside = self._seen[suffix]
            if inside is not None:
                # A suffix no whitelist entry may hold (a label with odd octets, chosen by
                # whoever holds the names) is no suggestion, and neither is anything wider:
                # that would whitelist more than the names that retried together share.
                return (suffix, inside) if _entry_domain(suffix) else None
        return None

    def _members_if_pool(self, suffix: str) -> list[PoolMember] | None:
        dotted = "." + suffix
        inside = [m for m in self._members if m.name == suffix or m.name.endswith(dotted)]
        if len({m.ip for m in inside}) < 2:
            return None
        if count_retries([m.at for m in inside], self._min_interval) < self._retries:
            return None
        return inside


async def suggest(
    session: AsyncSession,
    pool: Pool,
    names: Iterable[str],
    *,
    since: datetime,
    now: datetime,
    min_interval: timedelta,
    retries: int,
    auto_approve: bool,
) -> list[tuple[str, bool]]:
    """Open or refresh the suggestions the pool's retries make for ``names`` (s25rbl's confirmed
    names of the addresses just reported); returns each domain suggested, and whether it was
    approved at once (``auto_approve``)."""
    members = await ReportRepository(session).pool_members(
        pool.sender, pool.recipient, pool.domain, since, limit=POOL_ROWS
    )
    view = PoolView(pool, members, min_interval, retries)
    found: dict[str, list[PoolMember]] = {}
    for name in names:
        hit = view.narrowest(name)
        if hit is not None:
            found.setdefault(hit[0], hit[1])
    suggested = []
    for suffix, inside in found.items():
        opened = await _open(session, pool, suffix, inside, now=now, auto_approve=auto_approve)
        if opened is not None:
            suggested.append((suffix, opened))
    return suggested


async def _open(
    session: AsyncSession,
    pool: Pool,
    suffix: str,
    inside: list[PoolMember],
    *,
    now: datetime,
    auto_approve: bool,
) -> bool | None:
    """None: nothing to suggest (whitelisted already, or decided); else whether approved now."""
    if await EntryRepository(session).find(ListName.WHITE, EntryKind.DOMAIN, suffix) is not None:
        return None
    addresses = sorted({m.ip for m in inside})
    names = sorted({m.name for m in inside})
    dynamic = {n: rule for n in names if (rule := _general_rule(n))}
    # Trim the lists, never the JSON text: the evidence must stay readable (<= 8,000 chars).
    evidence = json.dumps(
        {
            "sender": pool.sender[:200],
            "recipient": pool.recipient[:200],
            "addresses": addresses[:40],
            "address_count": len(addresses),
            "names": names[:10],
            "names_hitting_rules": len(dynamic),
            "attempts": [
                {"time": m.at.isoformat(), "client_ip": m.ip} for m in sorted(inside, key=_at)[-20:]
            ],
        }
    )
    suggestion = await SuggestionRepository(session).upsert(suffix, evidence, now)
    if suggestion is None or suggestion.status != "open":
        return None
    if not auto_approve:
        return False
    if dynamic:
        log.info(
            "pool %s not approved automatically: %d of its names hit S25R rules (%s)",
            suffix,
            len(dynamic),
            ", ".join(f"{n} {r}" for n, r in list(dynamic.items())[:3]),
        )
        return False
    await approve_suggestion(session, suggestion.id, actor="learning (auto_approve_pools)", now=now)
    return True


def _at(member: PoolMember) -> datetime:
    return member.at


def _entry_domain(suffix: str) -> bool:
    """Whether ``suffix`` may be a whitelist domain entry (what ``EntrySpec.build`` checks)."""
    try:
        parse_domain(suffix)
    except InvalidEntry:
        return False
    return True


def _general_rule(name: str) -> str | None:
    hit = first_general_rule(name)
    return hit[0] if hit is not None else None


async def approve_suggestion(
    session: AsyncSession, suggestion_id: int, *, actor: str, now: datetime
) -> tuple[Suggestion, Entry]:
    """Whitelist a suggestion's domain (inside the caller's unit of work), audited."""
    suggestions = SuggestionRepository(session)
    suggestion = await suggestions.get(suggestion_id)
    if suggestion.status != "open":
        raise DuplicateEntry(f"suggestion {suggestion_id} is already {suggestion.status}")
    evidence = json.loads(suggestion.evidence)
    reason = f"pool retries from {len(evidence.get('addresses', []))} addresses (suggestion {suggestion_id})"
    # Validated as every entry is: a suggestion stored before names were checked may hold one
    # no entry can (InvalidEntry, the API's 422).
    spec = EntrySpec.build(ListName.WHITE.value, EntryKind.DOMAIN.value, suggestion.domain, reason[:255])
    entry = await EntryRepository(session).add(spec, source=EntrySource.MANUAL, creator=actor, now=now)
    suggestion.status = "approved"
    suggestion.entry_id = entry.id
    suggestion.updated_at = now
    await AuditRepository(session).add(
        now, actor, "suggestion.approve", suggestion.domain, f"entry #{entry.id}"
    )
    return suggestion, entry
