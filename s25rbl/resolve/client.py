"""The stub resolver: queries straight to recursive upstreams over UDP (sockets: ``pools``),
TCP when an answer is truncated, one deadline per lookup. The message codec is ``codec``.

Against spoofing and floods: each socket is bound to its own random port and is replaced after
``rotate_queries`` queries or ``rotate_seconds``, so the ports change over time; the question's
letters are sent in random case (DNS 0x20) and an answer must echo them exactly, except from
an upstream seen to change them (it is then asked as given, as resolvers fall back); identical
lookups in flight share one; and at most ``max_lookups`` are in flight (beyond that, TIMEOUT at
once), which bounds the pending state: each holds at most ``attempts`` outstanding queries.

A lookup is driven by callbacks, not a coroutine: the answer's datagram is parsed where it
arrives and the result handed to whoever asked (``ask``), and its deadlines are entries in
one shared timer (``timers``): no task, future or timer handle per query. ``lookup`` is the
same as a coroutine.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence

from s25rbl.resolve.codec import SUPPORTED, TIMEOUT, LookupResult, encode_query_name
from s25rbl.resolve.lookup import Context, Done, Lookup
from s25rbl.resolve.pools import SocketPools
from s25rbl.resolve.timers import Timers

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
        pools = SocketPools(
            [(str(host), int(port)) for host, port in upstreams],
            sockets=int(sockets),
            rotate_queries=int(rotate_queries),
            rotate_seconds=float(rotate_seconds),
            linger=float(timeout) + 0.1,
        )
        self._context = Context(
            pools,
            timeout=float(timeout),
            attempts=int(attempts),
            negative_ttl=int(negative_ttl),
            max_ttl=int(max_ttl),
            case_changed=self._case_changed,
        )
        self._context.case_kept = [random_case] * self._context.upstreams
        self._case_changes = [0] * self._context.upstreams
        self._max_lookups = int(max_lookups)
        self._timers: Timers | None = None
        self.refused = 0  # lookups answered TIMEOUT at once: max_lookups in flight already

    def ask(self, name: str, rdtype: int, done: Done) -> Lookup | None:
        """Look ``name`` up; ``done(result)`` is called once with the result: from the event
        loop, or before this returns if every attempt failed at once (no socket would send).
        Returns the lookup to ``cancel`` if the answer is no longer wanted (None: TIMEOUT is
        on its way, closed or too many in flight). ValueError for a name that cannot be
        asked."""
        if rdtype not in SUPPORTED:
            raise ValueError(f"unsupported query type {rdtype}")
        qwire = encode_query_name(name)
        loop = asyncio.get_running_loop()
        context = self._context
        if context.closed:
            loop.call_soon(done, TIMEOUT)
            return None
        key = (qwire.lower(), rdtype)
        lookup = context.inflight.get(key)
        if lookup is not None:  # the same question is in flight: its result is ours too
            lookup.waiters.append(done)
            return lookup
        if len(context.inflight) >= self._max_lookups:
            self.refused += 1
            loop.call_soon(done, TIMEOUT)
            return None
        timers = self._timers
        if timers is None:
            timers = self._timers = Timers(loop, (context.first_attempt,))
        lookup = context.inflight[key] = Lookup(context, loop, timers, qwire, rdtype, key, done)
        lookup.attempt_next()
        return lookup

    def cancel(self, lookup: Lookup, done: Done) -> None:
        """``done`` no longer wants the result; a lookup nobody waits for any more stops."""
        try:
            lookup.waiters.remove(done)
        except ValueError:
            return
        if not lookup.waiters:
            lookup.stop()

    async def lookup(self, name: str, rdtype: int) -> LookupResult:
        future: asyncio.Future[LookupResult] = asyncio.get_running_loop().create_future()
        done = functools.partial(_settle, future)
        lookup = self.ask(name, rdtype, done)
        try:
            return await future
        except asyncio.CancelledError:
            if lookup is not None:
                self.cancel(lookup, done)
            raise

    def refusing(self, within: float = 30.0) -> list[str]:
        """The upstreams (``host:port``) that refused a query (ICMP port unreachable: nothing
        listens there) within the last ``within`` seconds: what a timeout really was."""
        return self._context.pools.refusing(within)

    def _case_changed(self, index: int) -> None:
        self._case_changes[index] += 1
        kept = self._context.case_kept
        if self._case_changes[index] >= _CASE_STRIKES and kept[index]:
            kept[index] = False
            host, port = self._context.pools.upstreams[index]
            log.warning(
                "upstream %s port %d does not echo the question's case (DNS 0x20): asking it "
                "without from now on (or someone is spoofing answers to it)",
                host,
                port,
            )

    async def close(self) -> None:
        """Close every socket; outstanding lookups return TIMEOUT."""
        self._context.closed = True
        if self._timers is not None:
            self._timers.close()
        self._context.pools.close()


def _settle(future: asyncio.Future[LookupResult], result: LookupResult) -> None:
    if not future.done():
        future.set_result(result)
