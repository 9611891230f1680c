"""The CLI's remote mode: the same commands through a server's REST API (``--api URL``), so an
operator on the box and a script elsewhere do the same things with the same output."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from s25rbl.errors import S25rblError


class RemoteError(S25rblError):
    """The API refused a request; carries the exit status the CLI should use."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.exit_status = 2 if status in (400, 413, 415, 422) else 1


class RemoteApi:
    def __init__(self, base: str, token: str | None, timeout: float = 60) -> None:
        if not base.startswith(("http://", "https://")):
            raise RemoteError(f"--api {base!r}: give a URL such as http://127.0.0.1:8300", 400)
        if not token:
            raise RemoteError("--api needs a token: --token or S25RBL_API_TOKEN", 400)
        self.base = base.rstrip("/")
        self.token = token
        self.timeout = timeout

    def call(
        self, method: str, path: str, *, body: bytes | None = None, content_type: str | None = None
    ) -> bytes:
        request = urllib.request.Request(self.base + path, data=body, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                data: bytes = response.read()
                return data
        except urllib.error.HTTPError as exc:
            raise RemoteError(problem_text(exc), exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RemoteError(f"{self.base}: cannot reach the API ({reason})", 503) from None

    def json(self, method: str, path: str, payload: Any = None) -> Any:
        body = json.dumps(payload).encode() if payload is not None else None
        data = self.call(method, path, body=body, content_type="application/json" if body else None)
        return json.loads(data) if data else None

    def pages(self, path: str, params: dict[str, str]) -> Iterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            query = {**params, "limit": "1000", **({"cursor": cursor} if cursor else {})}
            page = self.json("GET", f"{path}?{urllib.parse.urlencode(query)}")
            yield from page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return


def problem_text(exc: urllib.error.HTTPError, *, separator: str = "\n  ", limit: int = 50) -> str:
    """An API error as a person reads it: status, detail, and each field's problem."""
    try:
        problem = json.loads(exc.read())
        parts = [f"{exc.code} {problem.get('detail') or problem.get('title')}"]
        parts += [f"{item.get('field')}: {item.get('problem')}" for item in problem.get("errors", [])[:limit]]
        return separator.join(parts)
    except (ValueError, AttributeError, OSError):
        return f"{exc.code} {exc.reason}"


def entries_add(api: RemoteApi, args: Any, expires: datetime | None) -> dict[str, Any]:
    payload = {"list": args.list, "kind": args.kind, "value": args.value, "reason": args.reason or ""}
    if expires is not None:
        payload["expires_at"] = expires.isoformat()
    result: dict[str, Any] = api.json("POST", "/v1/entries", payload)
    return result


def entries_list(api: RemoteApi, args: Any) -> list[dict[str, Any]]:
    params = {
        k: v
        for k, v in (("list", args.list), ("kind", args.kind), ("source", args.source), ("q", args.search))
        if v
    }
    if args.active:
        params["expired"] = "false"
    return list(api.pages("/v1/entries", params))


def entries_remove(api: RemoteApi, entry_id: int) -> dict[str, Any]:
    entry: dict[str, Any] = api.json("GET", f"/v1/entries/{entry_id}")
    api.call("DELETE", f"/v1/entries/{entry_id}")
    return entry


def import_text(api: RemoteApi, text: str, list_: str | None) -> tuple[int, int]:
    query = f"?list={list_}" if list_ else ""
    data = api.call("POST", f"/v1/import{query}", body=text.encode(), content_type="text/plain")
    result = json.loads(data)
    return int(result["added"]), int(result["already_present"])


def export(api: RemoteApi, fmt: str, list_: str | None) -> str:
    query = urllib.parse.urlencode({"format": fmt, **({"list": list_} if list_ else {})})
    return api.call("GET", f"/v1/export?{query}").decode()


def check(api: RemoteApi, ip: str | None, name: str | None) -> dict[str, Any]:
    if ip is not None:
        result: dict[str, Any] = api.json("GET", f"/v1/check/{urllib.parse.quote(ip, safe='')}")
    else:
        result = api.json("GET", f"/v1/check?{urllib.parse.urlencode({'name': name or ''})}")
    return result
