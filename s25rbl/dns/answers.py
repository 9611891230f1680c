"""Answers as bytes: a verdict, the apex's SOA and NS, negative answers with the zone's SOA.

Every answer is built for one ``Query``: the parsed request with the zone it falls in, where
that zone's name starts in the message (so the SOA owner is a compression pointer to it),
and how large the answer may be.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from s25rbl.dns.zones import Zone, ZoneKind
from s25rbl.verdict.model import Code, Verdict, WhitelistCode
from s25rbl.wire import message as wire
from s25rbl.wire.names import encode_name, pointer

WHITELIST_TXT = {
    WhitelistCode.OPERATOR: "whitelisted by the operator",
    WhitelistCode.LEARNED: "whitelisted: learned from retries",
}

CountKey = tuple[str, str, str]  # (zone kind, result, deciding step)
# The SOA RDATA kept per (zone, serial, TTL): each under 1 KiB with its key and slot.
_SOA_CACHE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class AnswerSettings:
    """TTLs, the SOA's names and the largest UDP answer: what answers are built with."""

    ttl: int = 300
    negative_ttl: int = 300
    tempfail_ttl: int = 30
    nameservers: tuple[str, ...] = ("localhost",)
    hostmaster: str = "hostmaster.localhost"
    max_udp_payload: int = 1232


@dataclass(slots=True)
class Query:
    """One request as the handler routes it: parsed once, then read by every step."""

    request: wire.Request
    limit: int  # the largest answer the client takes (UDP payload size, or 65535 over TCP)
    zone: Zone | None = None
    relative: list[bytes] | None = None  # the labels left of the zone's apex, lower-cased
    apex: int = 12  # offset of the zone's name in the message
    client: str | None = None  # the address of the client asking, as the socket gives it
    tcp: bool = False

    @property
    def kind(self) -> str:
        return self.zone.kind.value if self.zone is not None else "-"


class Answers:
    """Builds the responder's answers; the SOA RDATA is kept per (zone, serial, TTL)."""

    def __init__(self, settings: AnswerSettings, serial: Callable[[], int]) -> None:
        self.settings = settings
        self._serial = serial
        self._soa_cache: dict[tuple[str, int, int], bytes] = {}
        self._ns_rdata = [encode_name(ns) for ns in settings.nameservers]

    def error(self, query: Query, rcode: int) -> bytes:
        """A non-authoritative error answer (FORMERR, REFUSED, SERVFAIL, ...)."""
        return wire.message(query.request, rcode, limit=query.limit)

    def verdict(self, query: Query, verdict: Verdict) -> tuple[bytes, CountKey]:
        """The answer in the query's zone for ``verdict``, and what to count it as."""
        assert query.zone is not None
        settings = self.settings
        if query.zone.kind is not ZoneKind.WHITELIST:
            code = verdict.code.value
            txt = verdict.txt
            ttl = verdict.ttl if verdict.ttl is not None else settings.ttl
            negative_ttl = settings.negative_ttl
        else:
            code = verdict.whitelist.value
            txt = WHITELIST_TXT.get(verdict.whitelist)
            ttl = settings.ttl
            # "Not whitelisted because the lookup failed" must not be remembered for long.
            temporary = verdict.code is Code.TEMPFAIL
            negative_ttl = settings.tempfail_ttl if temporary else settings.negative_ttl
        count = (query.kind, f"127.0.0.{code}" if code else "nxdomain", verdict.step.value)
        if not code:
            return self.negative(query, nxdomain=True, ttl=negative_ttl), count
        owner = pointer(12)
        records: list[bytes] = []
        qtype = query.request.qtype
        if qtype in (wire.TYPE_A, wire.TYPE_ANY):
            records.append(wire.record(owner, wire.TYPE_A, ttl, bytes((127, 0, 0, code))))
        if qtype in (wire.TYPE_TXT, wire.TYPE_ANY) and txt:
            records.append(wire.record(owner, wire.TYPE_TXT, ttl, wire.txt_rdata(txt)))
        if not records:
            return self.negative(query, nxdomain=False, ttl=negative_ttl), count
        return self.authoritative(query, wire.NOERROR, answer=records), count

    def apex(self, query: Query) -> bytes:
        """SOA and NS at the zone's apex; NODATA for other types. ANY over UDP gets the SOA
        alone (RFC 8482): the whole apex is many times the question, a ready amplifier."""
        assert query.zone is not None
        owner = pointer(12)
        records: list[bytes] = []
        qtype = query.request.qtype
        if qtype in (wire.TYPE_SOA, wire.TYPE_ANY):
            records.append(self._soa(query.zone, owner, self.settings.negative_ttl))
        if qtype == wire.TYPE_NS or (qtype == wire.TYPE_ANY and query.tcp):
            ttl = self.settings.ttl
            records.extend(wire.record(owner, wire.TYPE_NS, ttl, ns) for ns in self._ns_rdata)
        if not records:
            return self.negative(query, nxdomain=False)
        return self.authoritative(query, wire.NOERROR, answer=records)

    def negative(self, query: Query, *, nxdomain: bool, ttl: int | None = None) -> bytes:
        """NXDOMAIN or NODATA with the zone's SOA in AUTHORITY (its TTL the negative TTL)."""
        assert query.zone is not None
        soa = self._soa(query.zone, pointer(query.apex), self.settings.negative_ttl if ttl is None else ttl)
        return self.authoritative(query, wire.NXDOMAIN if nxdomain else wire.NOERROR, authority=[soa])

    def authoritative(
        self,
        query: Query,
        rcode: int,
        *,
        answer: list[bytes] | None = None,
        authority: list[bytes] | None = None,
    ) -> bytes:
        """An authoritative answer from this zone, with our EDNS payload size."""
        return wire.message(
            query.request,
            rcode,
            aa=True,
            answer=answer,
            authority=authority,
            limit=query.limit,
            server_payload=self.settings.max_udp_payload,
        )

    def _soa(self, zone: Zone, owner: bytes, ttl: int) -> bytes:
        serial = self._serial()
        key = (zone.name, serial, ttl)
        rdata = self._soa_cache.get(key)
        if rdata is None:
            # A few keys exist at once (zones x TTLs, for the current serial); the bound is
            # there all the same, in bytes: at most 64 RDATAs of at most 532 octets each.
            if len(self._soa_cache) >= _SOA_CACHE_BYTES // 1024:
                self._soa_cache.clear()
            # RFC 2308: the negative TTL is min(SOA TTL, MINIMUM), so both carry it.
            rdata = wire.soa_rdata(
                self.settings.nameservers[0], self.settings.hostmaster, serial, 3600, 600, 86400, ttl
            )
            self._soa_cache[key] = rdata
        return wire.record(owner, wire.TYPE_SOA, ttl, rdata)
