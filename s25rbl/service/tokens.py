"""API tokens and the audit log: who may do what, and what they did."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from s25rbl.clock import Clock
from s25rbl.errors import InvalidEntry
from s25rbl.store.db import Store
from s25rbl.store.models import AuditEvent, Token
from s25rbl.store.tokens import AuditRepository, TokenRepository

SCOPES = ("read", "report", "write", "admin")
# What each scope grants: admin everything, write also reads; report only reports.
GRANTS = {"read": {"read"}, "report": {"report"}, "write": {"read", "write"}, "admin": set(SCOPES)}
TOKEN_PREFIX = "s25rbl_"


MAX_TOKEN = 256  # characters; ours are 50


def well_formed(token: str) -> bool:
    """Could this be a token at all: printable ASCII without spaces, of a sane length. Anything
    else (non-UTF-8 bytes in the header, control characters, 8 KiB of junk) is refused unread."""
    return 0 < len(token) <= MAX_TOKEN and token.isascii() and token.isprintable() and " " not in token


def token_digest(token: str) -> str:
    # Tokens carry 256 random bits, so one fast hash is enough: there is nothing to brute-force.
    # surrogateescape: a header's undecodable bytes still hash (to nothing that exists).
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


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


class Tokens:
    """Bearer tokens: created (shown once), listed, revoked, and checked on every request."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def create(self, name: str, scopes: Sequence[str], *, actor: str) -> str:
        if (
            not name
            or len(name) > 64
            or not name.replace("-", "").replace("_", "").replace(".", "").isalnum()
        ):
            raise InvalidEntry("name", "1-64 letters, digits, '-', '_' or '.'")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self._clock.now()
        async with self._store.transaction() as session:
            await TokenRepository(session).add(name, token_digest(token), ",".join(scopes), now)
            await AuditRepository(session).add(now, actor, "token.create", name, ",".join(scopes))
        return token

    async def all(self) -> Sequence[Token]:
        async with self._store.transaction() as session:
            return await TokenRepository(session).all()

    async def revoke(self, name: str, *, actor: str) -> Token:
        now = self._clock.now()
        async with self._store.transaction() as session:
            token = await TokenRepository(session).revoke(name, now)
            await AuditRepository(session).add(now, actor, "token.revoke", name)
            return token

    async def authenticate(self, token: str) -> Principal | None:
        async with self._store.transaction() as session:
            repo = TokenRepository(session)
            row = await repo.by_digest(token_digest(token))
            if row is None:
                return None
            await repo.touch(row.id, self._clock.now())
            granted: set[str] = set()
            for scope in row.scopes.split(","):
                granted |= GRANTS.get(scope, set())
            return Principal(row.name, frozenset(granted))


class Audit:
    """The audit log, newest last."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    async def record(self, actor: str, action: str, target: str = "", detail: str = "") -> None:
        """An event that changed nothing but must be on record (failed logins)."""
        async with self._store.transaction() as session:
            await AuditRepository(session).add(self._clock.now(), actor, action, target, detail)

    async def events(
        self,
        *,
        after_id: int = 0,
        limit: int = 100,
        since: datetime | None = None,
        actor: str | None = None,
    ) -> Sequence[AuditEvent]:
        async with self._store.transaction() as session:
            return await AuditRepository(session).search(
                after_id=after_id, limit=limit, since=since, actor=actor
            )
