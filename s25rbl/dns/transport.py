"""UDP and TCP listeners: they only frame bytes and call the one handler.

UDP is read here (``UdpReader``); TCP follows RFC 7766 with bounded connections (``tcp``).
The UDP socket asks the kernel for a large receive buffer, so a burst that arrives while a
lookup or a list reload holds the event loop waits in the kernel instead of being dropped.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import resource
import socket
from collections.abc import Awaitable
from typing import Any

from s25rbl.config import Endpoint
from s25rbl.dns.batch import BatchUnsupported, UdpBatch
from s25rbl.dns.fast import FastBatch
from s25rbl.dns.handler import Responder
from s25rbl.dns.tcp import SOCKET_BUFFER, TcpConnection, TcpLimits, TcpServer
from s25rbl.errors import ListenError

log = logging.getLogger(__name__)

DEFAULT_UDP_RECEIVE_BUFFER = 4 * 1024 * 1024
DEFAULT_UDP_BATCH = 64  # datagrams per recvmmsg/sendmmsg call; below 2: one per recvfrom/sendto
_FD_RESERVE = 256  # descriptors kept for everything but DNS over TCP: store, upstreams, API


_PATHS = {
    "c": "cached ones in C (the fast path), the rest batched in Python",
    "batched": "in Python, batched (recvmmsg/sendmmsg; the C fast path is off or not built)",
    "plain": "in Python, one recvfrom/sendto per datagram",
}


# What ``Listeners.shed`` counts (the /metrics s25rbl_dns_shed_total events).
SHED_EVENTS = ("udp_answer_dropped", "tcp_connection_refused", "tcp_connection_evicted")


class UdpReader:
    """UDP without a transport: on each readiness event, read up to ``BURST`` datagrams and
    answer each on the same socket, in batches of up to ``batch`` datagrams per system call
    (``recvmmsg``/``sendmmsg``, ``s25rbl.dns.batch``) where the system has them, else one
    ``recvfrom`` and one ``sendto`` per datagram (also with ``batch`` below 2, and from the
    first error that says the batched calls do not work here).

    With ``fast_path`` (and the C extension built, ``s25rbl.dns.fast``) cache hits are
    answered in C, the rest in Python as above; a failure there falls back to Python's
    batches. Per datagram this saves the transport's callback and bookkeeping. A reply the
    socket cannot take at once (send buffer full) is dropped, as a router would drop it: the
    client's retry is the DNS answer to loss.
    """

    BURST = 64

    def __init__(
        self,
        sock: socket.socket,
        responder: Responder,
        batch: int = DEFAULT_UDP_BATCH,
        fast_path: bool = True,
    ) -> None:
        self._sock = sock
        self._responder = responder
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._dropped = 0
        self._batch: UdpBatch | FastBatch | None = None
        self._batch_size = batch
        if fast_path:
            self._batch = FastBatch.create(sock, batch, responder.cache)
        if self._batch is None:
            self._batch = UdpBatch.create(sock, batch)
        self._loop.add_reader(
            sock.fileno(), self._readable if self._batch is None else self._readable_batched
        )

    @property
    def batched(self) -> bool:
        """Whether datagrams are read and answered in batches (now)."""
        return self._batch is not None

    @property
    def path(self) -> str:
        """How datagrams are answered now: "c" (cache hits in C, batched), "batched" (Python,
        recvmmsg/sendmmsg) or "plain" (Python, recvfrom/sendto)."""
        if self._batch is None:
            return "plain"
        return "c" if isinstance(self._batch, FastBatch) else "batched"

    @property
    def dropped(self) -> int:
        """Answers the socket did not take (send buffer full, or an error sending)."""
        return self._dropped + (self._batch.dropped if self._batch is not None else 0)

    def _readable_batched(self) -> None:
        assert self._batch is not None
        try:
            cache = self._responder.cache
            cached = None if cache is None else cache.answer
            self._batch.serve(cached, self._responder.handle_uncached, self._later)
        except BatchUnsupported as exc:
            failed = self._batch
            self._dropped += failed.dropped
            failed.close()
            # The C path failed: Python's batches may still work (if not, they fail next).
            self._batch = (
                UdpBatch.create(self._sock, self._batch_size) if isinstance(failed, FastBatch) else None
            )
            log.warning("UDP answers failed (%s): answered on the %s path from now on", exc, self.path)
            if self._batch is None:
                self._loop.remove_reader(self._sock.fileno())
                self._loop.add_reader(self._sock.fileno(), self._readable)

    def _readable(self) -> None:
        recvfrom, sendto, handle = self._sock.recvfrom, self._sock.sendto, self._responder.handle
        for _ in range(self.BURST):
            try:
                data, addr = recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. ECONNREFUSED left by an ICMP error: nothing to answer
                continue
            result = handle(data, False, addr[0])
            if result is None:
                continue
            if isinstance(result, bytes):
                try:
                    sendto(result, addr)
                except OSError:
                    self._dropped += 1
                continue
            self._later(result, addr)

    def _later(self, result: Awaitable[bytes | None], addr: Any) -> None:
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
                self._dropped += 1

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._loop.remove_reader(self._sock.fileno())
        if self._batch is not None:
            self._dropped += self._batch.dropped
            self._batch.close()
            self._batch = None
        self._sock.close()


def set_receive_buffer(sock: socket.socket, size: int) -> int:
    """Ask for a receive buffer of ``size`` octets; what the kernel granted (Linux reports
    twice the size asked, its bookkeeping included). Past ``net.core.rmem_max`` only a
    process with CAP_NET_ADMIN gets more (SO_RCVBUFFORCE); others get the maximum."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < size and hasattr(socket, "SO_RCVBUFFORCE"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUFFORCE, size)
    except OSError:  # no CAP_NET_ADMIN: the maximum granted above stands
        pass
    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))


def descriptor_budget(wanted: int) -> int:
    """How many TCP connections the process's open-file limit leaves room for, raising the
    soft limit towards the hard one first if ``wanted`` needs it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + _FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        raised = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - _FD_RESERVE))


def _bind(endpoint: Endpoint, kind: socket.SocketKind, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in endpoint.host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Accepted connections inherit it (the window scale is chosen before accept).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
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
        try:
            udp_sock = _bind(endpoint, socket.SOCK_DGRAM, reuse_port)
        except OSError as exc:
            raise ListenError("DNS over UDP", endpoint.host, endpoint.port, exc) from None
        port = udp_sock.getsockname()[1]
        try:
            return udp_sock, _bind(Endpoint(endpoint.host, port), socket.SOCK_STREAM, reuse_port)
        except OSError as exc:
            udp_sock.close()
            if endpoint.port != 0:
                raise ListenError("DNS over TCP", endpoint.host, endpoint.port, exc) from None
    raise OSError(f"no port free for both UDP and TCP on {endpoint.host} after {attempts} tries")


class Listeners:
    """Every configured address, UDP and TCP on each. Port 0 binds UDP first, TCP to the same port."""

    def __init__(
        self,
        responder: Responder,
        endpoints: tuple[Endpoint, ...],
        tcp: TcpLimits | None = None,
        udp_receive_buffer: int = DEFAULT_UDP_RECEIVE_BUFFER,
        udp_batch: int = DEFAULT_UDP_BATCH,
        fast_path: bool = True,
    ) -> None:
        self._responder = responder
        self._fast_path = fast_path
        self._endpoints = endpoints
        self._tcp_limits = tcp or TcpLimits()
        self._udp_receive_buffer = udp_receive_buffer
        self._udp_batch = udp_batch
        self.tcp: TcpServer | None = None
        self._udp: list[UdpReader] = []
        self._servers: list[asyncio.base_events.Server] = []
        self.bound: list[Endpoint] = []
        self.receive_buffers: list[int] = []  # what the kernel granted each UDP socket
        self._dropped_before = 0  # UDP answers dropped by readers since closed

    async def start(self, reuse_port: bool = False) -> None:
        loop = asyncio.get_running_loop()
        limits = self._tcp_limits
        allowed = descriptor_budget(limits.max_connections)
        if allowed < limits.max_connections:
            log.warning(
                "the open-file limit leaves room for %d DNS TCP connections, not %d "
                "(raise LimitNOFILE or ulimit -n)",
                allowed,
                limits.max_connections,
            )
            limits = TcpLimits(limits.idle_timeout, allowed, min(limits.max_per_prefix, allowed))
        tcp = self.tcp = TcpServer(self._responder, limits)
        for endpoint in self._endpoints:
            udp_sock, tcp_sock = _bind_pair(endpoint, reuse_port)
            port = udp_sock.getsockname()[1]
            if self._udp_receive_buffer:
                granted = set_receive_buffer(udp_sock, self._udp_receive_buffer)
                self.receive_buffers.append(granted)
                level = logging.INFO if granted >= self._udp_receive_buffer else logging.WARNING
                log.log(
                    level,
                    "UDP receive buffer on %s: %d octets granted for %d asked%s",
                    Endpoint(endpoint.host, port),
                    granted,
                    self._udp_receive_buffer,
                    "" if granted >= self._udp_receive_buffer else " (raise net.core.rmem_max)",
                )
            reader = UdpReader(udp_sock, self._responder, self._udp_batch, self._fast_path)
            if not self._udp:
                log.info("UDP answers: %s", _PATHS[reader.path])
            self._udp.append(reader)
            server = await loop.create_server(lambda: TcpConnection(tcp), sock=tcp_sock, backlog=512)
            self._servers.append(server)
            self.bound.append(Endpoint(endpoint.host, port))

    async def stop(self) -> None:
        # The readers leave the list as their drops are banked: a count read while the rest
        # stops (a /metrics scrape) must not see them twice.
        readers, self._udp = self._udp, []
        for udp in readers:
            udp.close()
        self._dropped_before += sum(udp.dropped for udp in readers)
        for server in self._servers:
            server.close()
        if self.tcp is not None:
            await self.tcp.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    @property
    def udp(self) -> list[UdpReader]:
        """The UDP readers, one per bound address."""
        return list(self._udp)

    def shed(self) -> dict[str, int]:
        """The work these listeners shed to protect the node, counted since they started: UDP
        answers the socket did not take, TCP connections refused (no room, none idle) and
        idle ones closed to make room."""
        tcp = self.tcp
        dropped = self._dropped_before + sum(udp.dropped for udp in self._udp)
        counts = (dropped, tcp.refused, tcp.evicted) if tcp is not None else (dropped, 0, 0)
        return dict(zip(SHED_EVENTS, counts, strict=True))
