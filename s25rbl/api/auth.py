"""Bearer tokens and scopes. Every /v1 route names the scope it needs; ``/`` (an index),
/healthz, /readyz and the API's description are open, /metrics is open unless
``api.metrics_public = false``.

Authenticated tokens are remembered for a short while so that a busy reporter does not cost a
database read per request; a revocation made through this node's API applies at once, one
made elsewhere within ``CACHE_SECONDS``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from s25rbl.api.problems import Problem
from s25rbl.service.tokens import Principal, Tokens

CACHE_SECONDS = 30.0
OPEN_PATHS = frozenset({"/", "/healthz", "/readyz", "/v1/openapi.yaml"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def requires(scope: str) -> Callable[[Handler], Handler]:
    """Mark a handler with the scope a token needs to call it."""

    def mark(handler: Handler) -> Handler:
        handler.scope = scope  # type: ignore[attr-defined]
        return handler

    return mark


class TokenCache:
    """Principals by token, remembered for ``CACHE_SECONDS`` (unknown tokens too)."""

    def __init__(self, tokens: Tokens) -> None:
        self._tokens = tokens
        self._known: dict[str, tuple[float, Principal | None]] = {}

    def clear(self) -> None:
        self._known.clear()

    async def principal(self, token: str) -> Principal | None:
        now = time.monotonic()
        hit = self._known.get(token)
        if hit is not None and hit[0] > now:
            return hit[1]
        principal = await self._tokens.authenticate(token)
        if len(self._known) > 10_000:
            self._known.clear()
        # Unknown tokens are remembered briefly too, so guessing costs no database reads.
        self._known[token] = (now + CACHE_SECONDS, principal)
        return principal


def auth_middleware(tokens: TokenCache, metrics_open: bool) -> Any:
    """Checks the bearer token and the scope the route needs (``requires``)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route
        scope: str | None = getattr(route.handler, "scope", None)
        if request.path in OPEN_PATHS or (request.path == "/metrics" and metrics_open):
            return await handler(request)
        if scope is None and not request.path.startswith("/v1") and request.path != "/metrics":
            return await handler(request)  # 404/405 for unknown routes, answered by aiohttp
        header = request.headers.get("Authorization", "")
        challenge = {"WWW-Authenticate": 'Bearer realm="s25rbl"'}
        if not header.startswith("Bearer ") or not header[7:].strip():
            raise Problem(401, "send an API token: Authorization: Bearer <token>", headers=challenge)
        principal = await tokens.principal(header[7:].strip())
        if principal is None:
            raise Problem(401, "unknown or revoked token", headers=challenge)
        # No scope: no such route (aiohttp answers 404 or 405 next), shown only to token holders.
        if scope is not None and scope not in principal.granted:
            raise Problem(403, f"token {principal.name!r} lacks the {scope!r} scope this needs")
        request["principal"] = principal
        return await handler(request)

    return middleware


def principal_of(request: web.Request) -> Principal:
    principal: Principal = request["principal"]
    return principal
