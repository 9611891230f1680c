"""The policy service's state in the store: what the listener reads and writes, and what an
operator lists and clears (product §7).

The listener's writes come in batches (``apply``): one unit of work each. A pass it saw is
recorded once per SMTP session, and after ``learn_after`` unused passes within the learning
window the address is learned through the learning rules' own write (``learn_address``), which
refuses forbidden addresses and audits what it learns; the passes it used are marked, so a
revoked address needs ``learn_after`` new ones. Deletions by an operator are audited and change
the policy generation, on which every node forgets what it remembered.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from s25rbl.clock import Clock
from s25rbl.config import LearningSettings
from s25rbl.learning.ingest import learn_address
from s25rbl.lists.values import EntryKind, ListName
from s25rbl.store.db import Store
from s25rbl.store.entries import EntryRepository, MetaRepository
from s25rbl.store.models import GreylistTriplet, PolicyPass, TarpitRecord
from s25rbl.store.policy import (
    LATEST_TARPITS,
    TRIPLET_STATES,
    DirectReads,
    PassRepository,
    PolicyFilter,
    TarpitRepository,
    TripletRepository,
)
from s25rbl.store.tokens import AuditRepository


@dataclass(frozen=True, slots=True)
class TripletState:
    """A triplet as stored: its first attempt and when it passed."""

    first_seen: float
    passed_at: float | None


@dataclass(frozen=True, slots=True)
class ClientTarpit:
    """A client's latest tarpitted session."""

    instance: str
    started: float
    survived: bool
    delivered: bool


log = logging.getLogger(__name__)

GENERATION_KEY = "policy_generation"


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@dataclass(frozen=True, slots=True)
class SeenPass:
    """A pass the listener saw; ``learnable`` when s25rbl itself listed the client .2 or .4."""

    kind: str  # tarpit, greylist
    ip: str
    instance: str
    name: str  # s25rbl's own confirmed name of the client, or "unknown"
    helo: str
    sender: str
    recipient: str
    learnable: bool


@dataclass(frozen=True, slots=True)
class TarpitStarted:
    ip: str
    instance: str
    at: float
    name: str
    sender: str
    recipient: str
    mta: str


@dataclass(frozen=True, slots=True)
class TripletWrite:
    """``create``, ``reset``, ``pass`` or ``touch`` a triplet (``seen``: the pass, for ``pass``)."""

    kind: str
    key: str
    at: float
    network: str = ""
    sender: str = ""
    recipient: str = ""
    ip: str = ""
    seen: SeenPass | None = None


@dataclass(frozen=True, slots=True)
class SessionWent:
    """A tarpitted session reached DATA (``survive``) or sent its message (``deliver``)."""

    kind: str
    ip: str
    instance: str
    at: float
    seen: SeenPass | None = None


Write = TarpitStarted | TripletWrite | SessionWent


@dataclass
class Applied:
    """What a batch of writes did."""

    passes: int = 0
    learned: list[str] = field(default_factory=list)


class PolicyStore:
    """The policy state of one store."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        learning: LearningSettings,
        *,
        learn_after: int,
        retry_window: float,
        changed: Callable[[], Awaitable[None]],
    ) -> None:
        self._store = store
        self.store = store
        self._clock = clock
        self._learn_after = learn_after
        self._retry_window = timedelta(seconds=retry_window)
        self._window = timedelta(seconds=learning.window)  # passes count within it, as retries do
        self._lifetime = timedelta(seconds=learning.lifetime)
        self._changed = changed

    # --- the listener's reads ----------------------------------------------------------------

    async def read_clients(self, ips: list[str]) -> dict[str, ClientTarpit]:
        """The latest tarpitted session of each of these clients that has one."""
        async with self._store.transaction() as session:
            rows = await TarpitRepository(session).latest(ips)
        return {ip: _client(row) for ip, row in rows.items()}

    async def read_triplets(self, keys: list[str]) -> dict[str, TripletState]:
        """The state of each of these triplets that exists."""
        async with self._store.transaction() as session:
            found = await TripletRepository(session).states(keys)
        return {key: _triplet(first, passed) for key, (first, passed) in found.items()}

    async def client_tarpit(self, ip: str) -> ClientTarpit | None:
        return (await self.read_clients([ip])).get(ip)

    async def triplet(self, key: str) -> TripletState | None:
        return (await self.read_triplets([key])).get(key)

    async def unused_passes(self, ip: str, now: float) -> int:
        """The passes of ``ip`` within the learning window that no learning has used yet."""
        async with self._store.transaction() as session:
            return len(await PassRepository(session).unused(ip, _at(now) - self._window))

    async def generation(self) -> str:
        async with self._store.transaction() as session:
            return await MetaRepository(session).get(GENERATION_KEY) or ""

    # --- the listener's writes -----------------------------------------------------------------

    async def apply(self, writes: Sequence[Write]) -> Applied:
        """Apply a batch of the listener's writes in one unit of work, in order."""
        applied = Applied()
        touched: dict[str, float] = {}
        async with self._store.transaction() as session:
            triplets, tarpits = TripletRepository(session), TarpitRepository(session)
            creates: dict[str, dict[str, object]] = {}
            starts: list[dict[str, object]] = []
            for write in writes:
                if isinstance(write, TarpitStarted):
                    starts.append(_tarpit_row(write))
                elif write.kind == "create" and isinstance(write, TripletWrite):
                    creates.setdefault(write.key, _triplet_row(write))
            await tarpits.start(starts)
            await triplets.create(list(creates.values()))
            for write in writes:
                seen: SeenPass | None = None
                at = _at(write.at)
                if isinstance(write, TripletWrite):
                    if write.kind == "reset":
                        await triplets.reset(write.key, at, at - self._retry_window)
                    elif write.kind == "pass" and await triplets.mark_passed(write.key, at):
                        seen = write.seen
                    elif write.kind == "touch":
                        touched[write.key] = max(write.at, touched.get(write.key, 0.0))
                elif isinstance(write, SessionWent):
                    if write.kind == "survive":
                        await tarpits.survive(write.ip, write.instance, at)
                    elif await tarpits.deliver(write.ip, write.instance, at):
                        seen = write.seen
                if seen is not None and await self._count_pass(session, seen, at, applied):
                    applied.learned.append(seen.ip)
            for key, when in touched.items():
                await triplets.touch([key], _at(when))
        if applied.learned:
            await self._changed()  # this node answers from the new lists at once
        return applied

    async def _count_pass(
        self, session: AsyncSession, seen: SeenPass, at: datetime, applied: Applied
    ) -> bool:
        """Record the pass (once per session); True if it made the address learned."""
        passes = PassRepository(session)
        row = {
            "client_ip": seen.ip,
            "instance": seen.instance,
            "kind": seen.kind,
            "at": at,
            "client_name": seen.name[:255],
            "helo": seen.helo[:255],
            "sender": seen.sender[:512],
            "recipient": seen.recipient[:512],
        }
        if not await passes.add(row):
            return False
        applied.passes += 1
        if not seen.learnable:
            return False
        unused = await passes.unused(seen.ip, at - self._window)
        if await EntryRepository(session).find(ListName.WHITE, EntryKind.IP, seen.ip) is not None:
            # Whitelisted already (learned a moment ago, by this batch or another node): this
            # pass taught nothing new, and must not count towards learning it again later.
            await passes.use((p.id for p in unused), at)
            return False
        if len(unused) < self._learn_after:
            return False
        reason = f"learned: {len(unused)} policy passes from <{seen.sender}> to <{seen.recipient}>"
        learned = await learn_address(session, seen.ip, reason=reason, now=at, lifetime=self._lifetime)
        if learned:
            await passes.use((p.id for p in unused), at)
        return learned

    # --- what an operator sees and clears -------------------------------------------------------

    async def triplets(
        self, flt: PolicyFilter, *, after_id: int = 0, limit: int = 100
    ) -> Sequence[GreylistTriplet]:
        async with self._store.transaction() as session:
            return await TripletRepository(session).search(flt, after_id=after_id, limit=limit)

    async def tarpits(
        self, flt: PolicyFilter, *, after_id: int = 0, limit: int = 100
    ) -> Sequence[TarpitRecord]:
        async with self._store.transaction() as session:
            return await TarpitRepository(session).search(flt, after_id=after_id, limit=limit)

    async def passes(self, ip: str, limit: int = 50) -> Sequence[PolicyPass]:
        async with self._store.transaction() as session:
            return await PassRepository(session).for_ip(ip, limit)

    async def delete_triplet(self, triplet_id: int, *, actor: str) -> GreylistTriplet:
        """Forget a triplet: its next attempt is a first attempt again, on every node."""
        now = self._clock.now()
        async with self._store.transaction() as session:
            row = await TripletRepository(session).delete(triplet_id)
            detail = f"{row.network} <{row.sender}> -> <{row.recipient}>"[:2000]
            await AuditRepository(session).add(now, actor, "greylist.delete", f"#{triplet_id}", detail)
            await MetaRepository(session).set(GENERATION_KEY, secrets.token_hex(8))
        return row

    async def delete_tarpit(self, record_id: int, *, actor: str) -> TarpitRecord:
        """Forget a tarpitted session: a client that hung up is tarpitted again, not greylisted."""
        now = self._clock.now()
        async with self._store.transaction() as session:
            row = await TarpitRepository(session).delete(record_id)
            await AuditRepository(session).add(now, actor, "tarpit.delete", f"#{record_id}", row.client_ip)
            await MetaRepository(session).set(GENERATION_KEY, secrets.token_hex(8))
        return row


class PolicyReads:
    """The listener's reads of the state, one statement each, outside any unit of work (a
    node's hot path: see ``store.policy.DirectReads``)."""

    def __init__(self, store: Store) -> None:
        self._direct = DirectReads(store)

    @property
    def synchronous(self) -> bool:
        """The ``*_now`` reads work (SQLite): no waiting at all."""
        return self._direct.synchronous

    async def read_clients(self, ips: list[str]) -> dict[str, ClientTarpit]:
        return {row.client_ip: _client(row) for row in await self._direct.rows(LATEST_TARPITS, ips)}

    async def read_triplets(self, keys: list[str]) -> dict[str, TripletState]:
        return {row[0]: _triplet(row[1], row[2]) for row in await self._direct.rows(TRIPLET_STATES, keys)}

    def read_client_now(self, ip: str) -> ClientTarpit | None:
        rows = self._direct.rows_now(LATEST_TARPITS, [ip])
        return _client(rows[0]) if rows else None

    def read_triplet_now(self, key: str) -> TripletState | None:
        rows = self._direct.rows_now(TRIPLET_STATES, [key])
        return _triplet(rows[0][1], rows[0][2]) if rows else None

    def close(self) -> None:
        self._direct.close()


def _client(row: Any) -> ClientTarpit:
    started = row.started_at.timestamp()
    return ClientTarpit(row.instance, started, row.survived_at is not None, row.delivered_at is not None)


def _triplet(first: datetime, passed: datetime | None) -> TripletState:
    return TripletState(first.timestamp(), None if passed is None else passed.timestamp())


def _tarpit_row(write: TarpitStarted) -> dict[str, object]:
    return {
        "client_ip": write.ip,
        "instance": write.instance,
        "started_at": _at(write.at),
        "client_name": write.name[:255],
        "sender": write.sender[:512],
        "recipient": write.recipient[:512],
        "mta": write.mta[:64],
    }


def _triplet_row(write: TripletWrite) -> dict[str, object]:
    at = _at(write.at)
    return {
        "key": write.key,
        "network": write.network,
        "sender": write.sender[:512],
        "recipient": write.recipient[:512],
        "client_ip": write.ip,
        "first_seen": at,
        "last_seen": at,
        "passed_at": None,
    }
