"""Where the CLI's review commands (``learned``, ``suggestions``, ``audit``) act: on the store
through the services (``LocalReview``), or through a server's REST API (``RemoteReview``,
``--api URL``). Both answer in the API's JSON shapes, so a command prints the same either way,
and every write is audited with its actor: ``cli`` locally, the token's name remotely."""

from __future__ import annotations

import asyncio
import itertools
import urllib.parse
from datetime import datetime
from typing import Any, Protocol

from s25rbl.api.client import ApiClient
from s25rbl.cli.backend import LocalBackend
from s25rbl.service.views import audit_dict, entry_dict, forbidden_dict, learned_dicts, suggestion_dict

PAGE = 1000  # rows read per transaction or request


class Review(Protocol):
    """What the review commands need, locally or remotely. ``limit`` None: every row."""

    async def learned(self, limit: int | None) -> list[dict[str, Any]]: ...
    async def forbidden(self, limit: int | None) -> list[dict[str, Any]]: ...
    async def revoke(self, ip: str, *, forbid: bool, reason: str) -> None: ...
    async def suggestions(self, status: str | None, limit: int | None) -> list[dict[str, Any]]: ...
    async def decide(self, suggestion_id: int, approve: bool) -> dict[str, Any]: ...
    async def audit(self, since: datetime | None, actor: str | None, limit: int) -> list[dict[str, Any]]: ...
    async def close(self) -> None: ...


def _full(rows: list[Any], limit: int | None) -> bool:
    return limit is not None and len(rows) >= limit


class LocalReview:
    """The store named by the configuration, through the same services as the API."""

    def __init__(self, backend: LocalBackend, actor: str = "cli") -> None:
        self._backend = backend
        self._services = backend.services
        self._actor = actor

    async def learned(self, limit: int | None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        after = 0
        while not _full(rows, limit):
            page = await self._services.learning.learned(after_id=after, limit=PAGE)
            rows += learned_dicts(page)
            if len(page.entries) < PAGE:
                break
            after = page.entries[-1].id
        return rows[:limit]

    async def forbidden(self, limit: int | None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        after = ""
        while not _full(rows, limit):
            page = await self._services.learning.forbidden(after=after, limit=PAGE)
            rows += [forbidden_dict(b) for b in page]
            if len(page) < PAGE:
                break
            after = page[-1].ip
        return rows[:limit]

    async def revoke(self, ip: str, *, forbid: bool, reason: str) -> None:
        await self._services.learning.revoke(ip, actor=self._actor, forbid=forbid, reason=reason)

    async def suggestions(self, status: str | None, limit: int | None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        after = 0
        while not _full(rows, limit):
            page = await self._services.learning.suggestions(status, after_id=after, limit=PAGE)
            rows += [suggestion_dict(s) for s in page]
            if len(page) < PAGE:
                break
            after = page[-1].id
        return rows[:limit]

    async def decide(self, suggestion_id: int, approve: bool) -> dict[str, Any]:
        learning = self._services.learning
        if approve:
            suggestion, entry = await learning.approve(suggestion_id, actor=self._actor)
            return {"suggestion": suggestion_dict(suggestion), "entry": entry_dict(entry)}
        return suggestion_dict(await learning.reject(suggestion_id, actor=self._actor))

    async def audit(self, since: datetime | None, actor: str | None, limit: int) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        after = 0
        while not _full(rows, limit):
            page = await self._services.audit.events(after_id=after, limit=PAGE, since=since, actor=actor)
            rows += [audit_dict(e) for e in page]
            if len(page) < PAGE:
                break
            after = page[-1].id
        return rows[:limit]

    async def close(self) -> None:
        await self._backend.close()


class RemoteReview:
    """A server's REST API: ``/v1/learned``, ``/v1/forbidden``, ``/v1/suggestions``, ``/v1/audit``."""

    def __init__(self, api: ApiClient) -> None:
        self._api = api

    async def _pages(self, path: str, params: dict[str, str], limit: int | None) -> list[dict[str, Any]]:
        return await asyncio.to_thread(lambda: list(itertools.islice(self._api.pages(path, params), limit)))

    async def learned(self, limit: int | None) -> list[dict[str, Any]]:
        return await self._pages("/v1/learned", {}, limit)

    async def forbidden(self, limit: int | None) -> list[dict[str, Any]]:
        return await self._pages("/v1/forbidden", {}, limit)

    async def revoke(self, ip: str, *, forbid: bool, reason: str) -> None:
        query = {"forbid": "true" if forbid else "false", **({"reason": reason} if reason else {})}
        path = f"/v1/learned/{urllib.parse.quote(ip, safe='')}?{urllib.parse.urlencode(query)}"
        await asyncio.to_thread(self._api.call, "DELETE", path)

    async def suggestions(self, status: str | None, limit: int | None) -> list[dict[str, Any]]:
        return await self._pages("/v1/suggestions", {"status": status} if status else {}, limit)

    async def decide(self, suggestion_id: int, approve: bool) -> dict[str, Any]:
        verb = "approve" if approve else "reject"
        path = f"/v1/suggestions/{suggestion_id}/{verb}"
        result: dict[str, Any] = await asyncio.to_thread(self._api.json, "POST", path)
        return result

    async def audit(self, since: datetime | None, actor: str | None, limit: int) -> list[dict[str, Any]]:
        given = (("since", since.isoformat() if since else None), ("actor", actor))
        return await self._pages("/v1/audit", {k: v for k, v in given if v is not None}, limit)

    async def close(self) -> None:
        return None
