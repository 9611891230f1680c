"""Repositories of who may do what, and of what they did: API tokens and the audit log."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from s25rbl.errors import DuplicateEntry, EntryNotFound
from s25rbl.store.models import AuditEvent, Token


class TokenRepository:
    """API tokens, by name and by digest."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, name: str, digest: str, scopes: str, now: datetime) -> Token:
        if await self.by_name(name) is not None:
            raise DuplicateEntry(f"a token named {name!r} exists already; revoke it or pick another name")
        token = Token(name=name, digest=digest, scopes=scopes, created_at=now)
        self.session.add(token)
        await self.session.flush()
        return token

    async def by_name(self, name: str) -> Token | None:
        result = await self.session.execute(select(Token).where(Token.name == name))
        return result.scalar_one_or_none()

    async def by_digest(self, digest: str) -> Token | None:
        result = await self.session.execute(
            select(Token).where(Token.digest == digest, Token.revoked_at.is_(None))
        )
        return result.scalar_one_or_none()

    async def all(self) -> Sequence[Token]:
        result = await self.session.execute(select(Token).order_by(Token.id))
        return result.scalars().all()

    async def revoke(self, name: str, now: datetime) -> Token:
        token = await self.by_name(name)
        if token is None or token.revoked_at is not None:
            raise EntryNotFound(f"no active token named {name!r}")
        token.revoked_at = now
        return token

    async def touch(self, token_id: int, now: datetime) -> None:
        await self.session.execute(update(Token).where(Token.id == token_id).values(last_used_at=now))


class AuditRepository:
    """The audit log: appended to by every write, read by operators."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, now: datetime, actor: str, action: str, target: str = "", detail: str = "") -> None:
        self.session.add(
            AuditEvent(at=now, actor=actor, action=action, target=target[:512], detail=detail[:2000])
        )

    async def search(
        self,
        *,
        after_id: int = 0,
        limit: int = 100,
        since: datetime | None = None,
        actor: str | None = None,
    ) -> Sequence[AuditEvent]:
        """Events oldest first after ``after_id``; with ``since``, those at or after it; with
        ``actor``, that actor's alone."""
        query = select(AuditEvent).where(AuditEvent.id > after_id)
        if since is not None:
            query = query.where(AuditEvent.at >= since)
        if actor is not None:
            query = query.where(AuditEvent.actor == actor)
        result = await self.session.execute(query.order_by(AuditEvent.id).limit(limit))
        return result.scalars().all()
