"""UDP and TCP listeners: they only frame bytes and call the one handler.

TCP follows RFC 7766: 2-byte length framing, several queries per connection answered as they
are ready (pipelining), an idle timeout, and bounded work per connection.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import struct
import typing
from collections.abc import Awaitable
from typing import Any

from s25rbl.config import Endpoint
from s25rbl.dns.handler import Responder

log = logging.getLogger(__name__)

MAX_PENDING_PER_CONNECTION = 32
MAX_TCP_CONNECTIONS = 1024


class UdpReader:
    """UDP without a transport: on each readiness event, drain up to ``BURST`` datagrams with
    ``recvfrom`` and answer each with ``sendto`` on the same socket.

    Per datagram this saves the transport's callback and bookkeeping, which on a cache hit is
    most of the work left in Python. A reply the socket cannot take at once (send buffer
    full) is dropped, as a router would drop it: the client's retry is the DNS answer to loss.
    """

    BURST = 64

    def __init__(self, sock: socket.socket, responder: Responder) -> None:
        self._sock = sock
        self._responder = responder
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Future[Any]] = set()
        self.dropped = 0
        self._loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        recvfrom, sendto, handle = self._sock.recvfrom, self._sock.sendto, self._responder.handle
        for _ in range(self.BURST):
            try:
                data, addr = recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. ECONNREFUSED left by an ICMP error: nothing to answer
                continue
            result = handle(data, False)
            if result is None:
                continue
            if isinstance(result, bytes):
                try:
                    sendto(result, addr)
                except OSError:
                    self.dropped += 1
                continue
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._done, addr=addr))

    def _done(self, task: asyncio.Future[bytes | None], *, addr: Any) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is not None:
            return
        response = task.result()
        if response is not None:
            try:
                self._sock.sendto(response, addr)
            except OSError:
                self.dropped += 1

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()


class TcpProtocol(asyncio.Protocol):
    """One TCP connection: 2-octet framed queries in, answers out as each is ready."""

    def __init__(self, server: TcpServer) -> None:
        self._server = server
        self._responder = server.responder
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._pending: set[asyncio.Future[Any]] = set()
        self._idle: asyncio.TimerHandle | None = None
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport does not subclass asyncio.Transport: cast.
        transport = self._transport = typing.cast(asyncio.Transport, transport)
        self._server.connections.add(self)
        if len(self._server.connections) > MAX_TCP_CONNECTIONS:
            transport.close()
            return
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        if self._idle is not None:
            self._idle.cancel()
        for task in self._pending:
            task.cancel()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 2:
            (length,) = struct.unpack_from("!H", self._buffer)
            if len(self._buffer) < 2 + length:
                break
            message = bytes(self._buffer[2 : 2 + length])
            del self._buffer[: 2 + length]
            self._handle(message)
        if len(self._buffer) > 2 + 65535:  # cannot happen with valid framing; be safe anyway
            self._close()
            return
        self._arm_idle()

    def _handle(self, message: bytes) -> None:
        result = self._responder.handle(message, tcp=True)
        if result is None:
            # Unanswerable garbage on a stream: the framing can no longer be trusted.
            self._close()
            return
        if isinstance(result, bytes):
            self._write(result)
            return
        self._await(result)

    def _await(self, result: Awaitable[bytes | None]) -> None:
        task = asyncio.ensure_future(result)
        self._pending.add(task)
        task.add_done_callback(self._done)
        if len(self._pending) >= MAX_PENDING_PER_CONNECTION and self._transport is not None:
            self._transport.pause_reading()
            self._paused = True

    def _done(self, task: asyncio.Future[bytes | None]) -> None:
        self._pending.discard(task)
        if self._paused and self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()
            self._paused = False
        if task.cancelled() or task.exception() is not None:
            return
        response = task.result()
        if response is not None:
            self._write(response)
        self._arm_idle()

    def _write(self, response: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(struct.pack("!H", len(response)) + response)

    def _arm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        loop = asyncio.get_running_loop()
        self._idle = loop.call_later(self._server.idle_timeout, self._idle_expired)

    def _idle_expired(self) -> None:
        if self._pending:  # still working for this client: not idle
            self._arm_idle()
            return
        self._close()

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class TcpServer:
    """What the TCP connections of one set of listeners share: the handler, the idle timeout and
    the set of open connections."""

    def __init__(self, responder: Responder, idle_timeout: float) -> None:
        self.responder = responder
        self.idle_timeout = idle_timeout
        self.connections: set[TcpProtocol] = set()


def _bind(endpoint: Endpoint, kind: socket.SocketKind, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in endpoint.host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((endpoint.host, endpoint.port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _bind_pair(
    endpoint: Endpoint, reuse_port: bool, attempts: int = 20
) -> tuple[socket.socket, socket.socket]:
    """UDP and TCP on one port. With port 0 the OS picks the UDP port, and the same TCP port may
    be taken already (by an outgoing connection, say): then pick again."""
    for _ in range(attempts if endpoint.port == 0 else 1):
        udp_sock = _bind(endpoint, socket.SOCK_DGRAM, reuse_port)
        port = udp_sock.getsockname()[1]
        try:
            return udp_sock, _bind(Endpoint(endpoint.host, port), socket.SOCK_STREAM, reuse_port)
        except OSError:
            udp_sock.close()
            if endpoint.port != 0:
                raise
    raise OSError(f"no port free for both UDP and TCP on {endpoint.host} after {attempts} tries")


class Listeners:
    """Every configured address, UDP and TCP on each. Port 0 binds UDP first, TCP to the same port."""

    def __init__(self, responder: Responder, endpoints: tuple[Endpoint, ...], idle_timeout: float) -> None:
        self._responder = responder
        self._endpoints = endpoints
        self._tcp = TcpServer(responder, idle_timeout)
        self._udp: list[UdpReader] = []
        self._servers: list[asyncio.base_events.Server] = []
        self.bound: list[Endpoint] = []

    async def start(self, reuse_port: bool = False) -> None:
        loop = asyncio.get_running_loop()
        for endpoint in self._endpoints:
            udp_sock, tcp_sock = _bind_pair(endpoint, reuse_port)
            port = udp_sock.getsockname()[1]
            self._udp.append(UdpReader(udp_sock, self._responder))
            server = await loop.create_server(lambda: TcpProtocol(self._tcp), sock=tcp_sock, backlog=512)
            self._servers.append(server)
            self.bound.append(Endpoint(endpoint.host, port))

    async def stop(self) -> None:
        for udp in self._udp:
            udp.close()
        for server in self._servers:
            server.close()
        for conn in list(self._tcp.connections):
            conn._close()
        for server in self._servers:
            await server.wait_closed()
        self._udp.clear()
        self._servers.clear()
