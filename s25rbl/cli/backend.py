"""Where the CLI's list commands act: on the store itself (``LocalBackend``), or through a
server's REST API (``RemoteBackend``, ``--api URL``). Both speak the same interface and answer
in the API's JSON shapes, so a command prints the same whichever it uses."""

from __future__ import annotations

import asyncio
import codecs
import json
import urllib.parse
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Protocol

from s25rbl.api.client import ApiClient
from s25rbl.app import build_engine, open_store
from s25rbl.clock import SystemClock
from s25rbl.config import Settings
from s25rbl.lists.formats import parse_import
from s25rbl.lists.values import EntrySpec, ListName, parse_ip
from s25rbl.node.sync import load_index
from s25rbl.policy.explain import explain as explain_policy
from s25rbl.service import Services
from s25rbl.service.views import entry_dict
from s25rbl.store.db import Store, describe_store
from s25rbl.store.entries import EntryFilter

IMPORT_TYPES = {"postfix": "text/plain", "csv": "text/csv", "json": "application/json"}


class Backend(Protocol):
    """What the CLI's list commands need, locally or remotely."""

    where: str  # the store or the API acted on, as a write names it: "wrote to <where>"

    async def add_entry(self, spec: EntrySpec, expires: datetime | None, actor: str) -> dict[str, Any]: ...
    async def list_entries(self, flt: EntryFilter) -> list[dict[str, Any]]: ...
    async def remove_entry(self, entry_id: int, actor: str) -> dict[str, Any]: ...
    async def import_text(
        self, text: str, fmt: str, default_list: ListName | None, actor: str
    ) -> tuple[int, int]: ...
    def export(self, fmt: str, list_: ListName | None, learned: bool) -> AsyncIterator[str]: ...
    async def check(
        self, ip: str | None, name: str | None, sender: str | None = None, recipient: str | None = None
    ) -> dict[str, Any]: ...
    async def close(self) -> None: ...


class LocalBackend:
    """The store named by the configuration, through the same services as the API."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self._settings = settings
        self._store = store
        self.where = describe_store(store.url)
        self._clock = SystemClock()
        self.services = Services(store, self._clock, settings.learning, policy_settings=settings.policy)

    @classmethod
    async def open(cls, settings: Settings) -> LocalBackend:
        return cls(settings, await open_store(settings, SystemClock()))

    async def add_entry(self, spec: EntrySpec, expires: datetime | None, actor: str) -> dict[str, Any]:
        return entry_dict(await self.services.lists.add_one(spec, actor=actor, expires_at=expires))

    async def list_entries(self, flt: EntryFilter) -> list[dict[str, Any]]:
        return [entry_dict(e) async for e in self.services.lists.every(flt)]

    async def remove_entry(self, entry_id: int, actor: str) -> dict[str, Any]:
        return entry_dict(await self.services.lists.remove(entry_id, actor=actor))

    async def import_text(
        self, text: str, fmt: str, default_list: ListName | None, actor: str
    ) -> tuple[int, int]:
        specs = parse_import(text, fmt, default_list)
        return await self.services.lists.import_specs(specs, actor=actor)

    def export(self, fmt: str, list_: ListName | None, learned: bool) -> AsyncIterator[str]:
        return self.services.lists.export_pieces(fmt, list_, learned=learned)

    async def check(
        self, ip: str | None, name: str | None, sender: str | None = None, recipient: str | None = None
    ) -> dict[str, Any]:
        """The verdict with live lookups, from the lists as the store holds them now, and what
        the policy service would do with the client's next session."""
        index = await load_index(self._store, clock=self._clock)
        rdns, engine = build_engine(self._settings, lambda: index, self._clock)
        try:
            if ip is not None:
                verdict = await engine.decide(parse_ip(ip, "IP"))
                explanation = verdict.explain()
                explanation["policy"] = await explain_policy(
                    verdict,
                    self._settings.policy,
                    self.services.policy,
                    sender=sender,
                    recipient=recipient,
                    now=self._clock.now().timestamp(),
                )
                return explanation
            return {"name": name, **engine.decide_name(name or "").explain()}
        finally:
            await rdns.close()

    async def close(self) -> None:
        await self._store.close()


class RemoteBackend:
    """A server's REST API (urllib, in a thread so the event loop stays free)."""

    def __init__(self, api: ApiClient) -> None:
        self._api = api
        self.where = f"the API at {api.base}"

    async def _json(self, method: str, path: str, payload: Any = None) -> Any:
        return await asyncio.to_thread(self._api.json, method, path, payload)

    async def add_entry(self, spec: EntrySpec, expires: datetime | None, actor: str) -> dict[str, Any]:
        payload = {
            "list": spec.list.value,
            "kind": spec.kind.value,
            "value": spec.value,
            "reason": spec.reason,
        }
        if expires is not None:
            payload["expires_at"] = expires.isoformat()
        result: dict[str, Any] = await self._json("POST", "/v1/entries", payload)
        return result

    async def list_entries(self, flt: EntryFilter) -> list[dict[str, Any]]:
        given = (
            ("list", flt.list),
            ("kind", flt.kind),
            ("source", flt.source),
            ("starter_release", flt.starter_release),
            ("q", flt.text),
        )
        params = {k: str(v) for k, v in given if v}
        if not flt.include_expired:
            params["expired"] = "false"
        return await asyncio.to_thread(lambda: list(self._api.pages("/v1/entries", params)))

    async def remove_entry(self, entry_id: int, actor: str) -> dict[str, Any]:
        entry: dict[str, Any] = await self._json("GET", f"/v1/entries/{entry_id}")
        await asyncio.to_thread(self._api.call, "DELETE", f"/v1/entries/{entry_id}")
        return entry

    async def import_text(
        self, text: str, fmt: str, default_list: ListName | None, actor: str
    ) -> tuple[int, int]:
        query = f"?list={default_list.value}" if default_list else ""
        data = await asyncio.to_thread(
            lambda: self._api.call(
                "POST", f"/v1/import{query}", body=text.encode(), content_type=IMPORT_TYPES[fmt]
            )
        )
        result = json.loads(data)
        return int(result["added"]), int(result["already_present"])

    async def export(self, fmt: str, list_: ListName | None, learned: bool) -> AsyncIterator[str]:
        """The server's export as it arrives (read in a thread, a piece at a time)."""
        params = {"format": fmt, "learned": "true" if learned else "false"}
        if list_ is not None:
            params["list"] = list_.value
        pieces = self._api.stream(f"/v1/export?{urllib.parse.urlencode(params)}")
        text = codecs.getincrementaldecoder("utf-8")()
        while (piece := await asyncio.to_thread(next, pieces, None)) is not None:
            yield text.decode(piece)
        yield text.decode(b"", final=True)

    async def check(
        self, ip: str | None, name: str | None, sender: str | None = None, recipient: str | None = None
    ) -> dict[str, Any]:
        if ip is not None:
            asked = {k: v for k, v in (("sender", sender), ("recipient", recipient)) if v is not None}
            query = f"?{urllib.parse.urlencode(asked)}" if asked else ""
            path = f"/v1/check/{urllib.parse.quote(ip, safe='')}{query}"
        else:
            path = f"/v1/check?{urllib.parse.urlencode({'name': name or ''})}"
        result: dict[str, Any] = await self._json("GET", path)
        return result

    async def close(self) -> None:
        return None
