"""The stub resolver's sockets: a pool of connected UDP sockets per upstream, TCP when an
answer is truncated, one deadline per lookup. The message codec is ``codec``.

Against spoofing and floods: each socket is bound to its own random port and is replaced after
``rotate_queries`` queries or ``rotate_seconds``, so the ports change over time; the question's
letters are sent in random case (DNS 0x20) and an answer must echo them exactly, except from
an upstream seen to change them (it is then asked as given, as resolvers fall back); identical
lookups in flight share one; and at most ``max_lookups`` are in flight (beyond that, TIMEOUT at
once), which bounds the pending state: each holds at most ``attempts`` outstanding queries.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Sequence

from s25rbl.resolve.codec import (
    SERVFAIL,
    SUPPORTED,
    TIMEOUT,
    LookupResult,
    answers_question,
    encode_query_name,
    mix_case,
    parse_answer,
    query_body,
)
from s25rbl.resolve.udp import CASE_CHANGED, IdSource, Noise, Sent, UdpSocket, expire

log = logging.getLogger(__name__)

_CASE_STRIKES = 3  # answers with the case changed before an upstream is asked without 0x20


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
        max_lookups: int = 8192,
        rotate_queries: int = 2000,
        rotate_seconds: float = 60.0,
        random_case: bool = True,
    ) -> None:
        if not upstreams:
            raise ValueError("at least one upstream is required")
        if timeout <= 0 or attempts < 1 or sockets < 1 or max_lookups < 1 or rotate_queries < 1:
            raise ValueError("timeout must be > 0; attempts, sockets, max_lookups, rotate_queries >= 1")
        self._upstreams = [(str(host), int(port)) for host, port in upstreams]
        self._timeout = float(timeout)
        self._attempts = int(attempts)
        self._sockets = int(sockets)
        self._negative_ttl = int(negative_ttl)
        self._max_ttl = int(max_ttl)
        self._max_lookups = int(max_lookups)
        self._rotate_queries = int(rotate_queries)
        self._rotate_seconds = float(rotate_seconds)
        self._pools: list[list[UdpSocket] | None] = [None] * len(self._upstreams)
        self._creating: list[asyncio.Task[list[UdpSocket]] | None] = [None] * len(self._upstreams)
        self._next_socket = 0
        self._ids = IdSource()
        self._noise = Noise()
        self._case_kept = [random_case] * len(self._upstreams)  # False: this upstream gets no 0x20
        self._case_changes = [0] * len(self._upstreams)
        # Lookups in flight by question; each holds the future of those who joined it, if any.
        self._inflight: dict[tuple[bytes, int], list[asyncio.Future[LookupResult] | None]] = {}
        self._retiring: set[UdpSocket] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._tcp_writers: set[asyncio.StreamWriter] = set()
        self._closed = False
        self.refused = 0  # lookups answered TIMEOUT at once: max_lookups in flight already

    async def lookup(self, name: str, rdtype: int) -> LookupResult:
        if rdtype not in SUPPORTED:
            raise ValueError(f"unsupported query type {rdtype}")
        qwire = encode_query_name(name)
        if self._closed:
            return TIMEOUT
        key = (qwire.lower(), rdtype)
        shared = self._inflight.get(key)
        if shared is not None:
            # Another lookup of the same question is in flight: wait for its result (the
            # future is made only now, so a lookup nobody joins costs none).
            joined = shared[0]
            if joined is None:
                joined = shared[0] = asyncio.get_running_loop().create_future()
            try:
                return await asyncio.shield(joined)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not joined.cancelled() or (task is not None and task.cancelling()):
                    raise
                return await self.lookup(name, rdtype)  # the lookup joined was cancelled: ask anew
        if len(self._inflight) >= self._max_lookups:
            self.refused += 1
            return TIMEOUT
        mine: list[asyncio.Future[LookupResult] | None] = [None]
        self._inflight[key] = mine
        try:
            result = await self._lookup(qwire, rdtype)
        except asyncio.CancelledError:
            if mine[0] is not None:
                mine[0].cancel()
            raise
        except BaseException as exc:
            if mine[0] is not None:
                mine[0].set_exception(exc)
                mine[0].exception()  # retrieved: the waiters re-raise it themselves
            raise
        finally:
            del self._inflight[key]
        if mine[0] is not None:
            mine[0].set_result(result)
        return result

    async def _lookup(self, qwire: bytes, rdtype: int) -> LookupResult:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        attempts = self._attempts
        upstreams = len(self._upstreams)
        failed = False
        as_given = False  # an upstream changed the question's case: no 0x20 for the rest
        # Queries of earlier attempts stay registered until the lookup ends, so a slow but
        # working upstream whose answer arrives during a later attempt still counts.
        outstanding: list[Sent] = []
        attempt = 0
        try:
            while attempt < attempts:
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
                        failed, attempt = True, attempt + 1
                        continue
                proto = self._pick(index, pool, loop)
                transport = proto.transport
                if proto.closed or transport is None:
                    self._drop_pool(index, pool)
                    failed, attempt = True, attempt + 1
                    continue
                mixed = self._case_kept[index] and not as_given
                body, question = query_body(
                    mix_case(qwire, self._noise.take(len(qwire))) if mixed else qwire, rdtype
                )
                exact = body[10:-11]  # the question as sent, between the header's tail and the OPT RR
                qname, qend = question[:-4], 12 + len(question)
                pending = proto.pending
                qid = self._ids.next()
                while qid in pending:
                    qid = self._ids.next()
                # The whole lookup is bounded by `timeout`; each attempt gets an equal share
                # of what is left, so an early SERVFAIL leaves more time for the next one.
                attempt_end = loop.time() + remaining / (attempts - attempt)
                sent: Sent | None = None
                case_changed = False
                while True:
                    fut: asyncio.Future[bytes | None] = loop.create_future()
                    for earlier in outstanding:  # an earlier attempt's answer resolves this future
                        if earlier.pending.get(earlier.qid) is earlier.entry:
                            entry = (fut, earlier.entry[1], earlier.entry[2])
                            earlier.pending[earlier.qid] = earlier.entry = entry
                    if sent is None:
                        sent = Sent(pending, qid, (fut, question, exact))
                        pending[qid] = sent.entry
                        outstanding.append(sent)
                        transport.sendto(qid.to_bytes(2, "big") + body)
                    timer = loop.call_at(attempt_end, expire, fut)
                    try:
                        data = await fut
                    finally:
                        timer.cancel()
                    if self._closed:
                        return TIMEOUT
                    if data is None:
                        break
                    if data[2] & 0x02 and data is not CASE_CHANGED:
                        # Truncated: the records may be incomplete, so ask again over TCP.
                        tcp = await self._tcp_query(index, body, question, exact, deadline - loop.time())
                        if self._closed:
                            return TIMEOUT
                        if tcp is None:
                            break
                        data = tcp
                    if data is CASE_CHANGED:
                        case_changed = mixed
                        self._case_changed(index)
                        break
                    try:
                        result = parse_answer(data, qname, qend, rdtype, self._negative_ttl, self._max_ttl)
                    except (IndexError, ValueError, struct.error):
                        result = None
                    if result is not None:
                        return result
                    failed = True
                    # A late failure from an earlier upstream must not cut this attempt short.
                    if pending.get(qid) is not sent.entry or loop.time() >= attempt_end:
                        break
                if case_changed:
                    as_given = True  # the same attempt again, the name in the case it was given
                    continue
                attempt += 1
            return SERVFAIL if failed else TIMEOUT
        finally:
            # Identity check: an answered id may already belong to another lookup.
            for earlier in outstanding:
                if earlier.pending.get(earlier.qid) is earlier.entry:
                    del earlier.pending[earlier.qid]

    def refusing(self, within: float = 30.0) -> list[str]:
        """The upstreams (``host:port``) that refused a query (ICMP port unreachable: nothing
        listens there) within the last ``within`` seconds: what a timeout really was."""
        since = time.monotonic() - within
        return [
            f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            for (host, port), pool in zip(self._upstreams, self._pools, strict=True)
            if pool and any(sock.refused_at > since for sock in pool)
        ]

    def _case_changed(self, index: int) -> None:
        self._case_changes[index] += 1
        if self._case_changes[index] >= _CASE_STRIKES and self._case_kept[index]:
            self._case_kept[index] = False
            host, port = self._upstreams[index]
            log.warning(
                "upstream %s port %d does not echo the question's case (DNS 0x20): asking it "
                "without from now on (or someone is spoofing answers to it)",
                host,
                port,
            )

    def _pick(self, index: int, pool: list[UdpSocket], loop: asyncio.AbstractEventLoop) -> UdpSocket:
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

    async def _replace(self, index: int, pool: list[UdpSocket], slot: int, old: UdpSocket) -> None:
        """Open a socket on a new random port in ``old``'s place; close ``old`` once the
        queries sent on it have had their time."""
        loop = asyncio.get_running_loop()
        try:
            _transport, new = await loop.create_datagram_endpoint(
                UdpSocket, remote_addr=self._upstreams[index]
            )
        except OSError:
            old.retiring, old.uses, old.born = False, 0, loop.time()  # keep it; try again later
            return
        new.born = loop.time()
        if self._closed or self._pools[index] is not pool or pool[slot] is not old:
            if new.transport is not None:
                new.transport.close()
            return
        pool[slot] = new
        self._retiring.add(old)
        loop.call_later(self._timeout + 0.1, self._retire, old)

    def _retire(self, proto: UdpSocket) -> None:
        self._retiring.discard(proto)
        if proto.transport is not None:
            proto.transport.close()

    async def _tcp_query(
        self, index: int, body: bytes, question: bytes, exact: bytes, budget: float
    ) -> bytes | None:
        """One query over a fresh TCP connection (RFC 7766 framing).

        Returns the response, ``None`` on timeout, ``CASE_CHANGED`` when it echoes the
        question in another case, or ``b""`` (parses as malformed, so the attempt counts as
        SERVFAIL) when the connection fails or the answer does not match.
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
        if not answers_question(data, qid, question):
            return b""
        return data if data[12 : 12 + len(exact)] == exact else CASE_CHANGED

    async def _open_pool(self, index: int) -> list[UdpSocket] | None:
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

    def _pool_created(self, task: asyncio.Task[list[UdpSocket]]) -> None:
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

    async def _create_pool(self, index: int) -> list[UdpSocket]:
        loop = asyncio.get_running_loop()
        remote = self._upstreams[index]
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

    def _drop_pool(self, index: int, pool: list[UdpSocket]) -> None:
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
        for proto in list(self._retiring):
            self._retire(proto)
        for writer in list(self._tcp_writers):
            writer.close()
        self._tcp_writers.clear()
