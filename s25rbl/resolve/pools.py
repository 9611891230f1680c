"""The stub resolver's sockets: a pool of connected UDP sockets per upstream, each on its own
random port and replaced after ``rotate_queries`` queries or ``rotate_seconds``, and the one
TCP query made when an answer is truncated.

Queries are sent together at the end of the event loop's turn (``send``): the upstream is
woken once for all the lookups that one batch of DNS requests started, not once per query;
against a loopback unbound that cut the resolver's own CPU per lookup by more than a third
and s25rbl's per fresh verdict by 15 % (bench/README.md, "Queries sent together").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from s25rbl.resolve.codec import answers_question
from s25rbl.resolve.udp import CASE_CHANGED, UdpSocket

log = logging.getLogger(__name__)


class SocketPools:
    """The UDP sockets to each upstream, opened lazily in the running loop on first use."""

    def __init__(
        self,
        upstreams: Sequence[tuple[str, int]],
        *,
        sockets: int,
        rotate_queries: int,
        rotate_seconds: float,
        linger: float,
    ) -> None:
        self.upstreams = list(upstreams)
        self._sockets = sockets
        self._rotate_queries = rotate_queries
        self._rotate_seconds = rotate_seconds
        self._linger = linger  # how long a replaced socket stays open for late answers
        self.pools: list[list[UdpSocket] | None] = [None] * len(self.upstreams)
        self._creating: list[asyncio.Task[list[UdpSocket]] | None] = [None] * len(self.upstreams)
        self._next_socket = 0
        self._retiring: set[UdpSocket] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._tcp_writers: set[asyncio.StreamWriter] = set()
        self._due: list[UdpSocket] = []  # sockets with queries waiting for the end of the turn
        self.closed = False

    def open(self, index: int, then: Callable[[], None]) -> None:
        """Open upstream ``index``'s pool (or join its opening); ``then()`` once it is open or
        failed (``pools[index]`` is None then: unreachable or invalid, a later lookup retries)."""
        task = self._creating[index]
        if task is None:
            task = asyncio.get_running_loop().create_task(self._create_pool(index))
            task.add_done_callback(self._pool_created)
            self._creating[index] = task
        task.add_done_callback(lambda _task: then())

    def pick(self, index: int, pool: list[UdpSocket], loop: asyncio.AbstractEventLoop) -> UdpSocket:
        """The next socket of the pool; one due for rotation gets a replacement opened."""
        slot = self._next_socket % len(pool)
        self._next_socket += 1
        proto = pool[slot]
        proto.uses += 1
        if not proto.retiring and (
            proto.uses >= self._rotate_queries or loop.time() - proto.born >= self._rotate_seconds
        ):
            proto.retiring = True
            task = loop.create_task(self._replace(index, pool, slot, proto))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return proto

    def send(self, proto: UdpSocket, packet: bytes, loop: asyncio.AbstractEventLoop) -> None:
        """Send ``packet`` on ``proto`` once the event loop's current turn is done, with every
        other query of the turn. A query whose socket closes first is not sent: its attempt's
        deadline moves its lookup on, as for a lost datagram."""
        if not proto.outgoing:
            if not self._due:
                loop.call_soon(self._flush)
            self._due.append(proto)
        proto.outgoing.append(packet)

    def _flush(self) -> None:
        due, self._due = self._due, []
        for proto in due:
            packets, proto.outgoing = proto.outgoing, []
            transport = proto.transport
            if proto.closed or transport is None or transport.is_closing():
                continue
            try:
                for packet in packets:
                    transport.sendto(packet)
            except Exception:  # one socket's failure must not keep the others' queries back
                log.exception("error sending queries upstream; their lookups move on at their deadline")

    def refusing(self, within: float = 30.0) -> list[str]:
        """The upstreams (``host:port``) that refused a query (ICMP port unreachable: nothing
        listens there) within the last ``within`` seconds: what a timeout really was."""
        since = time.monotonic() - within
        return [
            f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            for (host, port), pool in zip(self.upstreams, self.pools, strict=True)
            if pool and any(sock.refused_at > since for sock in pool)
        ]

    async def _replace(self, index: int, pool: list[UdpSocket], slot: int, old: UdpSocket) -> None:
        """Open a socket on a new random port in ``old``'s place; close ``old`` once the
        queries sent on it have had their time."""
        loop = asyncio.get_running_loop()
        try:
            _transport, new = await loop.create_datagram_endpoint(
                UdpSocket, remote_addr=self.upstreams[index]
            )
        except OSError:
            old.retiring, old.uses, old.born = False, 0, loop.time()  # keep it; try again later
            return
        new.born = loop.time()
        if self.closed or self.pools[index] is not pool or pool[slot] is not old:
            if new.transport is not None:
                new.transport.close()
            return
        pool[slot] = new
        self._retiring.add(old)
        loop.call_later(self._linger, self._retire, old)

    def _retire(self, proto: UdpSocket) -> None:
        self._retiring.discard(proto)
        if proto.transport is not None:
            proto.transport.close()

    def _pool_created(self, task: asyncio.Task[list[UdpSocket]]) -> None:
        # Runs even when every waiting lookup was given up, so a finished pool is never
        # orphaned; after close() it is closed at once instead of installed.
        index = self._creating.index(task) if task in self._creating else -1
        if index >= 0:
            self._creating[index] = None
        if task.cancelled() or task.exception() is not None:
            return
        pool = task.result()
        if self.closed or index < 0:
            for proto in pool:
                if proto.transport is not None:
                    proto.transport.close()
            return
        self.pools[index] = pool

    async def _create_pool(self, index: int) -> list[UdpSocket]:
        loop = asyncio.get_running_loop()
        remote = self.upstreams[index]
        pool: list[UdpSocket] = []
        try:
            for _ in range(self._sockets):
                # Each socket is bound to its own OS-chosen ephemeral port: a spoofer has to
                # guess the port as well as the 16-bit id.
                _transport, proto = await loop.create_datagram_endpoint(UdpSocket, remote_addr=remote)
                proto.born = loop.time()
                pool.append(proto)
        except BaseException:
            for proto in pool:
                if proto.transport is not None:
                    proto.transport.close()
            raise
        return pool

    def drop(self, index: int, pool: list[UdpSocket]) -> None:
        """Close a pool with a dead socket; its queries move on and a new pool is made."""
        if self.pools[index] is pool:
            self.pools[index] = None
        for proto in pool:
            proto.fail_all()
            if proto.transport is not None:
                proto.transport.close()

    async def tcp_query(
        self, index: int, qid: int, body: bytes, question: bytes, exact: bytes, budget: float
    ) -> bytes | None:
        """One query over a fresh TCP connection (RFC 7766 framing).

        Returns the response, ``None`` on timeout, ``CASE_CHANGED`` when it echoes the
        question in another case, or ``b""`` (parses as malformed, so the attempt counts as
        SERVFAIL) when the connection fails or the answer does not match.
        """
        if budget <= 0:
            return None
        host, port = self.upstreams[index]
        packet = qid.to_bytes(2, "big") + body
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(budget):
                reader, writer = await asyncio.open_connection(host, port)
                self._tcp_writers.add(writer)
                writer.write(len(packet).to_bytes(2, "big") + packet)
                size = int.from_bytes(await reader.readexactly(2), "big")
                data = await reader.readexactly(size)
        except TimeoutError:
            return None
        except (OSError, asyncio.IncompleteReadError):
            return b""
        finally:
            if writer is not None:
                self._tcp_writers.discard(writer)
                writer.close()
        if not answers_question(data, qid, question):
            return b""
        return data if data[12 : 12 + len(exact)] == exact else CASE_CHANGED

    def close(self) -> None:
        """Close every socket; their outstanding queries fail."""
        self.closed = True
        for index, pool in enumerate(self.pools):
            if pool is not None:
                self.drop(index, pool)
        for proto in list(self._retiring):
            self._retire(proto)
        for writer in list(self._tcp_writers):
            writer.close()
        self._tcp_writers.clear()
