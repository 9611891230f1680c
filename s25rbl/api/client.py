"""The REST API's client: what the CLI's ``--api`` mode and the log reporter speak (urllib, no
third-party HTTP library). Redirects are never followed: a POST must not silently become a
GET elsewhere, and a token must not travel to another host."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

from s25rbl.errors import ApiError, ApiUnreachable, InvalidEntry


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class ApiClient:
    """Bearer-token requests to one s25rbl API base URL."""

    def __init__(self, base: str, token: str | None, timeout: float = 60.0) -> None:
        if not base.startswith(("http://", "https://")):
            raise InvalidEntry("--api", f"{base!r}: give a URL such as http://127.0.0.1:8300")
        if not token:
            raise InvalidEntry("--api", "needs a token: --token or S25RBL_API_TOKEN")
        self.base = base.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirect)

    def call(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """The response body; ApiError for an HTTP error, ApiUnreachable for no answer."""
        request = urllib.request.Request(self.base + path, data=body, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with self._opener.open(request, timeout=timeout or self.timeout) as response:
                data: bytes = response.read()
                return data
        except urllib.error.HTTPError as exc:
            raise ApiError(
                problem_lines(exc),
                exc.code,
                retry_after=_retry_after(exc.headers.get("Retry-After")),
                location=exc.headers.get("Location", ""),
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ApiUnreachable(f"{self.base}: cannot reach the API ({reason})") from None

    def stream(self, path: str, size: int = 64 * 1024) -> Iterator[bytes]:
        """A GET's body in pieces as they arrive (an export of any size costs a piece of memory).
        An answer cut short (the server lost its store midway, the connection broke) raises
        ApiUnreachable: whatever came before it is not the whole answer."""
        request = urllib.request.Request(self.base + path, method="GET")
        request.add_header("Authorization", f"Bearer {self.token}")
        try:
            response = self._opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            retry = _retry_after(exc.headers.get("Retry-After"))
            raise ApiError(problem_lines(exc), exc.code, retry_after=retry) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ApiUnreachable(f"{self.base}: cannot reach the API ({reason})") from None
        with response:
            while True:
                try:
                    piece: bytes = response.read(size)
                except (http.client.HTTPException, OSError) as exc:
                    raise ApiUnreachable(
                        f"{self.base}: the answer was cut short ({type(exc).__name__}); it is incomplete"
                    ) from None
                if not piece:
                    return
                yield piece

    def json(self, method: str, path: str, payload: Any = None, timeout: float | None = None) -> Any:
        body = json.dumps(payload, ensure_ascii=False).encode() if payload is not None else None
        data = self.call(
            method, path, body=body, content_type="application/json" if body else None, timeout=timeout
        )
        return json.loads(data) if data else None

    def pages(self, path: str, params: dict[str, str]) -> Iterator[dict[str, Any]]:
        """Every item of a cursor-paginated listing."""
        cursor: str | None = None
        while True:
            query = {**params, "limit": "1000", **({"cursor": cursor} if cursor else {})}
            page = self.json("GET", f"{path}?{urllib.parse.urlencode(query)}")
            yield from page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                return


def problem_lines(exc: urllib.error.HTTPError, limit: int = 50) -> list[str]:
    """An API error as a person reads it: status and detail, then each field's problem."""
    try:
        problem = json.loads(exc.read())
        lines = [f"{exc.code} {problem.get('detail') or problem.get('title')}"]
        lines += [f"{item.get('field')}: {item.get('problem')}" for item in problem.get("errors", [])[:limit]]
        return lines
    except (ValueError, AttributeError, OSError):
        return [f"{exc.code} {exc.reason}"]


def _retry_after(value: str | None) -> float | None:
    if value and value.strip().isdigit():
        return float(value.strip())
    return None
