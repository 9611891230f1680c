"""StubResolver against a tiny in-process authoritative server (dnslib on UDP and TCP)."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvloop
from dnslib import AAAA as RD_AAAA
from dnslib import CNAME as RD_CNAME
from dnslib import PTR as RD_PTR
from dnslib import QTYPE, RCODE, RR, DNSLabel, DNSRecord
from dnslib import SOA as RD_SOA
from dnslib import A as RD_A

from s25rbl.resolve.client import StubResolver
from s25rbl.resolve.codec import AAAA, PTR, A, LookupResult, LookupStatus, Resolver, reverse_name

# One question + one OPT RR of 11 bytes is what StubResolver sends.
_OPT_LEN = 11


def _soa(ttl: int, minimum: int) -> RR:
    return RR(
        "example.com.",
        QTYPE.SOA,
        rdata=RD_SOA("ns.example.com.", "hostmaster.example.com.", (1, 3600, 600, 86400, minimum)),
        ttl=ttl,
    )


def _zone() -> dict[tuple[str, int], list[RR]]:
    rrs = [
        RR("4.3.2.1.in-addr.arpa.", QTYPE.PTR, rdata=RD_PTR("Host-1-2-3-4.Example.COM."), ttl=300),
        RR("4.3.2.1.in-addr.arpa.", QTYPE.PTR, rdata=RD_PTR("alias.example.com."), ttl=120),
        RR("host-1-2-3-4.example.com.", QTYPE.A, rdata=RD_A("1.2.3.4"), ttl=200),
        RR("host-1-2-3-4.example.com.", QTYPE.AAAA, rdata=RD_AAAA("2001:0db8:0:0::0:1"), ttl=100),
        RR("v4only.example.com.", QTYPE.A, rdata=RD_A("192.0.2.7"), ttl=100),
        # RFC 2317 classless delegation, as a recursive resolver returns it.
        RR(
            "5.3.2.1.in-addr.arpa.",
            QTYPE.CNAME,
            rdata=RD_CNAME("5.0/25.3.2.1.in-addr.arpa."),
            ttl=500,
        ),
        RR("5.0/25.3.2.1.in-addr.arpa.", QTYPE.PTR, rdata=RD_PTR("Mail.Example.NET."), ttl=400),
        RR("cname-nx.example.com.", QTYPE.CNAME, rdata=RD_CNAME("gone.example.com."), ttl=50),
        RR("big.example.com.", QTYPE.A, rdata=RD_A("198.51.100.1"), ttl=60),
        RR("big.example.com.", QTYPE.A, rdata=RD_A("198.51.100.2"), ttl=60),
        RR("big.example.com.", QTYPE.A, rdata=RD_A("198.51.100.3"), ttl=60),
    ]
    # A CNAME loop longer than the resolver follows.
    for i in range(12):
        rrs.append(RR(f"c{i}.example.com.", QTYPE.CNAME, rdata=RD_CNAME(f"c{i + 1}.example.com."), ttl=60))
    zone: dict[tuple[str, int], list[RR]] = {}
    for rr in rrs:
        zone.setdefault((str(rr.rname).lower(), rr.rtype), []).append(rr)
    return zone


@dataclass
class Seen:
    name: str
    qtype: int
    rd: bool
    edns_payload: int | None
    port: int
    transport: str


Handler = Callable[[DNSRecord, bytes, str], list[bytes]]


@dataclass
class FakeDNS:
    """Answers from _zone(); a test can replace `handler` to drop, spoof or mangle."""

    zone: dict[tuple[str, int], list[RR]] = field(default_factory=_zone)
    seen: list[Seen] = field(default_factory=list)
    handler: Handler | None = None
    delay: float = 0.0  # seconds before each UDP response is sent
    port: int = 0
    _udp: asyncio.DatagramTransport | None = None
    _tcp: asyncio.Server | None = None

    def answer(self, request: DNSRecord) -> DNSRecord:
        reply = request.reply()
        qname = str(request.q.qname).lower()
        qtype = request.q.qtype
        if qname.startswith("servfail."):
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        if qname.startswith("refused."):
            reply.header.rcode = RCODE.REFUSED
            return reply
        if qname.endswith(".bulk.test."):
            i = int(qname.split(".")[0][1:])
            reply.add_answer(RR(qname, QTYPE.A, rdata=RD_A(f"10.0.{i // 256}.{i % 256}"), ttl=30))
            return reply
        name = qname
        for _ in range(20):
            rrs = self.zone.get((name, qtype))
            if rrs:
                for rr in rrs:
                    reply.add_answer(rr)
                return reply
            cname = self.zone.get((name, QTYPE.CNAME))
            if not cname:
                break
            reply.add_answer(cname[0])
            name = str(cname[0].rdata.label).lower()
        known = any(key[0] == name for key in self.zone)
        if not known:
            reply.header.rcode = RCODE.NXDOMAIN
            reply.add_auth(_soa(3600, 30))
        else:
            reply.add_auth(_soa(10, 300))
        return reply

    def respond(self, raw: bytes, port: int, transport: str) -> list[bytes]:
        request = DNSRecord.parse(raw)
        payload = None
        for rr in request.ar:
            if rr.rtype == QTYPE.OPT:
                payload = rr.rclass
        self.seen.append(
            Seen(
                str(request.q.qname),
                request.q.qtype,
                bool(request.header.rd),
                payload,
                port,
                transport,
            )
        )
        if self.handler is not None:
            return self.handler(request, raw, transport)
        return [self.answer(request).pack()]

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        server = self

        class Udp(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                server._udp = transport  # type: ignore[assignment]

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                assert server._udp is not None
                for packet in server.respond(data, addr[1], "udp"):
                    if server.delay:
                        loop.call_later(server.delay, server._udp.sendto, packet, addr)
                    else:
                        server._udp.sendto(packet, addr)

        # UDP takes a free port; TCP must take the same one, which may be in use: try again.
        for _ in range(20):
            await loop.create_datagram_endpoint(Udp, local_addr=("127.0.0.1", 0))
            assert self._udp is not None
            self.port = self._udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._tcp_session, "127.0.0.1", self.port)
                return
            except OSError:
                self._udp.close()
                self._udp = None
        raise OSError("no port free for both UDP and TCP")

    async def _tcp_session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(2), "big")
                raw = await reader.readexactly(size)
                port = writer.get_extra_info("peername")[1]
                for packet in self.respond(raw, port, "tcp"):
                    writer.write(len(packet).to_bytes(2, "big") + packet)
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()

    @property
    def addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


def _question_bytes(raw: bytes) -> bytes:
    """The question section of a StubResolver query (it always carries one OPT RR)."""
    return raw[12 : len(raw) - _OPT_LEN]


def _header(qid: int, flags: int, an: int = 0, ns: int = 0) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, 1, an, ns, 0)


@pytest.fixture
async def dns() -> AsyncIterator[FakeDNS]:
    server = FakeDNS()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def resolver(dns: FakeDNS) -> AsyncIterator[StubResolver]:
    client = StubResolver([dns.addr], timeout=1.0, attempts=2, sockets=4)
    yield client
    await client.close()


async def test_ptr_ok_with_ttl(resolver: StubResolver, dns: FakeDNS) -> None:
    result = await resolver.lookup("4.3.2.1.in-addr.arpa", PTR)
    assert result == LookupResult(LookupStatus.OK, ("host-1-2-3-4.example.com", "alias.example.com"), 120)
    seen = dns.seen[0]
    assert seen.rd and seen.edns_payload == 1232 and seen.qtype == PTR


async def test_trailing_dot_and_case(resolver: StubResolver) -> None:
    result = await resolver.lookup("4.3.2.1.IN-ADDR.arpa.", PTR)
    assert result.status is LookupStatus.OK
    assert result.values[0] == "host-1-2-3-4.example.com"


async def test_a_and_aaaa(resolver: StubResolver) -> None:
    a = await resolver.lookup("host-1-2-3-4.example.com", A)
    assert a == LookupResult(LookupStatus.OK, ("1.2.3.4",), 200)
    aaaa = await resolver.lookup("host-1-2-3-4.example.com", AAAA)
    assert aaaa == LookupResult(LookupStatus.OK, ("2001:db8::1",), 100)


async def test_nxdomain_negative_ttl_from_soa(resolver: StubResolver) -> None:
    # min(SOA TTL 3600, SOA MINIMUM 30)
    result = await resolver.lookup("9.9.9.9.in-addr.arpa", PTR)
    assert result == LookupResult(LookupStatus.NXDOMAIN, (), 30)


async def test_nodata_negative_ttl_from_soa(resolver: StubResolver) -> None:
    # min(SOA TTL 10, SOA MINIMUM 300)
    result = await resolver.lookup("v4only.example.com", AAAA)
    assert result == LookupResult(LookupStatus.NODATA, (), 10)


async def test_negative_without_soa_uses_default(dns: FakeDNS) -> None:
    def no_soa(request: DNSRecord, raw: bytes, transport: str) -> list[bytes]:
        reply = request.reply()
        reply.header.rcode = RCODE.NXDOMAIN
        return [reply.pack()]

    dns.handler = no_soa
    client = StubResolver([dns.addr], negative_ttl=42)
    try:
        assert await client.lookup("x.example.com", A) == LookupResult(LookupStatus.NXDOMAIN, (), 42)
    finally:
        await client.close()


async def test_cname_chain_rfc2317(resolver: StubResolver) -> None:
    result = await resolver.lookup("5.3.2.1.in-addr.arpa", PTR)
    assert result == LookupResult(LookupStatus.OK, ("mail.example.net",), 400)


async def test_cname_to_nxdomain(resolver: StubResolver) -> None:
    result = await resolver.lookup("cname-nx.example.com", A)
    assert result == LookupResult(LookupStatus.NXDOMAIN, (), 30)


async def test_cname_chain_too_long_is_servfail(resolver: StubResolver) -> None:
    result = await resolver.lookup("c0.example.com", A)
    assert result.status is LookupStatus.SERVFAIL


async def test_servfail(resolver: StubResolver) -> None:
    assert await resolver.lookup("servfail.example.com", A) == LookupResult(LookupStatus.SERVFAIL, (), 0)


async def test_refused_is_servfail(resolver: StubResolver, dns: FakeDNS) -> None:
    result = await resolver.lookup("refused.example.com", A)
    assert result == LookupResult(LookupStatus.SERVFAIL, (), 0)
    # Both attempts were made (the next upstream is tried on REFUSED too).
    assert len(dns.seen) == 2


async def test_timeout(dns: FakeDNS) -> None:
    dns.handler = lambda request, raw, transport: []
    client = StubResolver([dns.addr], timeout=0.3, attempts=2)
    try:
        start = time.monotonic()
        result = await client.lookup("drop.example.com", A)
        elapsed = time.monotonic() - start
    finally:
        await client.close()
    assert result == LookupResult(LookupStatus.TIMEOUT, (), 0)
    assert 0.25 <= elapsed < 0.6
    assert len(dns.seen) == 2


async def test_failover_from_dead_upstream(dns: FakeDNS) -> None:
    dead = FakeDNS()
    dead.handler = lambda request, raw, transport: []
    await dead.start()
    client = StubResolver([dead.addr, dns.addr], timeout=1.0, attempts=2)
    try:
        start = time.monotonic()
        result = await client.lookup("host-1-2-3-4.example.com", A)
        elapsed = time.monotonic() - start
    finally:
        await client.close()
        await dead.stop()
    assert result.status is LookupStatus.OK and result.values == ("1.2.3.4",)
    assert len(dead.seen) == 1 and len(dns.seen) == 1
    assert 0.4 <= elapsed < 0.9


async def test_late_answer_from_earlier_attempt_accepted(dns: FakeDNS) -> None:
    """Upstream 1 answers after its attempt timed out, while upstream 2 stays silent."""
    dns.delay = 0.7
    silent = FakeDNS()
    silent.handler = lambda request, raw, transport: []
    await silent.start()
    client = StubResolver([dns.addr, silent.addr], timeout=1.0, attempts=2)
    try:
        start = time.monotonic()
        result = await client.lookup("host-1-2-3-4.example.com", A)
        elapsed = time.monotonic() - start
    finally:
        await client.close()
        await silent.stop()
    assert result.values == ("1.2.3.4",)
    assert len(silent.seen) == 1
    assert 0.6 <= elapsed < 0.95


async def test_late_servfail_does_not_cut_next_attempt_short(dns: FakeDNS) -> None:
    # Attempt 1 (upstream 1) has 1.5 s; its SERVFAIL arrives late, at ~1.8 s, in the middle of
    # attempt 2, whose answer comes at ~2.1 s. Margins are wide so a loaded machine passes.
    bad = FakeDNS(delay=1.8)
    bad.handler = lambda request, raw, transport: [_header(request.header.id, 0x8182) + _question_bytes(raw)]
    await bad.start()
    dns.delay = 0.6
    client = StubResolver([bad.addr, dns.addr], timeout=3.0, attempts=2)
    try:
        result = await client.lookup("host-1-2-3-4.example.com", A)
    finally:
        await client.close()
        await bad.stop()
    assert result.values == ("1.2.3.4",)


async def test_failover_from_closed_port(dns: FakeDNS) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    closed = sock.getsockname()
    sock.close()
    client = StubResolver([closed, dns.addr], timeout=0.6, attempts=2)
    try:
        result = await client.lookup("host-1-2-3-4.example.com", A)
    finally:
        await client.close()
    assert result.values == ("1.2.3.4",)


async def test_failover_on_servfail(dns: FakeDNS) -> None:
    bad = FakeDNS()
    bad.handler = lambda request, raw, transport: [_header(request.header.id, 0x8182) + _question_bytes(raw)]
    await bad.start()
    client = StubResolver([bad.addr, dns.addr], timeout=1.0, attempts=2)
    try:
        result = await client.lookup("host-1-2-3-4.example.com", A)
    finally:
        await client.close()
        await bad.stop()
    assert result.values == ("1.2.3.4",)


async def test_truncated_retries_over_tcp(dns: FakeDNS, resolver: StubResolver) -> None:
    def truncate(request: DNSRecord, raw: bytes, transport: str) -> list[bytes]:
        reply = dns.answer(request)
        if transport == "udp":
            reply = request.reply()
            reply.header.tc = 1
        return [reply.pack()]

    dns.handler = truncate
    result = await resolver.lookup("big.example.com", A)
    assert result == LookupResult(LookupStatus.OK, ("198.51.100.1", "198.51.100.2", "198.51.100.3"), 60)
    assert [s.transport for s in dns.seen] == ["udp", "tcp"]


async def test_spoofed_answers_ignored(dns: FakeDNS, resolver: StubResolver) -> None:
    def spoof(request: DNSRecord, raw: bytes, transport: str) -> list[bytes]:
        real = dns.answer(request)
        wrong_id = DNSRecord.parse(real.pack())
        wrong_id.header.id = (request.header.id + 1) & 0xFFFF
        wrong_id.rr = []
        wrong_id.add_answer(RR(request.q.qname, QTYPE.A, rdata=RD_A("6.6.6.6"), ttl=9999))
        wrong_name = DNSRecord.parse(wrong_id.pack())
        wrong_name.header.id = request.header.id
        wrong_name.q.qname = DNSLabel("other.example.com")
        wrong_type = DNSRecord.parse(wrong_name.pack())
        wrong_type.q.qname = request.q.qname
        wrong_type.q.qtype = QTYPE.AAAA
        not_response = DNSRecord.parse(wrong_type.pack())
        not_response.q.qtype = request.q.qtype
        not_response.header.qr = 0
        return [
            wrong_id.pack(),
            wrong_name.pack(),
            wrong_type.pack(),
            not_response.pack(),
            b"\x00",
            real.pack(),
        ]

    dns.handler = spoof
    result = await resolver.lookup("host-1-2-3-4.example.com", A)
    assert result == LookupResult(LookupStatus.OK, ("1.2.3.4",), 200)


async def test_answer_from_other_source_ignored(dns: FakeDNS) -> None:
    """A right-looking answer from another address never reaches the connected socket."""
    spoofer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    spoofer.bind(("127.0.0.1", 0))

    def spoof(request: DNSRecord, raw: bytes, transport: str) -> list[bytes]:
        fake = request.reply()
        fake.add_answer(RR(request.q.qname, QTYPE.A, rdata=RD_A("6.6.6.6"), ttl=9999))
        port = dns.seen[-1].port
        spoofer.sendto(fake.pack(), ("127.0.0.1", port))
        return []

    dns.handler = spoof
    client = StubResolver([dns.addr], timeout=0.3, attempts=1, sockets=1)
    try:
        result = await client.lookup("host-1-2-3-4.example.com", A)
    finally:
        await client.close()
        spoofer.close()
    assert result.status is LookupStatus.TIMEOUT


def _malformed_variants(request: DNSRecord, raw: bytes) -> list[bytes]:
    qid = request.header.id
    question = _question_bytes(raw)
    q_off = 12
    return [
        # Answer count larger than what follows.
        _header(qid, 0x8180, an=5) + question + b"\xc0\x0c\x00\x01",
        # Owner name is a compression pointer to itself.
        _header(qid, 0x8180, an=1) + question + b"\xc0" + bytes([12 + len(question)]),
        # Two pointers pointing at each other.
        _header(qid, 0x8180, an=1)
        + question
        + struct.pack("!H", 0xC000 | (14 + len(question)))
        + struct.pack("!H", 0xC000 | (12 + len(question))),
        # A with 3 bytes of RDATA.
        _header(qid, 0x8180, an=1)
        + question
        + struct.pack("!HHHIH", 0xC000 | q_off, 1, 1, 60, 3)
        + b"\x01\x02\x03",
        # RDATA length past the end.
        _header(qid, 0x8180, an=1) + question + struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 200),
        # Reserved label type 0x40.
        _header(qid, 0x8180, an=1) + question + b"\x41abc",
        # SOA in AUTHORITY cut short.
        _header(qid, 0x8183, ns=1) + question + struct.pack("!HHHIH", 0xC00C, 6, 1, 60, 4) + b"\0",
        # FORMERR and NOTIMP.
        _header(qid, 0x8181) + question,
        _header(qid, 0x8184) + question,
    ]


@pytest.mark.parametrize("variant", range(9))
async def test_malformed_answers_do_not_crash(dns: FakeDNS, variant: int) -> None:
    dns.handler = lambda request, raw, transport: [_malformed_variants(request, raw)[variant]]
    client = StubResolver([dns.addr], timeout=0.3, attempts=2)
    try:
        result = await client.lookup("host-1-2-3-4.example.com", A)
        # The socket still works afterwards.
        dns.handler = None
        good = await client.lookup("host-1-2-3-4.example.com", A)
    finally:
        await client.close()
    assert result.status in (LookupStatus.SERVFAIL, LookupStatus.TIMEOUT)
    assert good.values == ("1.2.3.4",)


async def test_garbage_datagrams_do_not_crash(dns: FakeDNS) -> None:
    def garbage(request: DNSRecord, raw: bytes, transport: str) -> list[bytes]:
        qid = raw[:2]
        return [b"", qid, qid + b"\x80", qid + b"\x81\x80\x00\x01" + b"\xff" * 3, b"\xff" * 600]

    dns.handler = garbage
    client = StubResolver([dns.addr], timeout=0.3, attempts=1)
    try:
        assert (await client.lookup("x.example.com", A)).status is LookupStatus.TIMEOUT
    finally:
        await client.close()


async def test_escaped_ptr_target(dns: FakeDNS, resolver: StubResolver) -> None:
    dns.zone[("6.3.2.1.in-addr.arpa.", QTYPE.PTR)] = [
        RR("6.3.2.1.in-addr.arpa.", QTYPE.PTR, rdata=RD_PTR(DNSLabel([b"a.b c", b"example"])))
    ]
    result = await resolver.lookup("6.3.2.1.in-addr.arpa", PTR)
    assert result.values == ("a\\046b\\032c.example",)


async def test_concurrent_lookups(dns: FakeDNS, resolver: StubResolver) -> None:
    results = await asyncio.gather(*(resolver.lookup(f"h{i}.bulk.test", A) for i in range(200)))
    for i, result in enumerate(results):
        assert result == LookupResult(LookupStatus.OK, (f"10.0.{i // 256}.{i % 256}",), 30)
    # Queries were spread over the pool of 4 sockets.
    assert len({s.port for s in dns.seen}) == 4


async def test_close_turns_outstanding_into_timeout(dns: FakeDNS) -> None:
    dns.handler = lambda request, raw, transport: []
    client = StubResolver([dns.addr], timeout=5.0)
    task = asyncio.create_task(client.lookup("x.example.com", A))
    while not dns.seen:
        await asyncio.sleep(0.01)
    start = time.monotonic()
    await client.close()
    assert await task == LookupResult(LookupStatus.TIMEOUT, (), 0)
    assert time.monotonic() - start < 0.5
    assert (await client.lookup("x.example.com", A)).status is LookupStatus.TIMEOUT


async def test_cancelled_lookup_cleans_up(dns: FakeDNS, resolver: StubResolver) -> None:
    dns.handler = lambda request, raw, transport: []
    task = asyncio.create_task(resolver.lookup("x.example.com", A))
    while not dns.seen:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    dns.handler = None
    assert (await resolver.lookup("v4only.example.com", A)).values == ("192.0.2.7",)


@pytest.mark.parametrize(
    "name",
    ["a" * 64 + ".example.com", ".".join(["abcdefghi"] * 26), "a..b", "\u00e9.example.com"],
)
async def test_unencodable_names_raise(resolver: StubResolver, name: str) -> None:
    with pytest.raises(ValueError):
        await resolver.lookup(name, A)


async def test_escaped_name_is_encoded(dns: FakeDNS) -> None:
    resolver = StubResolver([dns.addr], random_case=False)  # the name on the wire exactly as given
    labels: list[tuple[bytes, ...]] = []

    def capture(request: DNSRecord, raw: bytes, transport: str) -> list[bytes]:
        labels.append(request.q.qname.label)
        return [dns.answer(request).pack()]

    dns.handler = capture
    try:
        result = await resolver.lookup("a\\.b\\032c.example.com.", A)
    finally:
        await resolver.close()
    assert result.status is LookupStatus.NXDOMAIN
    assert labels == [(b"a.b c", b"example", b"com")]


def test_reverse_name() -> None:
    import ipaddress

    assert reverse_name("1.2.3.4") == "4.3.2.1.in-addr.arpa"
    assert reverse_name(ipaddress.IPv4Address("192.0.2.1")) == "1.2.0.192.in-addr.arpa"
    assert reverse_name("2001:db8::1") == (
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
    )


def test_is_a_resolver() -> None:
    resolver: Resolver = StubResolver([("127.0.0.1", 53)])
    assert resolver is not None


def test_works_on_uvloop() -> None:
    async def main() -> list[LookupResult]:
        server = FakeDNS()
        await server.start()
        client = StubResolver([server.addr], sockets=2)

        def truncate(request: DNSRecord, raw: bytes, transport: str) -> list[bytes]:
            reply = server.answer(request)
            if transport == "udp" and str(request.q.qname).startswith("big."):
                reply = request.reply()
                reply.header.tc = 1
            return [reply.pack()]

        server.handler = truncate
        try:
            return [
                await client.lookup("5.3.2.1.in-addr.arpa", PTR),
                await client.lookup("big.example.com", A),
                *await asyncio.gather(*(client.lookup(f"h{i}.bulk.test", A) for i in range(50))),
            ]
        finally:
            await client.close()
            await server.stop()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        results = runner.run(main())
    assert results[0].values == ("mail.example.net",)
    assert len(results[1].values) == 3
    assert [r.values[0] for r in results[2:]] == [f"10.0.0.{i}" for i in range(50)]


# --- against spoofing and floods ------------------------------------------------------------


async def test_the_question_is_sent_in_random_case(dns: FakeDNS, resolver: StubResolver) -> None:
    for _ in range(8):
        assert (await resolver.lookup("host-1-2-3-4.example.com", A)).values == ("1.2.3.4",)
    sent = {s.name for s in dns.seen}
    assert len(sent) > 1  # a different spelling each time
    assert {name.lower() for name in sent} == {"host-1-2-3-4.example.com."}


def _forge_in_lower_case(dns: FakeDNS) -> Handler:
    """A reply echoing the question lower-cased, with another address: what a spoofer that
    guessed id and port but not the case sends (or an upstream that lower-cases, with the
    right address)."""

    def forge(request: DNSRecord, raw: bytes, transport: str) -> list[bytes]:
        forged = request.reply()
        forged.q.qname = DNSLabel(str(request.q.qname).lower())
        forged.add_answer(RR(request.q.qname, QTYPE.A, rdata=RD_A("6.6.6.6"), ttl=9999))
        if str(request.q.qname) != str(request.q.qname).lower():
            return [forged.pack()]
        return [dns.answer(request).pack()]  # asked as given: the real answer

    return forge


async def test_an_answer_in_another_case_is_not_taken(dns: FakeDNS, resolver: StubResolver) -> None:
    dns.handler = _forge_in_lower_case(dns)
    result = await resolver.lookup("host-1-2-3-4.example.com", A)
    assert result == LookupResult(LookupStatus.OK, ("1.2.3.4",), 200)  # never 6.6.6.6
    assert len(dns.seen) == 2  # asked again, as given, after the forged echo


async def test_an_upstream_that_changes_the_case_is_asked_without_0x20(dns: FakeDNS) -> None:
    dns.handler = _forge_in_lower_case(dns)
    client = StubResolver([dns.addr], timeout=1.0)
    try:
        for _ in range(5):
            assert (await client.lookup("host-1-2-3-4.example.com", A)).values == ("1.2.3.4",)
    finally:
        await client.close()
    assert len(dns.seen) == 3 * 2 + 2  # three strikes, each asked twice; then once each


async def test_identical_lookups_in_flight_share_one_query(dns: FakeDNS, resolver: StubResolver) -> None:
    dns.delay = 0.1
    results = await asyncio.gather(*(resolver.lookup("HOST-1-2-3-4.example.com", A) for _ in range(25)))
    results += await asyncio.gather(*(resolver.lookup("host-1-2-3-4.example.com", A) for _ in range(25)))
    assert {r.values for r in results} == {("1.2.3.4",)}
    assert len(dns.seen) == 2


async def test_a_shared_lookup_survives_the_cancellation_of_its_first_asker(
    dns: FakeDNS, resolver: StubResolver
) -> None:
    dns.delay = 0.1
    first = asyncio.create_task(resolver.lookup("host-1-2-3-4.example.com", A))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(resolver.lookup("host-1-2-3-4.example.com", A))
    await asyncio.sleep(0.01)
    first.cancel()
    assert (await second).values == ("1.2.3.4",)


async def test_lookups_beyond_the_bound_answer_timeout_at_once(dns: FakeDNS) -> None:
    dns.handler = lambda request, raw, transport: []
    client = StubResolver([dns.addr], timeout=0.3, attempts=1, max_lookups=5)
    try:
        results = await asyncio.gather(*(client.lookup(f"h{n}.bulk.test", A) for n in range(20)))
    finally:
        await client.close()
    assert all(r.status is LookupStatus.TIMEOUT for r in results)
    assert client.refused == 15
    assert len(dns.seen) == 5  # the refused ones were never sent


async def test_sockets_are_replaced_over_time(dns: FakeDNS) -> None:
    client = StubResolver([dns.addr], sockets=2, rotate_queries=5)
    try:
        for n in range(60):
            assert (await client.lookup(f"h{n}.bulk.test", A)).status is LookupStatus.OK
    finally:
        await client.close()
    assert len({s.port for s in dns.seen}) >= 10  # 2 ports for the first 10 queries, then new ones


async def _opened(client: StubResolver, upstream: socket.socket) -> None:
    """Open the client's sockets with one lookup, and take its query off the upstream."""
    client.ask("first.bulk.test", A, lambda result: None)
    for _ in range(200):
        await asyncio.sleep(0.005)
        try:
            upstream.recv(512)
            return
        except BlockingIOError:
            continue
    raise AssertionError("the first query never arrived")


def _asked(packets: list[bytes]) -> list[str]:
    return [str(DNSRecord.parse(packet).q.qname).lower().rstrip(".") for packet in packets]


def _waiting(upstream: socket.socket) -> list[bytes]:
    got: list[bytes] = []
    while True:
        try:
            got.append(upstream.recv(512))
        except BlockingIOError:
            return got


@pytest.fixture
def silent() -> Iterator[socket.socket]:
    """An upstream that never answers: a bound UDP socket the test reads the queries from."""
    upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    upstream.bind(("127.0.0.1", 0))
    upstream.setblocking(False)
    yield upstream
    upstream.close()


async def _turn_ends() -> None:
    """Let the event loop end its turn (the queries leave) and the datagrams arrive."""
    await asyncio.sleep(0)
    await asyncio.sleep(0.05)


async def test_the_queries_of_one_turn_go_upstream_together(silent: socket.socket) -> None:
    # One batch of DNS requests starts many lookups in one turn of the event loop; their
    # queries leave together at its end, so the upstream is woken once, not once per query.
    client = StubResolver([silent.getsockname()], timeout=2.0, attempts=1, sockets=3)
    try:
        await _opened(client, silent)
        names = [f"h{n}.bulk.test" for n in range(12)]
        for name in names:
            client.ask(name, A, lambda result: None)
        assert _waiting(silent) == []  # nothing sent while the turn goes on
        pools = client._context.pools
        assert len(pools._due) == 3 and all(len(sock.outgoing) == 4 for sock in pools._due)
        await _turn_ends()
        sent = _waiting(silent)
    finally:
        await client.close()
    assert sorted(_asked(sent)) == sorted(names)


async def test_a_socket_that_fails_to_send_keeps_no_other_query_back(
    silent: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = asyncio.get_running_loop()
    escaped: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: escaped.append(context))
    client = StubResolver([silent.getsockname()], timeout=2.0, attempts=1, sockets=3)
    try:
        await _opened(client, silent)
        pools = client._context.pools
        pool = pools.pools[0]
        assert pool is not None
        broken, closing, working = pool
        transport = broken.transport
        assert transport is not None and closing.transport is not None

        def refuse(data: bytes, addr: object = None) -> None:
            raise RuntimeError("this socket cannot send")

        monkeypatch.setattr(transport, "sendto", refuse)
        pools._next_socket = 0  # the broken socket first, then the one that closes, then the working one
        for n in range(6):
            client.ask(f"h{n}.bulk.test", A, lambda result: None)
        assert pools._due == [broken, closing, working]
        expected = _asked(working.outgoing)
        closing.transport.close()  # before the turn ends: its queries are not sent
        await _turn_ends()
        sent = _waiting(silent)
        left = (pools._due, broken.outgoing, closing.outgoing, working.outgoing)
    finally:
        await client.close()
        loop.set_exception_handler(None)
    # The working socket's queries went out although the one flushed before it failed; nothing
    # was left queued, and nothing escaped to the event loop.
    assert sorted(_asked(sent)) == sorted(expected) == ["h2.bulk.test", "h5.bulk.test"]
    assert left == ([], [], [], [])
    assert escaped == []
