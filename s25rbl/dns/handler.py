"""One handler for UDP and TCP alike: a request's bytes in, the response's bytes out.

A question asked before is answered from the answer cache (``s25rbl.dns.cache``): stored
bytes, the request's ID and question spliced in, nothing parsed or built. Otherwise the
request is parsed once into a ``Query`` and routed: errors, the apex, the hostname zone, or
an address whose verdict comes from memory whenever it can (``handle`` returns bytes); only a
verdict that needs a reverse lookup returns an awaitable. Every answer is a ``Reply`` that
says whether and until when it may be reused. Any error inside answers SERVFAIL (never
cached) and is logged: a bug in one query never takes the listener down.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from s25rbl.dns.answers import Answers, AnswerSettings, CountKey, Query
from s25rbl.dns.cache import INF, AnswerCache
from s25rbl.dns.zones import (
    MALFORMED,
    PARTIAL,
    Malformed,
    Partial,
    ZoneKind,
    ZoneTable,
    parse_reversed,
    relative_name,
)
from s25rbl.errors import Drop
from s25rbl.lists.domains import is_domain_level
from s25rbl.lists.values import IPAddress
from s25rbl.resolve.rdns import RdnsResult
from s25rbl.verdict.model import Step, Verdict
from s25rbl.verdict.pipeline import VerdictEngine
from s25rbl.wire import message as wire

log = logging.getLogger(__name__)

DEFAULT_CACHE_BYTES = 64 * 1024 * 1024  # whole answers (one per question variant: A, TXT, EDNS or not)

Result = bytes | Awaitable[bytes | None] | None


class Reply(NamedTuple):
    """A response and what it says about itself: what to count, and whether (and until when,
    clock.monotonic() time) the same request may be answered with the same bytes."""

    response: bytes
    stat: CountKey  # the responder.counts key
    expires: float | None = None  # None: never reuse; cache.INF: until the lists change
    entry_id: int | None = None  # the list entry that decided, counted again on each reuse


class Fresh(asyncio.Future[bytes | None]):
    """The answer to a question whose verdict waits for a reverse lookup."""

    given_up: Callable[[], None] | None = None

    def cancel(self, msg: Any | None = None) -> bool:
        given_up, self.given_up = self.given_up, None
        if given_up is not None and not self.done():
            given_up()
        return super().cancel(msg)


class Responder:
    """Answers DNS requests for the zones from the verdict engine; answers are kept whole in
    at most ``cache_bytes`` (and ``cache_size`` entries, if given; 0 in either: none, every
    answer is built)."""

    def __init__(
        self,
        zones: ZoneTable,
        engine: VerdictEngine,
        settings: AnswerSettings,
        serial: Callable[[], int] = lambda: 1,
        cache_size: int | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.zones = zones
        self.engine = engine
        self.settings = settings
        self.answers = Answers(settings, serial)
        self.counts: Counter[CountKey] = Counter()
        self.cache: AnswerCache | None = None
        if cache_bytes > 0 and cache_size != 0:
            self.cache = AnswerCache(
                cache_bytes,
                engine.lists,
                engine.clock.monotonic,
                self.counts,
                engine.hits.hit_entry,
                max_entries=cache_size,
                hit_tables=engine.hits.tables,
            )

    # --- entry point ---------------------------------------------------------------------

    def handle(self, data: bytes, tcp: bool, client: str | None = None) -> Result:
        """The answer to one packet from ``client`` (its address, for sharing lookup slots
        fairly between clients); None means send nothing."""
        cache = self.cache
        if cache is not None:
            if type(data) is not bytes:
                data = bytes(data)
            response = cache.answer(data, tcp)
            if response is not None:
                return response
        return self.handle_uncached(data, tcp, client)

    def handle_uncached(self, data: bytes, tcp: bool, client: str | None = None) -> Result:
        """``handle`` past the answer cache, for a caller that asked ``cache.answer`` first
        (and got None): the UDP reader does, so that a cached answer needs no client address."""
        try:
            request = wire.parse_request(data)
        except Drop:
            self.counts["-", "dropped", "-"] += 1
            return None
        query = Query(request, 65535 if tcp else self._udp_limit(request), client=client, tcp=tcp)
        lists = self.engine.lists()  # what this answer is built from, for the cache
        try:
            reply = self._dispatch(query)
        except Exception:
            reply = self._internal_error(query)
        if isinstance(reply, Reply):
            return self._finish(data, tcp, query, lists, reply)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called from outside the loop: the same work once awaited in it
            return self._fresh_later(data, tcp, query, lists, reply)
        return self._fresh(loop, data, tcp, query, lists, reply)

    async def _fresh_later(
        self, data: bytes, tcp: bool, query: Query, lists: object, ip: IPAddress
    ) -> bytes | None:
        return await self._fresh(asyncio.get_running_loop(), data, tcp, query, lists, ip)

    def _fresh(
        self,
        loop: asyncio.AbstractEventLoop,
        data: bytes,
        tcp: bool,
        query: Query,
        lists: object,
        ip: IPAddress,
    ) -> Fresh:
        """The answer once ``ip``'s reverse lookup is done: a future the lookup's callback
        completes (no task of its own); cancelling it gives the lookup up."""
        rdns = self.engine.rdns
        future = Fresh(loop=loop)

        def looked_up(result: RdnsResult | BaseException, cached: bool) -> None:
            if future.done():
                return
            future.given_up = None  # (it refers back to this function: no cycle left behind)
            if isinstance(result, asyncio.CancelledError):
                future.cancel()
                return
            try:
                if isinstance(result, BaseException):
                    raise result
                verdict = self.engine.decide_looked_up(ip, result, cached=cached)
                reply = self._verdict(query, verdict, self._valid_until(ip, verdict))
            except Exception:
                reply = self._internal_error(query)
            future.set_result(self._finish(data, tcp, query, lists, reply))

        future.given_up = lambda: rdns.cancel(ip, looked_up)
        try:
            rdns.start(ip, query.client, looked_up)
        except Exception:
            if not future.done():
                future.set_result(self._finish(data, tcp, query, lists, self._internal_error(query)))
        return future

    def _finish(self, data: bytes, tcp: bool, query: Query, lists: object, reply: Reply) -> bytes:
        self.counts[reply.stat] += 1
        if reply.expires is not None and self.cache is not None:
            self.cache.store(
                data,
                tcp,
                reply.response,
                question_length=len(query.request.question),
                lists=lists,
                expires=reply.expires,
                count=reply.stat,
                entry_id=reply.entry_id,
            )
        return reply.response

    def _internal_error(self, query: Query) -> Reply:
        request = query.request
        log.exception("internal error answering %r type %d", b".".join(request.labels), request.qtype)
        return Reply(self.answers.error(query, wire.SERVFAIL), ("-", "servfail", "-"))

    def _udp_limit(self, request: wire.Request) -> int:
        if not request.edns:
            return 512
        return min(request.payload, self.settings.max_udp_payload)

    # --- routing -------------------------------------------------------------------------

    def _dispatch(self, query: Query) -> Reply | IPAddress:
        """The reply, or the address whose verdict needs a reverse lookup first."""
        request = query.request
        if request.error is not None:
            kind = "formerr" if request.error == wire.FORMERR else "notimp"
            return Reply(self.answers.error(query, request.error), ("-", kind, "-"))
        if request.edns and request.edns_version > 0:
            return Reply(self.answers.error(query, wire.BADVERS), ("-", "badvers", "-"))
        found = self.zones.find(request.labels)
        if found is None or request.qclass not in (wire.CLASS_IN, wire.CLASS_ANY):
            return Reply(self.answers.error(query, wire.REFUSED), ("-", "refused", "-"))
        query.zone, query.relative = found
        if request.qtype in (wire.TYPE_AXFR, wire.TYPE_IXFR):
            return Reply(self.answers.error(query, wire.REFUSED), (query.kind, "refused", "-"))
        query.apex = 12 + sum(len(label) + 1 for label in query.relative)
        if not query.relative:
            return Reply(self.answers.apex(query), (query.kind, "apex", "-"), INF)
        if query.zone.kind is ZoneKind.HOSTNAME:
            return self._hostname(query)
        target = parse_reversed(query.relative)
        if target is PARTIAL:
            response = self.answers.negative(query, nxdomain=False)
            return Reply(response, (query.kind, "nodata", "-"), INF)
        if target is MALFORMED:
            response = self.answers.negative(query, nxdomain=True)
            return Reply(response, (query.kind, "malformed", "-"), INF)
        assert not isinstance(target, Partial | Malformed)
        ip: IPAddress = target
        verdict = self.engine.decide_fast(ip)
        if verdict is not None:
            return self._verdict(query, verdict, self._valid_until(ip, verdict))
        return ip  # decide_fast found nothing in steps 1-3: the lookup and what follows

    def _valid_until(self, ip: IPAddress, verdict: Verdict) -> float | None:
        """How long an answer from ``verdict`` stays right (INF: until the lists change)."""
        return self.engine.valid_until(ip, verdict, INF)

    def _hostname(self, query: Query) -> Reply:
        assert query.relative is not None
        name = relative_name(query.relative)
        if name is None:
            response = self.answers.negative(query, nxdomain=True)
            return Reply(response, (query.kind, "malformed", "-"), INF)
        verdict = self.engine.decide_name(name)
        if not verdict.listed and verdict.step is not Step.TEST_ENTRY and is_domain_level(name):
            response = self.answers.negative(query, nxdomain=False)
            return Reply(response, (query.kind, "nodata", "-"), INF)
        return self._verdict(query, verdict, INF)

    def _verdict(self, query: Query, verdict: Verdict, expires: float | None) -> Reply:
        response, count = self.answers.verdict(query, verdict)
        entry_id = verdict.match.entry_id if verdict.match is not None else None
        return Reply(response, count, expires, entry_id)
