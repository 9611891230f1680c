"""The policy service's listener: TCP connections that frame requests and call the one handler.

Postfix keeps a connection per smtpd process and reuses it; Exim's ``${readsocket}`` sends one
request and half-closes. Requests on a connection are answered in order (pipelined ones too).
Bounded: at most ``max_connections`` connections (more are closed at once, as are those from
addresses not in ``allow``), a request must be complete ``REQUEST_TIMEOUT`` seconds (or
``idle_timeout``, if shorter) after its first byte and within ``MAX_REQUEST`` bytes, an idle
connection is closed after ``idle_timeout``, and a client that does not read its answers is not
read either. No request is ever held open: a tarpit is Postfix's own ``SLEEP``.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import time
import typing
from collections.abc import Awaitable, Sequence

from s25rbl.config import Endpoint
from s25rbl.errors import ListenError, PolicyRequestError
from s25rbl.policy.decide import DUNNO
from s25rbl.policy.handler import PolicyHandler
from s25rbl.policy.protocol import MAX_REQUEST, Framer, answer, parse_attributes

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10.0  # seconds from a request's first byte to its empty line (at most idle_timeout)
MAX_QUEUED_BYTES = MAX_REQUEST  # complete requests waiting for an answer, per connection
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class PolicyConnection(asyncio.Protocol):
    """One MTA connection."""

    def __init__(self, server: PolicyServer) -> None:
        self._server = server
        self._handler = server.handler
        self._transport: asyncio.Transport | None = None
        self._peer = "-"
        self._framer = Framer()
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued = 0  # bytes in _queue
        self._busy: asyncio.Future[str] | None = None
        self._eof = False
        self._paused: set[str] = set()  # why reading is paused: "queue", "writes"
        self._active = time.monotonic()
        self._started: float | None = None  # when the incomplete request's first byte came
        self._timer: asyncio.TimerHandle | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport does not subclass asyncio.Transport: cast.
        self._transport = typing.cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if peer else "-"
        server = self._server
        server.connections.add(self)
        if not server.allowed(self._peer):
            server.refuse(self._peer, "not in policy.allow")
            self._close()
            return
        if len(server.connections) > server.max_connections:
            server.refuse(self._peer, f"more than policy.max_connections ({server.max_connections}) open")
            self._close()
            return
        server.counters.connections = len(server.connections)
        self._arm(server.idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._server.counters.connections = len(self._server.connections)
        if self._timer is not None:
            self._timer.cancel()
        if self._busy is not None:
            self._busy.cancel()

    def pause_writing(self) -> None:
        self._pause("writes")  # the client does not read its answers: stop reading its requests

    def resume_writing(self) -> None:
        self._resume("writes")

    # --- reading -----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._active = time.monotonic()
        if self._busy is None and not self._queue and not self._framer.pending:
            quick = self._handler.quick(data)  # an unlisted client's request: DUNNO at once
            if quick is not None:
                if self._transport is not None and not self._transport.is_closing():
                    self._transport.write(quick)
                return
        try:
            blocks = self._framer.feed(data)
        except PolicyRequestError as exc:
            # The stream cannot be trusted past an oversized request: answer it and hang up.
            self._write(self._handler.bad_request(exc, self._peer))
            self._close()
            return
        if self._framer.pending and self._started is None:
            self._started = self._active
        elif not self._framer.pending:
            self._started = None
        for block in blocks:
            self._queue.append(block)
            self._queued += len(block)
        if self._queued > MAX_QUEUED_BYTES:
            self._pause("queue")
        self._drain()

    def eof_received(self) -> bool:
        self._eof = True
        if self._framer.pending:
            # A request without its empty line: nothing to answer.
            self._handler.bad_request(
                PolicyRequestError("incomplete", "end of file inside a request"), self._peer
            )
        # Answer what was asked first (Exim half-closes after its request); with nothing left to
        # answer, False lets the transport close itself.
        return self._busy is not None or bool(self._queue)

    def _drain(self) -> None:
        """Answer queued requests in order until one must wait for a lookup."""
        while self._queue and self._busy is None:
            block = self._queue.popleft()
            self._queued -= len(block)
            try:
                result = self._handler.handle(parse_attributes(block), self._peer)
            except PolicyRequestError as exc:
                result = self._handler.bad_request(exc, self._peer)
            except Exception:
                log.exception("policy: request from %s failed; answered DUNNO", self._peer)
                result = DUNNO
            if isinstance(result, str):
                self._write(result)
            else:
                self._wait(result)
        if not self._queue:
            self._resume("queue")
            if self._busy is None and self._eof:
                self._close()

    def _wait(self, result: Awaitable[str]) -> None:
        busy = self._busy = asyncio.ensure_future(result)
        busy.add_done_callback(self._done)

    def _done(self, busy: asyncio.Future[str]) -> None:
        self._busy = None
        if busy.cancelled():
            return
        error = busy.exception()
        if error is not None:
            log.error("policy: request from %s failed; answered DUNNO", self._peer, exc_info=error)
        self._write(DUNNO if error is not None else busy.result())
        self._drain()

    def _write(self, action: str) -> None:
        self._active = time.monotonic()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(answer(action))

    # --- flow control and timers -------------------------------------------------------------

    def _pause(self, why: str) -> None:
        if not self._paused and self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()
        self._paused.add(why)

    def _resume(self, why: str) -> None:
        if why not in self._paused:
            return
        self._paused.discard(why)
        if not self._paused and self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def _arm(self, delay: float) -> None:
        self._timer = asyncio.get_running_loop().call_later(delay, self._tick)

    def _tick(self) -> None:
        """Close a connection idle for ``idle_timeout``, or one whose request is too slow."""
        now = time.monotonic()
        limit = self._server.request_timeout
        if self._started is not None and now - self._started >= limit:
            self._handler.bad_request(
                PolicyRequestError("slow", f"a request not complete after {limit:g} s"), self._peer
            )
            self._close()
            return
        idle = self._server.idle_timeout
        if self._busy is None and self._started is None and now - self._active >= idle:
            self._close()
            return
        until_idle = idle - (now - self._active)
        until_slow = limit - (now - self._started) if self._started is not None else until_idle
        self._arm(max(0.05, min(until_idle, until_slow)))

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class PolicyServer:
    """The listener on ``policy.listen``: its connections and their limits."""

    def __init__(
        self,
        handler: PolicyHandler,
        endpoint: Endpoint,
        *,
        idle_timeout: float,
        max_connections: int,
        allow: Sequence[str],
    ) -> None:
        self.handler = handler
        self.counters = handler.counters
        self.endpoint = endpoint
        self.idle_timeout = idle_timeout
        self.request_timeout = min(REQUEST_TIMEOUT, idle_timeout)
        self.max_connections = max_connections
        self.allow: tuple[Network, ...] = tuple(ipaddress.ip_network(net) for net in allow)
        self.connections: set[PolicyConnection] = set()
        self.bound: Endpoint | None = None
        self._server: asyncio.base_events.Server | None = None
        self._refused_logged = -60.0

    def allowed(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False  # not an IP peer
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.allow)

    def refuse(self, peer: str, why: str) -> None:
        self.counters.refused += 1
        now = time.monotonic()
        if now - self._refused_logged >= 60.0:
            self._refused_logged = now
            log.warning("policy: connection from %s closed: %s", peer, why)

    async def start(self) -> Endpoint:
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: PolicyConnection(self),
                host=self.endpoint.host,
                port=self.endpoint.port,
                reuse_address=True,
                backlog=1024,
            )
        except OSError as exc:
            raise ListenError("policy service", self.endpoint.host, self.endpoint.port, exc) from None
        port = int(self._server.sockets[0].getsockname()[1])
        self.bound = Endpoint(self.endpoint.host, port)
        return self.bound

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for connection in list(self.connections):
            connection._close()
        await self._server.wait_closed()
        self._server = None
