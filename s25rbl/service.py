"""Use cases shared by the CLI and the API: each one unit of work on the store, audited."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from s25rbl.builtin import BUILTIN_WHITELIST
from s25rbl.clock import Clock
from s25rbl.entries import EntrySpec
from s25rbl.errors import InvalidEntry
from s25rbl.store.db import Store
from s25rbl.store.models import AuditEvent, Entry, EntryKind, EntrySource, ListName, Token
from s25rbl.store.repository import (
    AuditRepository,
    EntryFilter,
    EntryRepository,
    MetaRepository,
    TokenRepository,
)
from s25rbl.verdict.lists import ListIndex

log = logging.getLogger(__name__)

BUILTIN_KEY = "builtin_whitelist_loaded_at"
SCOPES = ("read", "report", "write", "admin")
# What each scope grants: admin everything, write also reads; report only reports.
GRANTS = {"read": {"read"}, "report": {"report"}, "write": {"read", "write"}, "admin": set(SCOPES)}
TOKEN_PREFIX = "s25rbl_"


def _describe(entry: Entry) -> str:
    return f"{entry.list}list {entry.kind} {entry.value}"


async def add_entries(
    store: Store,
    items: Sequence[tuple[EntrySpec, datetime | None]],
    *,
    clock: Clock,
    actor: str,
    source: EntrySource = EntrySource.MANUAL,
) -> list[Entry]:
    """Add (spec, expiry) pairs, all or none: a duplicate anywhere rolls the batch back."""
    now = clock.now()
    async with store.transaction() as session:
        repo, audit = EntryRepository(session), AuditRepository(session)
        added = []
        for spec, expires_at in items:
            entry = await repo.add(spec, source=source, creator=actor, now=now, expires_at=expires_at)
            await audit.add(now, actor, "entry.add", f"#{entry.id}", _describe(entry))
            added.append(entry)
        return added


async def add_entry(
    store: Store,
    spec: EntrySpec,
    *,
    clock: Clock,
    creator: str,
    source: EntrySource = EntrySource.MANUAL,
    expires_at: datetime | None = None,
) -> Entry:
    (entry,) = await add_entries(store, [(spec, expires_at)], clock=clock, actor=creator, source=source)
    return entry


async def update_entry(
    store: Store,
    entry_id: int,
    *,
    clock: Clock,
    actor: str,
    reason: str | None = None,
    expires_at: datetime | None = None,
    clear_expiry: bool = False,
) -> Entry:
    now = clock.now()
    async with store.transaction() as session:
        entry = await EntryRepository(session).update(
            entry_id, now, reason=reason, expires_at=expires_at, clear_expiry=clear_expiry
        )
        change = {"reason": reason, "expires_at": expires_at.isoformat() if expires_at else None}
        await AuditRepository(session).add(now, actor, "entry.update", f"#{entry_id}", json.dumps(change))
        return entry


async def get_entry(store: Store, entry_id: int) -> Entry:
    async with store.transaction() as session:
        return await EntryRepository(session).get(entry_id)


async def remove_entry(store: Store, entry_id: int, *, clock: Clock, actor: str = "cli") -> Entry:
    now = clock.now()
    async with store.transaction() as session:
        entry = await EntryRepository(session).remove(entry_id, now)
        await AuditRepository(session).add(now, actor, "entry.remove", f"#{entry_id}", _describe(entry))
        return entry


async def list_entries(
    store: Store, flt: EntryFilter, *, clock: Clock, after_id: int = 0, limit: int = 100_000
) -> Sequence[Entry]:
    async with store.transaction() as session:
        return await EntryRepository(session).search(flt, clock.now(), after_id=after_id, limit=limit)


async def import_specs(
    store: Store, specs: Sequence[EntrySpec], *, clock: Clock, creator: str
) -> tuple[int, int]:
    """Add every spec not already present, in one transaction. Returns (added, already present)."""
    now = clock.now()
    async with store.transaction() as session:
        added, present = await EntryRepository(session).add_missing(
            specs, source=EntrySource.IMPORTED, creator=creator, now=now
        )
        await AuditRepository(session).add(now, creator, "import", "", f"{added} added, {present} present")
    return added, present


async def load_builtin_whitelist(store: Store, *, clock: Clock) -> int:
    """Add the starter whitelist once per database; later removals by the operator stick."""
    now = clock.now()
    async with store.transaction() as session:
        repo, meta = EntryRepository(session), MetaRepository(session)
        if await meta.get(BUILTIN_KEY) is not None or await repo.has_source(EntrySource.BUILTIN):
            return 0
        added = 0
        for domain, reason in BUILTIN_WHITELIST:
            spec = EntrySpec(ListName.WHITE, EntryKind.DOMAIN, domain, reason)
            if await repo.find(spec.list, spec.kind, spec.value) is None:
                await repo.add(spec, source=EntrySource.BUILTIN, creator="s25rbl", now=now)
                added += 1
        await meta.set(BUILTIN_KEY, now.isoformat())
    log.info("builtin whitelist: %d domains added", added)
    return added


async def load_index(store: Store, *, clock: Clock) -> ListIndex:
    """Read every active entry and build the in-memory snapshot.

    The build runs in a worker thread: with 100,000s of entries it takes seconds, and the
    event loop must go on answering DNS meanwhile (it gets the GIL back every few ms).
    """
    async with store.transaction() as session:
        repo = EntryRepository(session)
        version = await repo.version()
        rows = await repo.active_rows(clock.now())
    return await asyncio.to_thread(ListIndex.build, rows, version)


# --- tokens and the audit log --------------------------------------------------------------


def token_digest(token: str) -> str:
    # Tokens carry 256 random bits, so one fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_scopes(text: str | Sequence[str]) -> list[str]:
    items = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    if not items:
        raise InvalidEntry("scope", f"give at least one of {', '.join(SCOPES)}")
    for item in items:
        if item not in SCOPES:
            raise InvalidEntry("scope", f"{item!r}: use {', '.join(SCOPES)}")
    return sorted(set(items), key=SCOPES.index)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a token's name and what its scopes grant."""

    name: str
    granted: frozenset[str]

    @property
    def actor(self) -> str:
        return f"token:{self.name}"


async def create_token(store: Store, name: str, scopes: Sequence[str], *, clock: Clock, actor: str) -> str:
    if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise InvalidEntry("name", "1-64 letters, digits, '-', '_' or '.'")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = clock.now()
    async with store.transaction() as session:
        await TokenRepository(session).add(name, token_digest(token), ",".join(scopes), now)
        await AuditRepository(session).add(now, actor, "token.create", name, ",".join(scopes))
    return token


async def list_tokens(store: Store) -> Sequence[Token]:
    async with store.transaction() as session:
        return await TokenRepository(session).all()


async def revoke_token(store: Store, name: str, *, clock: Clock, actor: str) -> Token:
    now = clock.now()
    async with store.transaction() as session:
        token = await TokenRepository(session).revoke(name, now)
        await AuditRepository(session).add(now, actor, "token.revoke", name)
        return token


async def authenticate(store: Store, token: str, *, clock: Clock) -> Principal | None:
    async with store.transaction() as session:
        repo = TokenRepository(session)
        row = await repo.by_digest(token_digest(token))
        if row is None:
            return None
        await repo.touch(row.id, clock.now())
        granted: set[str] = set()
        for scope in row.scopes.split(","):
            granted |= GRANTS.get(scope, set())
        return Principal(row.name, frozenset(granted))


async def audit_events(store: Store, *, after_id: int = 0, limit: int = 100) -> Sequence[AuditEvent]:
    async with store.transaction() as session:
        return await AuditRepository(session).search(after_id=after_id, limit=limit)
