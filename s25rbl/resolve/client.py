"""The stub resolver's sockets: a pool of connected UDP sockets per upstream, TCP when an
answer is truncated, one deadline per lookup. The message codec is ``codec``."""

from __future__ import annotations

import asyncio
import os
import struct
import typing
from collections.abc import Iterator, Sequence

from s25rbl.resolve.codec import (
    SERVFAIL,
    SUPPORTED,
    TIMEOUT,
    LookupResult,
    answers_question,
    encode_query_name,
    parse_answer,
    query_body,
)

_Pending: typing.TypeAlias = "tuple[asyncio.Future[bytes | None], bytes]"


class _IdSource:
    """Unpredictable 16-bit query ids; os.urandom is called once per 4096 ids."""

    __slots__ = ("_ids",)

    def __init__(self) -> None:
        self._ids: Iterator[int] = iter(())

    def next(self) -> int:
        for qid in self._ids:
            return qid
        self._ids = iter(memoryview(os.urandom(8192)).cast("H").tolist())
        return next(self._ids)


class _UdpProtocol(asyncio.DatagramProtocol):
    """One connected UDP socket; the kernel already drops datagrams from other sources."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: dict[int, _Pending] = {}
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | typing.Any, int]) -> None:
        # Anything that is not the answer to an outstanding question is dropped silently:
        # that is the anti-spoofing rule, and a hostile packet must never break the socket.
        try:
            if len(data) < 12:
                return
            qid = (data[0] << 8) | data[1]
            entry = self.pending.get(qid)
            if entry is None or not answers_question(data, qid, entry[1]):
                return
            del self.pending[qid]
            fut = entry[0]
            if not fut.done():
                fut.set_result(data)
        except Exception:
            return

    def error_received(self, exc: Exception) -> None:
        # ICMP errors on a connected socket cannot be tied to one query; the per-attempt
        # timer moves the lookup on to the next upstream.
        return

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.fail_all()

    def fail_all(self) -> None:
        pending, self.pending = self.pending, {}
        for fut, _question in pending.values():
            if not fut.done():
                fut.set_result(None)


def _expire(fut: asyncio.Future[bytes | None]) -> None:
    if not fut.done():
        fut.set_result(None)


class StubResolver:
    """Resolver that sends queries straight to recursive upstreams over UDP (TCP on TC=1).

    Sockets are created lazily in the running loop on first use; use one instance per loop.
    """

    def __init__(
        self,
        upstreams: Sequence[tuple[str, int]],
        *,
        timeout: float = 1.0,
        attempts: int = 2,
        sockets: int = 8,
        negative_ttl: int = 60,
        max_ttl: int = 86400,
    ) -> None:
        if not upstreams:
            raise ValueError("at least one upstream is required")
        if timeout <= 0 or attempts < 1 or sockets < 1:
            raise ValueError("timeout must be > 0, attempts and sockets >= 1")
        self._upstreams = [(str(host), int(port)) for host, port in upstreams]
        self._timeout = float(timeout)
        self._attempts = int(attempts)
        self._sockets = int(sockets)
        self._negative_ttl = int(negative_ttl)
        self._max_ttl = int(max_ttl)
        self._pools: list[list[_UdpProtocol] | None] = [None] * len(self._upstreams)
        self._creating: list[asyncio.Task[list[_UdpProtocol]] | None] = [None] * len(self._upstreams)
        self._next_socket = 0
        self._ids = _IdSource()
        self._tcp_writers: set[asyncio.StreamWriter] = set()
        self._closed = False

    async def lookup(self, name: str, rdtype: int) -> LookupResult:
        if rdtype not in SUPPORTED:
            raise ValueError(f"unsupported query type {rdtype}")
        qwire = encode_query_name(name)
        if self._closed:
            return TIMEOUT
        body, question = query_body(qwire, rdtype)
        qname = question[:-4]
        qend = 12 + len(question)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        attempts = self._attempts
        upstreams = len(self._upstreams)
        failed = False
        # Queries of earlier attempts stay registered until the lookup ends, so a slow but
        # working upstream whose answer arrives during a later attempt still counts.
        outstanding: list[tuple[dict[int, _Pending], int]] = []
        entry: _Pending | None = None
        try:
            for attempt in range(attempts):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                index = attempt % upstreams
                pool = self._pools[index]
                if pool is None:
                    pool = await self._open_pool(index)
                    if self._closed:
                        return TIMEOUT
                    if pool is None:
                        failed = True
                        continue
                proto = pool[self._next_socket % len(pool)]
                self._next_socket += 1
                transport = proto.transport
                if proto.closed or transport is None:
                    self._drop_pool(index, pool)
                    failed = True
                    continue

                pending = proto.pending
                qid = self._ids.next()
                while qid in pending:
                    qid = self._ids.next()
                # The whole lookup is bounded by `timeout`; each attempt gets an equal share
                # of what is left, so an early SERVFAIL leaves more time for the next one.
                attempt_end = loop.time() + remaining / (attempts - attempt)
                sent = False
                while True:
                    fut: asyncio.Future[bytes | None] = loop.create_future()
                    previous, entry = entry, (fut, question)
                    if previous is not None:
                        for earlier, earlier_id in outstanding:
                            if earlier.get(earlier_id) is previous:
                                earlier[earlier_id] = entry
                    if not sent:
                        pending[qid] = entry
                        outstanding.append((pending, qid))
                    timer = loop.call_at(attempt_end, _expire, fut)
                    try:
                        if not sent:
                            sent = True
                            transport.sendto(qid.to_bytes(2, "big") + body)
                        data = await fut
                    finally:
                        timer.cancel()
                    if self._closed:
                        return TIMEOUT
                    if data is None:
                        break
                    if data[2] & 0x02:
                        # Truncated: the records may be incomplete, so ask again over TCP.
                        tcp = await self._tcp_query(index, body, question, deadline - loop.time())
                        if self._closed:
                            return TIMEOUT
                        if tcp is None:
                            break
                        data = tcp
                    try:
                        result = parse_answer(data, qname, qend, rdtype, self._negative_ttl, self._max_ttl)
                    except (IndexError, ValueError, struct.error):
                        result = None
                    if result is not None:
                        return result
                    failed = True
                    # A late failure from an earlier upstream must not cut this attempt short.
                    if pending.get(qid) is not entry or loop.time() >= attempt_end:
                        break
            return SERVFAIL if failed else TIMEOUT
        finally:
            # Identity check: an answered id may already belong to another lookup.
            for earlier, earlier_id in outstanding:
                if earlier.get(earlier_id) is entry:
                    del earlier[earlier_id]

    async def _tcp_query(self, index: int, body: bytes, question: bytes, budget: float) -> bytes | None:
        """One query over a fresh TCP connection (RFC 7766 framing).

        Returns the response, ``None`` on timeout, or ``b""`` (parses as malformed, so the
        attempt counts as SERVFAIL) when the connection fails or the answer does not match.
        """
        if budget <= 0:
            return None
        host, port = self._upstreams[index]
        qid = self._ids.next()
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
        return data if answers_question(data, qid, question) else b""

    async def _open_pool(self, index: int) -> list[_UdpProtocol] | None:
        task = self._creating[index]
        if task is None:
            task = asyncio.get_running_loop().create_task(self._create_pool(index))
            task.add_done_callback(self._pool_created)
            self._creating[index] = task
        try:
            # Shielded: one cancelled lookup must not cancel the pool others wait for.
            await asyncio.shield(task)
        except Exception:
            # Unreachable or invalid upstream: this attempt fails, a later lookup retries.
            return None
        return self._pools[index]

    def _pool_created(self, task: asyncio.Task[list[_UdpProtocol]]) -> None:
        # Runs even when every waiting lookup was cancelled, so a finished pool is never
        # orphaned; after close() it is closed at once instead of installed.
        index = self._creating.index(task) if task in self._creating else -1
        if index >= 0:
            self._creating[index] = None
        if task.cancelled() or task.exception() is not None:
            return
        pool = task.result()
        if self._closed or index < 0:
            for proto in pool:
                if proto.transport is not None:
                    proto.transport.close()
            return
        self._pools[index] = pool

    async def _create_pool(self, index: int) -> list[_UdpProtocol]:
        loop = asyncio.get_running_loop()
        remote = self._upstreams[index]
        pool: list[_UdpProtocol] = []
        try:
            for _ in range(self._sockets):
                # Each socket is bound to its own OS-chosen ephemeral port: a spoofer has to
                # guess the port as well as the 16-bit id.
                _transport, proto = await loop.create_datagram_endpoint(_UdpProtocol, remote_addr=remote)
                pool.append(proto)
        except BaseException:
            for proto in pool:
                if proto.transport is not None:
                    proto.transport.close()
            raise
        return pool

    def _drop_pool(self, index: int, pool: list[_UdpProtocol]) -> None:
        """Close a pool with a dead socket; its queries move on and a new pool is made."""
        if self._pools[index] is pool:
            self._pools[index] = None
        for proto in pool:
            proto.fail_all()
            if proto.transport is not None:
                proto.transport.close()

    async def close(self) -> None:
        """Close every socket; outstanding lookups return TIMEOUT."""
        self._closed = True
        for index, pool in enumerate(self._pools):
            if pool is not None:
                self._drop_pool(index, pool)
        for writer in list(self._tcp_writers):
            writer.close()
        self._tcp_writers.clear()
