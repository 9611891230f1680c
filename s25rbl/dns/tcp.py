"""DNS over TCP (RFC 7766): 2-octet framed queries in, answers out as each is ready, on
connections whose every resource is bounded.

- Work: at most ``MAX_PENDING`` lookups per connection; reading pauses meanwhile.
- Output: the transport's write buffer is kept under ``WRITE_HIGH``; past it no further
  query is read, and a connection that does not drain within the idle timeout is aborted
  (its buffered answers dropped: a client that never reads holds nothing for long).
- Input: at most ``READ_CHUNK`` octets are read at a time, and only while queries can be
  answered; a connection holds at most one frame and one chunk. The kernel's buffers of a
  connection are fixed at ``SOCKET_BUFFER`` each way too (no autotuning to megabytes).
- Time: a connection lives for ``idle_timeout`` after its last complete query or answer;
  bytes that do not complete a frame do not count, so a trickle cannot keep it.
- Room: at most ``max_connections`` in all and ``max_per_prefix`` per client /24 or /64.
  When either is reached, the connection idle the longest (no lookup running) makes room
  for the new one (RFC 7766 6.2.3); if every one is busy, the new one is closed.
- An unanswerable message (shorter than a header, or a response) ends the connection,
  once the queries before it are answered; so does the client's end of file.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import typing
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from s25rbl.dns.handler import Responder
from s25rbl.resolve.fairness import querier_prefix

MAX_PENDING = 32  # lookups in progress per connection
WRITE_HIGH = 64 * 1024  # octets of answers a connection may have waiting to be sent
WRITE_LOW = 16 * 1024
READ_CHUNK = 16 * 1024  # octets read at a time
# Socket buffers of a connection in the kernel (which doubles them): DNS messages are small, and
# without a bound the kernel lets one connection hold megabytes of queries or answers.
SOCKET_BUFFER = 64 * 1024
_FRAME = struct.Struct("!H")


@dataclass(frozen=True, slots=True)
class TcpLimits:
    """How long a TCP connection may idle, and how many connections there may be."""

    idle_timeout: float = 10.0
    max_connections: int = 1024
    max_per_prefix: int = 64


class TcpServer:
    """What the TCP connections of one set of listeners share: the handler, the limits and the
    open connections, least recently active first (in all, and per client prefix)."""

    def __init__(self, responder: Responder, limits: TcpLimits) -> None:
        self.responder = responder
        self.limits = limits
        self.connections: OrderedDict[TcpConnection, None] = OrderedDict()
        self.live: set[TcpConnection] = set()  # open transports, counted or not (closing, refused)
        self.prefixes: dict[bytes, OrderedDict[TcpConnection, None]] = {}
        self.evicted = 0  # idle connections closed to make room
        self.refused = 0  # new connections closed: no room, every one busy
        self._chunk = bytearray(READ_CHUNK)  # read into by one connection at a time

    def read_buffer(self) -> memoryview:
        # One buffer serves every connection: the event loop calls get_buffer and then
        # buffer_updated of the same connection with nothing in between.
        return memoryview(self._chunk)

    def admit(self, conn: TcpConnection) -> bool:
        """Register a new connection, evicting an idle one if it needs the room; False if
        there is no room."""
        peers = self.prefixes.get(conn.prefix)
        if peers is not None and len(peers) >= self.limits.max_per_prefix and not self._evict(peers):
            self.refused += 1
            return False
        if len(self.connections) >= self.limits.max_connections and not self._evict(self.connections):
            self.refused += 1
            return False
        self.connections[conn] = None
        self.prefixes.setdefault(conn.prefix, OrderedDict())[conn] = None
        return True

    def touch(self, conn: TcpConnection) -> None:
        """``conn`` was active: it is now the last to be evicted."""
        if conn in self.connections:
            self.connections.move_to_end(conn)
            self.prefixes[conn.prefix].move_to_end(conn)

    def forget(self, conn: TcpConnection) -> None:
        if self.connections.pop(conn, False) is not False:
            peers = self.prefixes[conn.prefix]
            del peers[conn]
            if not peers:
                del self.prefixes[conn.prefix]

    async def close(self) -> None:
        """Abort every connection, and wait (briefly) until the event loop has let them go,
        those it was still accepting included (call after closing the listening sockets)."""
        quiet = 0
        for _ in range(100):
            for conn in list(self.live):
                conn.abort()
            quiet = quiet + 1 if not self.live else 0
            if quiet > 2:
                return
            await asyncio.sleep(0.005)

    def _evict(self, candidates: OrderedDict[TcpConnection, None]) -> bool:
        for conn in candidates:
            if conn.idle():
                self.forget(conn)
                conn.abort()
                self.evicted += 1
                return True
        return False


class TcpConnection(asyncio.BufferedProtocol):
    """One TCP connection (see the module docstring for its bounds)."""

    def __init__(self, server: TcpServer) -> None:
        self._server = server
        self._responder = server.responder
        self._transport: asyncio.Transport | None = None
        self._client: str | None = None
        self.prefix = b""
        self._buffer = bytearray()
        self._pending: set[asyncio.Future[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._last = 0.0  # loop time of the last complete query or answer
        self._reading = True
        self._writing = True  # False while the transport's write buffer is above WRITE_HIGH
        self._ending = False  # no more queries: close once the pending ones are answered
        self._write_stalled_at: float | None = None
        self._closing_at: float | None = None  # when a close() began that waits for the client

    # --- lifecycle -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport does not subclass asyncio.Transport: cast.
        transport = self._transport = typing.cast(asyncio.Transport, transport)
        self._server.live.add(self)
        peer = transport.get_extra_info("peername")
        self._client = str(peer[0]) if isinstance(peer, tuple) and peer else None
        self.prefix = querier_prefix(self._client) if self._client is not None else b""
        if not self._server.admit(self):
            transport.abort()
            return
        transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        self._last = asyncio.get_running_loop().time()
        self._arm(self._server.limits.idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.forget(self)
        self._server.live.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in self._pending:
            task.cancel()
        self._pending.clear()
        self._buffer = bytearray()
        self._transport = None

    def idle(self) -> bool:
        """No lookup running for this client: it may be closed to make room."""
        return not self._pending

    def abort(self) -> None:
        """Close now, dropping whatever was not sent."""
        if self._transport is not None:
            self._transport.abort()

    # --- input ---------------------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._server.read_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        if self._ending:
            return
        self._buffer += self._server.read_buffer()[:nbytes]
        self._process()

    def eof_received(self) -> bool:
        # The client sent all it will: answer what it asked, then close (RFC 7766 6.2.4).
        self._end()
        return True

    def _process(self) -> None:
        """Answer the complete frames in the buffer while answers can be sent."""
        buffer = self._buffer
        while len(buffer) >= 2 and self._writing and not self._ending and len(self._pending) < MAX_PENDING:
            (length,) = _FRAME.unpack_from(buffer)
            if len(buffer) < 2 + length:
                break
            message = bytes(buffer[2 : 2 + length])
            del buffer[: 2 + length]
            self._activity()
            self._handle(message)
        self._sync_reading()

    def _handle(self, message: bytes) -> None:
        result = self._responder.handle(message, True, self._client)
        if result is None:
            # Unanswerable (no header, or a response): the framing can no longer be trusted.
            self._end()
            return
        if isinstance(result, bytes):
            self._write(result)
            return
        self._await(result)

    def _await(self, result: Awaitable[bytes | None]) -> None:
        task = asyncio.ensure_future(result)
        self._pending.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[bytes | None]) -> None:
        self._pending.discard(task)
        if self._transport is None:
            return
        if not task.cancelled() and task.exception() is None:
            response = task.result()
            if response is not None:
                self._write(response)
        if self._ending:
            if not self._pending:
                self._close()
            return
        self._process()

    def _end(self) -> None:
        """Take no more queries; close once the ones asked are answered."""
        self._ending = True
        self._buffer = bytearray()
        self._sync_reading()
        if not self._pending:
            self._close()

    def _close(self) -> None:
        """Close after sending what is buffered; the timer aborts it if the client does not
        read that within the idle timeout."""
        if self._transport is not None and not self._transport.is_closing():
            self._closing_at = asyncio.get_running_loop().time()
            self._transport.close()

    def _sync_reading(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        want = self._writing and not self._ending and len(self._pending) < MAX_PENDING
        if want != self._reading:
            self._reading = want
            if want:
                transport.resume_reading()
            else:
                transport.pause_reading()

    # --- output --------------------------------------------------------------------------

    def _write(self, response: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(_FRAME.pack(len(response)) + response)
            self._activity()

    def pause_writing(self) -> None:
        self._writing = False
        self._write_stalled_at = asyncio.get_running_loop().time()
        self._sync_reading()

    def resume_writing(self) -> None:
        self._writing = True
        self._write_stalled_at = None
        if not self._ending:
            self._process()

    # --- time ----------------------------------------------------------------------------

    def _activity(self) -> None:
        self._last = asyncio.get_running_loop().time()
        self._server.touch(self)

    def _arm(self, delay: float) -> None:
        self._timer = asyncio.get_running_loop().call_later(delay, self._expire)

    def _expire(self) -> None:
        """The timer: one per connection, re-armed lazily rather than on every frame."""
        self._timer = None
        transport = self._transport
        if transport is None:
            return
        now = asyncio.get_running_loop().time()
        timeout = self._server.limits.idle_timeout
        closing, stalled = self._closing_at, self._write_stalled_at
        if closing is not None or transport.is_closing():
            if closing is None or now - closing >= timeout:
                transport.abort()  # the client does not read what is left
            else:
                self._arm(closing + timeout - now)
            return
        if stalled is not None and now - stalled >= timeout:
            transport.abort()  # not draining: drop its answers rather than hold them
            return
        due = self._last + timeout
        if self._pending:  # still working for this client: not idle
            due = max(due, now + timeout / 4)
        if now >= due:
            if transport.get_write_buffer_size():
                transport.abort()
            else:
                self._close()
                self._arm(timeout)
            return
        if stalled is not None:
            due = min(due, stalled + timeout)
        self._arm(due - now)
