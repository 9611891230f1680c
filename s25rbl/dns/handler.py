"""One handler for UDP and TCP alike: a request's bytes in, the response's bytes out.

A question asked before is answered from the answer cache (``s25rbl.dns.cache``): stored
bytes, the request's ID and question spliced in, nothing parsed or built. Otherwise it answers
from memory whenever it can (``handle`` returns bytes); only a verdict that needs a reverse
lookup returns an awaitable. Every answer is a ``Reply`` that says whether and until when it
may be reused. Any error inside answers SERVFAIL (never cached) and is logged: a bug in one
query never takes the listener down.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NamedTuple

from s25rbl.dns import wire
from s25rbl.dns.cache import INF, AnswerCache
from s25rbl.dns.wire import Request
from s25rbl.dns.zones import (
    MALFORMED,
    PARTIAL,
    Malformed,
    Partial,
    Zone,
    ZoneKind,
    ZoneTable,
    is_domain_level,
    parse_reversed,
    relative_name,
)
from s25rbl.entries import IPAddress
from s25rbl.verdict.model import Code, Step, Verdict, WhitelistCode
from s25rbl.verdict.pipeline import VerdictEngine

log = logging.getLogger(__name__)

DEFAULT_CACHE_SIZE = 250_000  # answers (one per question variant: A, TXT, EDNS or not)

WHITELIST_TXT = {
    WhitelistCode.OPERATOR: "whitelisted by the operator",
    WhitelistCode.LEARNED: "whitelisted: learned from retries",
}

Result = bytes | Awaitable[bytes | None] | None
CountKey = tuple[str, str, str]


class Reply(NamedTuple):
    """A response and what it says about itself: what to count, and whether (and until when,
    clock.monotonic() time) the same request may be answered with the same bytes."""

    response: bytes
    stat: CountKey  # the responder.counts key
    expires: float | None = None  # None: never reuse; cache.INF: until the lists change
    entry_id: int | None = None  # the list entry that decided, counted again on each reuse


@dataclass(frozen=True, slots=True)
class AnswerSettings:
    ttl: int = 300
    negative_ttl: int = 300
    tempfail_ttl: int = 30
    nameservers: tuple[str, ...] = ("localhost",)
    hostmaster: str = "hostmaster.localhost"
    max_udp_payload: int = 1232


class Responder:
    """``cache_size`` answers are kept whole (0: none, every answer is built)."""

    def __init__(
        self,
        zones: ZoneTable,
        engine: VerdictEngine,
        settings: AnswerSettings,
        serial: Callable[[], int] = lambda: 1,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self.zones = zones
        self.engine = engine
        self.settings = settings
        self._serial = serial
        self._soa_cache: dict[tuple[str, int, int], bytes] = {}
        self._ns_rdata = [wire.encode_name(ns) for ns in settings.nameservers]
        self.counts: Counter[CountKey] = Counter()
        self.cache: AnswerCache | None = None
        if cache_size > 0:
            self.cache = AnswerCache(
                cache_size, engine.lists, engine.clock.monotonic, self.counts, engine.hits.hit_entry
            )

    # --- entry point ---------------------------------------------------------------------

    def handle(self, data: bytes, tcp: bool) -> Result:
        """The answer to one packet; None means send nothing."""
        cache = self.cache
        if cache is not None:
            if type(data) is not bytes:
                data = bytes(data)
            response = cache.answer(data, tcp)
            if response is not None:
                return response
        try:
            request = wire.parse_request(data)
        except wire.Drop:
            self.counts["-", "dropped", "-"] += 1
            return None
        limit = 65535 if tcp else self._udp_limit(request)
        lists = self.engine.lists()  # what this answer is built from, for the cache
        try:
            reply = self._dispatch(request, limit)
        except Exception:
            reply = self._internal_error(request, limit)
        if isinstance(reply, Reply):
            return self._finish(data, tcp, request, lists, reply)
        return self._finish_later(data, tcp, request, lists, limit, reply)

    def _finish(self, data: bytes, tcp: bool, request: Request, lists: object, reply: Reply) -> bytes:
        self.counts[reply.stat] += 1
        if reply.expires is not None and self.cache is not None:
            self.cache.store(
                data,
                tcp,
                reply.response,
                question_length=len(request.question),
                lists=lists,
                expires=reply.expires,
                count=reply.stat,
                entry_id=reply.entry_id,
            )
        return reply.response

    async def _finish_later(
        self, data: bytes, tcp: bool, request: Request, lists: object, limit: int, later: Awaitable[Reply]
    ) -> bytes | None:
        try:
            reply = await later
        except Exception:
            reply = self._internal_error(request, limit)
        return self._finish(data, tcp, request, lists, reply)

    def _internal_error(self, request: Request, limit: int) -> Reply:
        log.exception("internal error answering %r type %d", b".".join(request.labels), request.qtype)
        return Reply(wire.message(request, wire.SERVFAIL, limit=limit), ("-", "servfail", "-"))

    def _udp_limit(self, request: Request) -> int:
        if not request.edns:
            return 512
        return min(request.payload, self.settings.max_udp_payload)

    def _dispatch(self, request: Request, limit: int) -> Reply | Awaitable[Reply]:
        if request.error is not None:
            kind = "formerr" if request.error == wire.FORMERR else "notimp"
            return Reply(wire.message(request, request.error, limit=limit), ("-", kind, "-"))
        if request.edns and request.edns_version > 0:
            return Reply(wire.message(request, wire.BADVERS, limit=limit), ("-", "badvers", "-"))
        found = self.zones.find(request.labels)
        if found is None or request.qclass not in (wire.CLASS_IN, wire.CLASS_ANY):
            return Reply(wire.message(request, wire.REFUSED, limit=limit), ("-", "refused", "-"))
        zone, relative = found
        if request.qtype in (wire.TYPE_AXFR, wire.TYPE_IXFR):
            return Reply(wire.message(request, wire.REFUSED, limit=limit), (zone.kind.value, "refused", "-"))
        apex_offset = 12 + sum(len(label) + 1 for label in relative)
        if not relative:
            return self._apex(request, zone, limit)
        if zone.kind is ZoneKind.HOSTNAME:
            return self._hostname(request, zone, relative, apex_offset, limit)
        target = parse_reversed(relative)
        if target is PARTIAL:
            response = self._negative(request, zone, apex_offset, limit, nxdomain=False)
            return Reply(response, (zone.kind.value, "nodata", "-"), INF)
        if target is MALFORMED:
            response = self._negative(request, zone, apex_offset, limit, nxdomain=True)
            return Reply(response, (zone.kind.value, "malformed", "-"), INF)
        assert not isinstance(target, Partial | Malformed)
        ip: IPAddress = target
        verdict = self.engine.decide_fast(ip)
        if verdict is not None:
            return self._answer(request, zone, apex_offset, limit, verdict, self._valid_until(ip, verdict))
        return self._answer_later(request, zone, apex_offset, limit, ip)

    async def _answer_later(
        self, request: Request, zone: Zone, apex: int, limit: int, ip: IPAddress
    ) -> Reply:
        # decide_fast found nothing in steps 1-3: only the lookup and what follows remain.
        verdict = await self.engine.decide_after_lists(ip)
        return self._answer(request, zone, apex, limit, verdict, self._valid_until(ip, verdict))

    def _valid_until(self, ip: IPAddress, verdict: Verdict) -> float | None:
        """How long an answer from ``verdict`` stays right: one from the lists alone until
        they change; one from a reverse lookup until that lookup leaves the cache (never,
        if it was not cached: a TTL-0 result, or the overload answer)."""
        if verdict.rdns is None:
            return INF
        return self.engine.rdns.expires_at(ip, verdict.rdns)

    def _hostname(self, request: Request, zone: Zone, relative: list[bytes], apex: int, limit: int) -> Reply:
        name = relative_name(relative)
        if name is None:
            response = self._negative(request, zone, apex, limit, nxdomain=True)
            return Reply(response, (zone.kind.value, "malformed", "-"), INF)
        verdict = self.engine.decide_name(name)
        if not verdict.listed and verdict.step is not Step.TEST_ENTRY and is_domain_level(name):
            response = self._negative(request, zone, apex, limit, nxdomain=False)
            return Reply(response, (zone.kind.value, "nodata", "-"), INF)
        return self._answer(request, zone, apex, limit, verdict, INF)

    # --- answers -------------------------------------------------------------------------

    def _answer(
        self, request: Request, zone: Zone, apex: int, limit: int, verdict: Verdict, expires: float | None
    ) -> Reply:
        if zone.kind is not ZoneKind.WHITELIST:
            code = verdict.code.value
            txt = verdict.txt
            ttl = verdict.ttl if verdict.ttl is not None else self.settings.ttl
            negative_ttl = self.settings.negative_ttl
        else:
            code = verdict.whitelist.value
            txt = WHITELIST_TXT.get(verdict.whitelist)
            ttl = self.settings.ttl
            # "Not whitelisted because the lookup failed" must not be remembered for long.
            temporary = verdict.code is Code.TEMPFAIL
            negative_ttl = self.settings.tempfail_ttl if temporary else self.settings.negative_ttl
        count = (zone.kind.value, f"127.0.0.{code}" if code else "nxdomain", verdict.step.value)
        entry_id = verdict.match.entry_id if verdict.match is not None else None
        if not code:
            response = self._negative(request, zone, apex, limit, nxdomain=True, ttl=negative_ttl)
            return Reply(response, count, expires, entry_id)
        owner = wire.pointer(12)
        records: list[bytes] = []
        qtype = request.qtype
        if qtype in (wire.TYPE_A, wire.TYPE_ANY):
            records.append(wire.record(owner, wire.TYPE_A, ttl, bytes((127, 0, 0, code))))
        if qtype in (wire.TYPE_TXT, wire.TYPE_ANY) and txt:
            records.append(wire.record(owner, wire.TYPE_TXT, ttl, wire.txt_rdata(txt)))
        if not records:
            response = self._negative(request, zone, apex, limit, nxdomain=False, ttl=negative_ttl)
            return Reply(response, count, expires, entry_id)
        response = self._authoritative(request, wire.NOERROR, limit, answer=records)
        return Reply(response, count, expires, entry_id)

    def _apex(self, request: Request, zone: Zone, limit: int) -> Reply:
        count = (zone.kind.value, "apex", "-")
        owner = wire.pointer(12)
        records: list[bytes] = []
        if request.qtype in (wire.TYPE_SOA, wire.TYPE_ANY):
            records.append(self._soa(zone, owner, self.settings.negative_ttl))
        if request.qtype in (wire.TYPE_NS, wire.TYPE_ANY):
            ttl = self.settings.ttl
            records.extend(wire.record(owner, wire.TYPE_NS, ttl, ns) for ns in self._ns_rdata)
        if not records:
            return Reply(self._negative(request, zone, 12, limit, nxdomain=False), count, INF)
        response = self._authoritative(request, wire.NOERROR, limit, answer=records)
        return Reply(response, count, INF)

    def _negative(
        self, request: Request, zone: Zone, apex: int, limit: int, *, nxdomain: bool, ttl: int | None = None
    ) -> bytes:
        soa = self._soa(zone, wire.pointer(apex), self.settings.negative_ttl if ttl is None else ttl)
        rcode = wire.NXDOMAIN if nxdomain else wire.NOERROR
        return self._authoritative(request, rcode, limit, authority=[soa])

    def _authoritative(
        self,
        request: Request,
        rcode: int,
        limit: int,
        *,
        answer: list[bytes] | None = None,
        authority: list[bytes] | None = None,
    ) -> bytes:
        """An authoritative answer from this zone, with our EDNS payload size."""
        return wire.message(
            request,
            rcode,
            aa=True,
            answer=answer,
            authority=authority,
            limit=limit,
            server_payload=self.settings.max_udp_payload,
        )

    def _soa(self, zone: Zone, owner: bytes, ttl: int) -> bytes:
        serial = self._serial()
        key = (zone.name, serial, ttl)
        rdata = self._soa_cache.get(key)
        if rdata is None:
            if len(self._soa_cache) > 64:
                self._soa_cache.clear()
            # RFC 2308: the negative TTL is min(SOA TTL, MINIMUM), so both carry it.
            rdata = wire.soa_rdata(
                self.settings.nameservers[0], self.settings.hostmaster, serial, 3600, 600, 86400, ttl
            )
            self._soa_cache[key] = rdata
        return wire.record(owner, wire.TYPE_SOA, ttl, rdata)
