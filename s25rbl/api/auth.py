"""Bearer tokens and scopes. Every /v1 route names the scope it needs; ``/`` (an index),
/healthz, /readyz and the API's description are open, /metrics is open unless
``api.metrics_public = false``.

Authenticated tokens are remembered for a short while so that a busy reporter does not cost a
database read per request; a revocation made through this node's API applies at once, one
made elsewhere within ``CACHE_SECONDS``. A refused token is a failed login, logged and audited
(throttled: ``FailedLogins``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from s25rbl.api.guard import Throttle
from s25rbl.api.problems import Problem
from s25rbl.errors import StoreUnavailable
from s25rbl.service.tokens import Audit, Principal, Tokens, token_digest, well_formed

log = logging.getLogger(__name__)

CACHE_SECONDS = 30.0
PRINCIPAL = web.RequestKey("principal", Principal)  # who made this request, once authenticated
CACHE_ENTRIES = 10_000
OPEN_PATHS = frozenset({"/", "/healthz", "/readyz", "/v1/openapi.yaml"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def requires(scope: str) -> Callable[[Handler], Handler]:
    """Mark a handler with the scope a token needs to call it."""

    def mark(handler: Handler) -> Handler:
        handler.scope = scope  # type: ignore[attr-defined]
        return handler

    return mark


class TokenCache:
    """Principals by token, remembered for ``CACHE_SECONDS``; unknown tokens too, apart, so a flood
    of guesses costs no database reads and cannot push the real tokens out."""

    def __init__(self, tokens: Tokens) -> None:
        self._tokens = tokens
        self._known: dict[str, tuple[float, Principal]] = {}
        self._unknown: dict[str, float] = {}

    def clear(self) -> None:
        self._known.clear()
        self._unknown.clear()

    async def principal(self, token: str) -> Principal | None:
        now = time.monotonic()
        hit = self._known.get(token)
        if hit is not None and hit[0] > now:
            return hit[1]
        if self._unknown.get(token, 0.0) > now:
            return None
        principal = await self._tokens.authenticate(token)
        # Tokens are at most MAX_TOKEN characters: each map holds at most a few MiB.
        if principal is None:
            if len(self._unknown) >= CACHE_ENTRIES:
                self._unknown.clear()
            self._unknown[token] = now + CACHE_SECONDS
        else:
            if len(self._known) >= CACHE_ENTRIES:
                self._known.clear()
            self._known[token] = (now + CACHE_SECONDS, principal)
        return principal


class FailedLogins:
    """Every refused token is a failed login: logged and audited, but at most one of them in full
    per ``window`` seconds and one line summing up the rest, so a token-guessing flood costs at
    most two audit rows a minute, whatever its rate."""

    SHOWN = 20  # addresses named in a summary

    def __init__(self, audit: Audit, window: float = 60.0) -> None:
        self._audit = audit
        self.window = window
        self._throttle = Throttle(1, window)
        self._addresses: set[str] = set()
        self._summary: asyncio.Task[None] | None = None

    async def record(self, remote: str, problem: str) -> None:
        if self._throttle.allow():
            log.warning("failed login from %s: %s", remote, problem)
            await self._write(f"address:{remote}", remote, problem)
            return
        if len(self._addresses) < self.SHOWN:
            self._addresses.add(remote)
        if self._summary is None:
            self._summary = asyncio.create_task(self._summarise(self._throttle.remaining()))

    async def _summarise(self, after: float) -> None:
        await asyncio.sleep(after)
        self._summary = None
        held = self._throttle.take_held()
        addresses = ", ".join(sorted(self._addresses))
        self._addresses.clear()
        detail = f"{held} more failed logins in the last {self.window:g} s, from {addresses}"
        log.warning("%s", detail)
        await self._write("s25rbl", "", detail)

    async def _write(self, actor: str, target: str, detail: str) -> None:
        try:
            await self._audit.record(actor, "auth.fail", target, detail)
        except StoreUnavailable as exc:
            log.debug("failed login not audited: %s", exc)

    async def close(self) -> None:
        if self._summary is not None:
            self._summary.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._summary


def auth_middleware(tokens: TokenCache, metrics_open: bool, failures: FailedLogins) -> Any:
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
        token = header[7:].strip()
        remote = request.remote or "?"
        if not well_formed(token):
            await failures.record(remote, "a malformed token")
            raise Problem(401, "malformed token: s25rbl tokens are printable ASCII", headers=challenge)
        principal = await tokens.principal(token)
        if principal is None:
            await failures.record(remote, f"an unknown or revoked token (digest {token_digest(token)[:12]})")
            raise Problem(401, "unknown or revoked token", headers=challenge)
        # No scope: no such route (aiohttp answers 404 or 405 next), shown only to token holders.
        if scope is not None and scope not in principal.granted:
            raise Problem(403, f"token {principal.name!r} lacks the {scope!r} scope this needs")
        request[PRINCIPAL] = principal
        return await handler(request)

    return middleware


def principal_of(request: web.Request) -> Principal:
    return request[PRINCIPAL]
