"""One lookup of the stub resolver (``client``) in flight, driven by callbacks: each query
sent, each answer taken where its datagram arrives, each attempt's deadline an entry in a
shared timer (``timers``)."""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
from collections.abc import Callable

from s25rbl.resolve.codec import SERVFAIL, TIMEOUT, LookupResult, mix_case, parse_answer, query_body
from s25rbl.resolve.pools import SocketPools
from s25rbl.resolve.timers import Timers
from s25rbl.resolve.udp import CASE_CHANGED, IdSource, Noise, Pending, UdpSocket

log = logging.getLogger(__name__)

Done = Callable[[LookupResult], None]


class Context:
    """What the lookups of one resolver share: its settings, sockets and state."""

    def __init__(
        self,
        pools: SocketPools,
        *,
        timeout: float,
        attempts: int,
        negative_ttl: int,
        max_ttl: int,
        case_changed: Callable[[int], None],
    ) -> None:
        self.pools = pools
        self.timeout = timeout
        self.attempts = attempts
        self.first_attempt = timeout / attempts  # the usual attempt's share
        self.upstreams = len(pools.upstreams)
        self.negative_ttl = negative_ttl
        self.max_ttl = max_ttl
        self.case_changed = case_changed
        self.case_kept = [True] * self.upstreams  # False: this upstream gets no 0x20
        self.ids = IdSource()
        self.noise = Noise()
        self.inflight: dict[tuple[bytes, int], Lookup] = {}  # lookups in flight by question
        self.closed = False


class Lookup:
    """One question in flight, for everyone who asked it (``waiters``): up to ``attempts``
    queries in turn to the upstreams within ``timeout``, each attempt an equal share of what
    is left, so an early SERVFAIL leaves more time for the next one.

    Queries of earlier attempts stay registered until the lookup ends, so a slow but working
    upstream whose answer arrives during a later attempt still counts. ``token`` names the
    current wait; a deadline or socket failure for an older one is ignored.
    """

    __slots__ = (
        "_as_given",
        "_attempt",
        "_attempt_end",
        "_body",
        "_busy",
        "_context",
        "_current",
        "_deadline",
        "_exact",
        "_failed",
        "_index",
        "_key",
        "_loop",
        "_mixed",
        "_outstanding",
        "_qend",
        "_qname",
        "_question",
        "_qwire",
        "_rdtype",
        "_timers",
        "done",
        "token",
        "waiters",
    )

    def __init__(
        self,
        context: Context,
        loop: asyncio.AbstractEventLoop,
        timers: Timers,
        qwire: bytes,
        rdtype: int,
        key: tuple[bytes, int],
        done: Done,
    ) -> None:
        self._context = context
        self._loop = loop
        self._timers = timers
        self._qwire = qwire
        self._rdtype = rdtype
        self._key = key
        self.waiters = [done]
        self._deadline = loop.time() + context.timeout
        self._attempt = 0
        self._failed = False
        self._as_given = False  # an upstream changed the question's case: no 0x20 for the rest
        self._busy = False  # asking over TCP: UDP answers and the attempt's deadline wait
        self._outstanding: list[tuple[dict[int, Pending], int, Pending]] = []
        self._current: tuple[dict[int, Pending], int, Pending] | None = None
        self._index = 0
        self._mixed = False
        self._body = self._question = self._exact = self._qname = b""
        self._qend = 0
        self._attempt_end = 0.0
        self.token = 0
        self.done = False

    # --- the attempts ----------------------------------------------------------------------

    def attempt_next(self) -> None:
        """Send the current attempt's query, or end the lookup if none is left."""
        context = self._context
        pools = context.pools
        attempts = context.attempts
        while self._attempt < attempts:
            if context.closed:
                self._finish(TIMEOUT)
                return
            now = self._loop.time()
            remaining = self._deadline - now
            if remaining <= 0:
                break
            index = self._attempt % context.upstreams
            pool = pools.pools[index]
            if pool is None:
                self.token += 1
                pools.open(index, functools.partial(self._opened, self.token, index))
                return
            proto = pools.pick(index, pool, self._loop)
            if proto.closed or proto.transport is None:
                pools.drop(index, pool)
                self._failed = True
                self._attempt += 1
                continue
            self._send(index, proto, now, remaining)
            return
        self._finish(SERVFAIL if self._failed else TIMEOUT)

    def _opened(self, token: int, index: int) -> None:
        if self.done or token != self.token:
            return
        if self._context.closed:
            self._finish(TIMEOUT)
            return
        if self._context.pools.pools[index] is None:
            self._failed = True
            self._attempt += 1
        self.attempt_next()

    def _send(self, index: int, proto: UdpSocket, now: float, remaining: float) -> None:
        context = self._context
        mixed = self._mixed = context.case_kept[index] and not self._as_given
        qwire = self._qwire
        body, question = query_body(
            mix_case(qwire, context.noise.take(len(qwire))) if mixed else qwire, self._rdtype
        )
        self._body, self._question = body, question
        self._exact = body[10:-11]  # the question as sent, between the header's tail and the OPT RR
        self._qname, self._qend = question[:-4], 12 + len(question)
        self._index = index
        pending = proto.pending
        ids = context.ids
        qid = ids.next()
        while qid in pending:
            qid = ids.next()
        entry = (self, question, self._exact)
        pending[qid] = entry
        self._current = sent = (pending, qid, entry)
        self._outstanding.append(sent)
        share = remaining / (context.attempts - self._attempt)
        if abs(share - context.first_attempt) < 0.001:
            share = context.first_attempt  # the shared timer's lane: the usual first attempt
        self._attempt_end = now + share
        self.token += 1
        self._timers.add(share, self, self.token)
        context.pools.send(proto, qid.to_bytes(2, "big") + body, self._loop)

    def _next_attempt(self) -> None:
        self._attempt += 1
        self.attempt_next()

    # --- what arrives ----------------------------------------------------------------------

    def live(self, token: int) -> bool:
        return token == self.token and not self.done

    def expired(self, token: int) -> None:
        """The attempt's time is up (or its socket failed): on to the next attempt."""
        if self.done or token != self.token or self._busy:
            return
        try:
            if self._context.closed:
                self._finish(TIMEOUT)
            else:
                self._next_attempt()
        except Exception:
            self._crashed()

    def failed(self) -> None:
        # From inside the socket's own clean-up: carried on from the event loop.
        self._loop.call_soon(self.expired, self.token)

    def received(self, data: bytes) -> None:
        """An answer to one of this lookup's queries (header and question checked), or
        ``CASE_CHANGED``."""
        if self.done or self._busy:
            return
        try:
            if self._context.closed:
                self._finish(TIMEOUT)
            elif data[2] & 0x02 and data is not CASE_CHANGED:
                # Truncated: the records may be incomplete, so ask again over TCP.
                self._busy = True
                self.token += 1
                task = self._loop.create_task(self._over_tcp())
                task.add_done_callback(_retrieve)
            else:
                self._answer(data)
        except Exception:
            self._crashed()

    async def _over_tcp(self) -> None:
        context = self._context
        budget = self._deadline - self._loop.time()
        tcp = await context.pools.tcp_query(
            self._index, context.ids.next(), self._body, self._question, self._exact, budget
        )
        self._busy = False
        if self.done:
            return
        try:
            if context.closed:
                self._finish(TIMEOUT)
            elif tcp is None:
                self._next_attempt()
            else:
                self._answer(tcp, rearm=True)
        except Exception:
            self._crashed()

    def _answer(self, data: bytes, rearm: bool = False) -> None:
        context = self._context
        if data is CASE_CHANGED:
            context.case_changed(self._index)
            if self._mixed:
                self._as_given = True  # the same attempt again, the name in the case it was given
                self.attempt_next()
            else:
                self._next_attempt()
            return
        try:
            result = parse_answer(
                data, self._qname, self._qend, self._rdtype, context.negative_ttl, context.max_ttl
            )
        except (IndexError, ValueError, struct.error):
            result = None
        if result is not None:
            self._finish(result)
            return
        self._failed = True
        # A late failure from an earlier upstream must not cut this attempt short.
        current = self._current
        now = self._loop.time()
        if current is None or current[0].get(current[1]) is not current[2] or now >= self._attempt_end:
            self._next_attempt()
        elif rearm:  # the wait goes on until the attempt's end
            self.token += 1
            self._timers.add(self._attempt_end - now, self, self.token)

    # --- the end ---------------------------------------------------------------------------

    def stop(self) -> None:
        """End without a result: nobody waits for it any more."""
        if not self.done:
            self._end()

    def _end(self) -> None:
        self.done = True
        self._current = None  # (it holds the pending entry, which holds this lookup)
        # Identity check: an answered id may already belong to another lookup.
        for pending, qid, entry in self._outstanding:
            if pending.get(qid) is entry:
                del pending[qid]
        self._outstanding.clear()
        if self._context.inflight.get(self._key) is self:
            del self._context.inflight[self._key]

    def _finish(self, result: LookupResult) -> None:
        self._end()
        waiters, self.waiters = self.waiters, []
        for done in waiters:
            try:
                done(result)
            except Exception:
                log.exception("error handing a lookup's result on")

    def _crashed(self) -> None:
        log.exception("error in a lookup; answered SERVFAIL")
        if not self.done:
            self._finish(SERVFAIL)


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
