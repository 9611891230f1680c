"""What keeps hostile or excess HTTP traffic from hurting the node: a body limit per route, a
bound on the API work done at once (excess requests get a prompt 503 with ``Retry-After``, not
a 500 after the database pool's timeout), and one log line, not a traceback, for each HTTP
request aiohttp cannot parse (throttled, so a flood of them cannot flood the log).

The DNS listeners are not behind any of this: they never wait on the API or the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from s25rbl.api.problems import Problem

log = logging.getLogger(__name__)

KIB = 1024
SMALL_BODY = 64 * KIB  # every route that does not say otherwise
BATCH_BODY = 2 * KIB * KIB  # batches of up to 1,000 entries or reports
LARGE_BODY: int | None = None  # the route takes up to ``api.max_body`` bytes (imports)
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})  # probes: no store, never queued
QUEUE_PER_SLOT = 4  # requests that may wait for a slot, per slot
QUEUE_WAIT = 1.0  # seconds a request waits for a slot before it is answered 503
RETRY_AFTER = "1"
BODY_LIMIT = web.RequestKey("body_limit", int)  # the body size the matched route accepts

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def accepts(limit: int | None) -> Callable[[Handler], Handler]:
    """Mark a handler with the largest request body it takes, in bytes (``LARGE_BODY``:
    ``api.max_body``). Unmarked handlers take ``SMALL_BODY``."""

    def mark(handler: Handler) -> Handler:
        handler.body_limit = limit  # type: ignore[attr-defined]
        return handler

    return mark


def body_limit(request: web.Request) -> int:
    limit: int = request.get(BODY_LIMIT, SMALL_BODY)
    return limit


def _too_large(limit: int, size: int | None = None) -> Problem:
    sent = f"got {size}" if size is not None else "got more"
    return Problem(413, f"this endpoint takes a body of at most {limit} bytes; {sent}")


async def read_body(request: web.Request) -> bytes:
    """The request body, refused with 413 as soon as it passes the route's limit (a chunked
    body has no Content-Length to check first)."""
    limit = body_limit(request)
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit, request.content_length)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * KIB):
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


class Gate:
    """At most ``slots`` API requests at work at once; up to ``slots * QUEUE_PER_SLOT`` more wait
    at most ``QUEUE_WAIT`` seconds for a slot, and the rest are answered 503 at once.

    Sized below the store's connection pool, so a request that got a slot gets a connection,
    and a burst of a thousand requests costs a thousand short answers, not a thousand
    coroutines holding request bodies and sessions for the pool's timeout.
    """

    def __init__(self, slots: int, wait: float = QUEUE_WAIT) -> None:
        self.slots = slots
        self.queue = slots * QUEUE_PER_SLOT
        self._wait = wait
        self._free = asyncio.Semaphore(slots)
        self._waiting = 0
        self.refused = 0

    def _busy(self) -> Problem:
        self.refused += 1
        return Problem(
            503,
            f"the server is busy ({self.slots} requests at work, {self._waiting} waiting); try again shortly",
            headers={"Retry-After": RETRY_AFTER},
            title="Busy",
        )

    async def acquire(self) -> None:
        if not self._free.locked():
            await self._free.acquire()
            return
        if self._waiting >= self.queue:
            raise self._busy()
        self._waiting += 1
        try:
            async with asyncio.timeout(self._wait):
                await self._free.acquire()
        except TimeoutError:
            raise self._busy() from None
        finally:
            self._waiting -= 1

    def release(self) -> None:
        self._free.release()


def guard_middleware(gate: Gate, max_body: int) -> Any:
    """Refuses a declared body over the route's limit (413) and queues the request for a slot
    of the gate (503 when busy) before anything else, the token check included, runs."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        declared = getattr(request.match_info.route.handler, "body_limit", SMALL_BODY)
        limit = max_body if declared is None else min(declared, max_body)
        request[BODY_LIMIT] = limit
        if request.content_length is not None and request.content_length > limit:
            raise _too_large(limit, request.content_length)
        if request.path in OPEN_PATHS:
            return await handler(request)
        await gate.acquire()
        try:
            return await handler(request)
        finally:
            gate.release()

    return middleware


class Throttle:
    """At most ``per_window`` events told in full per ``window`` seconds; the others counted, to be
    summed up once the window is over."""

    def __init__(self, per_window: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_window = per_window
        self.window = window
        self._clock = clock
        self._started = -window
        self._told = 0
        self.held = 0

    def allow(self) -> bool:
        now = self._clock()
        if now - self._started >= self.window:
            self._started, self._told = now, 0
        if self._told < self.per_window:
            self._told += 1
            return True
        self.held += 1
        return False

    def remaining(self) -> float:
        """Seconds until the current window is over."""
        return max(0.0, self._started + self.window - self._clock())

    def take_held(self) -> int:
        held, self.held = self.held, 0
        return held


class HttpServerLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger, but a request it cannot parse (header over 8 KiB, NUL in a header,
    not HTTP at all) is one INFO line without a traceback: it was answered 400 and is the
    client's fault. At most ten such lines a minute, then one line with how many more."""

    def __init__(self) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})
        self._throttle = Throttle(10, 60.0)
        self._summary: asyncio.TimerHandle | None = None

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if not isinstance(exc_info, HttpProcessingError):
            self.logger.exception(msg, *args, exc_info=exc_info, **kwargs)
            return
        if self._throttle.allow():
            remote = args[0] if args else "?"
            problem = " ".join(str(exc_info.message).split())[:200]
            log.info("refused a malformed HTTP request from %s (%d): %s", remote, exc_info.code, problem)
        elif self._summary is None:
            loop = asyncio.get_running_loop()
            self._summary = loop.call_later(self._throttle.remaining(), self._summarise)

    def _summarise(self) -> None:
        self._summary = None
        held = self._throttle.take_held()
        if held:
            log.info("refused %d more malformed HTTP requests in the last minute", held)
