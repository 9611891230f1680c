"""The DNS contract of product §3, answered by the handler from memory (no sockets here)."""

from __future__ import annotations

import asyncio
import ipaddress
from datetime import UTC, datetime

import dnslib
import pytest

from s25rbl.dns.answers import AnswerSettings
from s25rbl.dns.handler import Responder
from s25rbl.dns.zones import ZoneKind, ZoneTable
from s25rbl.lists.values import EntryKind, EntryRow, EntrySource, ListName
from s25rbl.resolve.codec import LookupStatus
from s25rbl.resolve.rdns import ReverseLookup
from s25rbl.verdict.lists import ListIndex
from s25rbl.verdict.pipeline import VerdictEngine
from tests.unit.fakes import DictResolver

BL, WL = "bl.example", "wl.example"
SETTINGS = AnswerSettings(
    ttl=300, negative_ttl=120, tempfail_ttl=30, nameservers=("ns1.example",), hostmaster="hostmaster.example"
)


def rows() -> list[EntryRow]:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    del now
    return [
        EntryRow(1, ListName.WHITE, EntryKind.IP, "192.0.2.10", EntrySource.MANUAL),
        EntryRow(2, ListName.BLACK, EntryKind.CIDR, "198.51.100.0/24", EntrySource.MANUAL),
        EntryRow(3, ListName.WHITE, EntryKind.IP, "192.0.2.20", EntrySource.LEARNED),
    ]


def make_resolver() -> DictResolver:
    r = DictResolver()
    r.ptr("203.0.113.7", "p1234-ipad12.tokyo.ocn.ne.jp").host("p1234-ipad12.tokyo.ocn.ne.jp", "203.0.113.7")
    r.ptr("203.0.113.8", "mail.example.org").host("mail.example.org", "203.0.113.8")
    r.ptr("203.0.113.9", "fake.example.org").host("fake.example.org", "192.0.2.99")
    r.fail("203.0.113.10", LookupStatus.SERVFAIL)
    r.ptr("2001:db8::7", "dhcp-2001-db8-7.example.net").host("dhcp-2001-db8-7.example.net", "2001:db8::7")
    return r


@pytest.fixture
def responder() -> Responder:
    index = ListIndex.build(rows(), version=7)
    rdns = ReverseLookup(make_resolver(), deadline=1.0)
    engine = VerdictEngine(lambda: index, rdns, tempfail_ttl=30)
    zones = ZoneTable([(BL, ZoneKind.BLOCKLIST), (WL, ZoneKind.WHITELIST)])
    return Responder(zones, engine, SETTINGS, serial=lambda: index.version)


async def ask(responder: Responder, packet: bytes, tcp: bool = False) -> bytes | None:
    result = responder.handle(packet, tcp)
    if result is None or isinstance(result, bytes):
        return result
    return await result


async def query(responder: Responder, name: str, qtype: str = "A", **kw: object) -> dnslib.DNSRecord:
    q = dnslib.DNSRecord.question(name, qtype)
    if kw.get("edns"):
        q.add_ar(dnslib.EDNS0(udp_len=int(kw.get("payload", 1232))))  # type: ignore[call-overload]
    raw = await ask(responder, q.pack())
    assert raw is not None
    return dnslib.DNSRecord.parse(raw)


def rev4(address: str) -> str:
    return ipaddress.IPv4Address(address).reverse_pointer.removesuffix(".in-addr.arpa")


def rev6(address: str) -> str:
    return ipaddress.IPv6Address(address).reverse_pointer.removesuffix(".ip6.arpa")


RCODE = {"NOERROR": 0, "NXDOMAIN": 3, "REFUSED": 5}

# (id, name, qtype, rcode, answers as "TYPE value", authority SOA expected)
CONTRACT = [
    ("rfc5782-v4-listed", f"2.0.0.127.{BL}", "A", "NOERROR", ["A 127.0.0.2"], False),
    ("rfc5782-v4-unlisted", f"1.0.0.127.{BL}", "A", "NXDOMAIN", [], True),
    ("rfc5782-v6-listed", f"{rev6('::ffff:7f00:2')}.{BL}", "A", "NOERROR", ["A 127.0.0.2"], False),
    ("rfc5782-v6-unlisted", f"{rev6('::ffff:7f00:1')}.{BL}", "A", "NXDOMAIN", [], True),
    ("s25r-rule-A", f"{rev4('203.0.113.7')}.{BL}", "A", "NOERROR", ["A 127.0.0.2"], False),
    (
        "s25r-rule-TXT",
        f"{rev4('203.0.113.7')}.{BL}",
        "TXT",
        "NOERROR",
        ['TXT "S25R check, be patient [r1]"'],
        False,
    ),
    (
        "s25r-rule-ANY",
        f"{rev4('203.0.113.7')}.{BL}",
        "ANY",
        "NOERROR",
        ["A 127.0.0.2", 'TXT "S25R check, be patient [r1]"'],
        False,
    ),
    ("listed-other-type-nodata", f"{rev4('203.0.113.7')}.{BL}", "MX", "NOERROR", [], True),
    ("clean-nxdomain", f"{rev4('203.0.113.8')}.{BL}", "A", "NXDOMAIN", [], True),
    ("clean-other-type-nxdomain", f"{rev4('203.0.113.8')}.{BL}", "MX", "NXDOMAIN", [], True),
    (
        "unconfirmed-ptr-rule0",
        f"{rev4('203.0.113.9')}.{BL}",
        "TXT",
        "NOERROR",
        ['TXT "reverse lookup failure, be patient"'],
        False,
    ),
    ("no-ptr-rule0", f"{rev4('203.0.113.99')}.{BL}", "A", "NOERROR", ["A 127.0.0.4"], False),
    (
        "tempfail",
        f"{rev4('203.0.113.10')}.{BL}",
        "TXT",
        "NOERROR",
        ['TXT "reverse lookup temporarily failed, be patient"'],
        False,
    ),
    (
        "blacklist-cidr",
        f"{rev4('198.51.100.3')}.{BL}",
        "TXT",
        "NOERROR",
        ['TXT "domain check, be patient"'],
        False,
    ),
    ("whitelist-ip", f"{rev4('192.0.2.10')}.{BL}", "A", "NXDOMAIN", [], True),
    ("ipv6-s25r", f"{rev6('2001:db8::7')}.{BL}", "A", "NOERROR", ["A 127.0.0.2"], False),
    ("partial-1", f"1.{BL}", "A", "NOERROR", [], True),
    ("partial-3", f"3.2.1.{BL}", "A", "NOERROR", [], True),
    ("partial-ipv6", f"0.0.0.0.0.0.0.0.{BL}", "TXT", "NOERROR", [], True),
    ("malformed", f"www.{BL}", "A", "NXDOMAIN", [], True),
    ("malformed-octet", f"1.0.0.256.{BL}", "A", "NXDOMAIN", [], True),
    ("apex-soa", BL, "SOA", "NOERROR", ["SOA"], False),
    ("apex-ns", BL, "NS", "NOERROR", ["NS ns1.example."], False),
    ("apex-a-nodata", BL, "A", "NOERROR", [], True),
    ("outside-refused", "example.com", "A", "REFUSED", [], False),
    ("parent-refused", "example", "SOA", "REFUSED", [], False),
    ("wl-rfc5782-listed", f"2.0.0.127.{WL}", "A", "NOERROR", ["A 127.0.0.2"], False),
    ("wl-rfc5782-unlisted", f"1.0.0.127.{WL}", "A", "NXDOMAIN", [], True),
    ("wl-operator", f"{rev4('192.0.2.10')}.{WL}", "A", "NOERROR", ["A 127.0.0.2"], False),
    ("wl-learned", f"{rev4('192.0.2.20')}.{WL}", "A", "NOERROR", ["A 127.0.0.3"], False),
    ("wl-not-listed", f"{rev4('203.0.113.7')}.{WL}", "A", "NXDOMAIN", [], True),
    ("bl-learned-not-listed", f"{rev4('192.0.2.20')}.{BL}", "A", "NXDOMAIN", [], True),
]


def _rr_text(rr: dnslib.RR) -> str:
    kind = dnslib.QTYPE[rr.rtype]
    if kind == "SOA":
        return "SOA"
    return f"{kind} {rr.rdata}"


@pytest.mark.parametrize(
    ("name", "qtype", "rcode", "answers", "soa"), [c[1:] for c in CONTRACT], ids=[c[0] for c in CONTRACT]
)
async def test_dns_contract(
    responder: Responder, name: str, qtype: str, rcode: str, answers: list[str], soa: bool
) -> None:
    reply = await query(responder, name, qtype)
    assert reply.header.rcode == RCODE[rcode]
    assert sorted(_rr_text(rr) for rr in reply.rr) == sorted(answers)
    soas = [rr for rr in reply.auth if rr.rtype == dnslib.QTYPE.SOA]
    assert bool(soas) == soa
    if soa:
        zone = WL if name.endswith(WL) else BL
        assert str(soas[0].rname).rstrip(".") == zone
    assert reply.header.aa == (rcode != "REFUSED")


async def test_listed_answer_carries_the_configured_ttl(responder: Responder) -> None:
    reply = await query(responder, f"{rev4('203.0.113.7')}.{BL}", "A")
    assert reply.rr[0].ttl == 300


async def test_tempfail_answer_carries_the_short_ttl(responder: Responder) -> None:
    reply = await query(responder, f"{rev4('203.0.113.10')}.{BL}", "A")
    assert str(reply.rr[0].rdata) == "127.0.0.5"
    assert reply.rr[0].ttl == 30


async def test_negative_answer_soa_carries_negative_ttl_and_serial(responder: Responder) -> None:
    reply = await query(responder, f"1.0.0.127.{BL}", "A")
    soa = reply.auth[0]
    assert soa.ttl == 120
    assert soa.rdata.times[-1] == 120  # SOA MINIMUM
    assert soa.rdata.times[0] == 7  # the list version is the serial


async def test_question_is_echoed_byte_for_byte_with_0x20_case(responder: Responder) -> None:
    q = dnslib.DNSRecord.question("2.0.0.127.Bl.ExAmPlE", "TXT")
    q.header.id = 0xBEEF
    packet = q.pack()
    raw = await ask(responder, packet)
    assert raw is not None
    question_len = len(packet) - 12
    assert raw[12 : 12 + question_len] == packet[12:]
    assert raw[:2] == b"\xbe\xef"


async def test_edns_request_gets_an_opt_record_back(responder: Responder) -> None:
    reply = await query(responder, f"2.0.0.127.{BL}", "A", edns=True)
    opts = [rr for rr in reply.ar if rr.rtype == dnslib.QTYPE.OPT]
    assert len(opts) == 1
    assert opts[0].rclass == SETTINGS.max_udp_payload


async def test_edns_version_1_is_answered_badvers(responder: Responder) -> None:
    q = dnslib.DNSRecord.question(f"2.0.0.127.{BL}", "A")
    q.add_ar(dnslib.EDNS0(version=1))
    raw = await ask(responder, q.pack())
    assert raw is not None
    reply = dnslib.DNSRecord.parse(raw)
    opt = next(rr for rr in reply.ar if rr.rtype == dnslib.QTYPE.OPT)
    assert (opt.ttl >> 24) == 1  # extended rcode 16 = BADVERS
    assert not reply.rr


MALFORMED = [
    ("empty", b"", None),
    ("short-header", b"\x12\x34\x01", None),
    ("response-bit", bytes.fromhex("1234 8100 0001 0000 0000 0000 0000010001"), None),
    ("two-questions", bytes.fromhex("1234 0100 0002 0000 0000 0000 0000010001 0000010001"), 1),
    ("no-question", bytes.fromhex("1234 0100 0000 0000 0000 0000"), 1),
    ("label-overrun", bytes.fromhex("1234 0100 0001 0000 0000 0000 3f6162"), 1),
    ("compression-in-question", bytes.fromhex("1234 0100 0001 0000 0000 0000 c00c 0001 0001"), 1),
    ("missing-type", bytes.fromhex("1234 0100 0001 0000 0000 0000 00"), 1),
    ("notify-opcode", bytes.fromhex("1234 2000 0001 0000 0000 0000 0000060001"), 4),
    ("bad-additional", bytes.fromhex("1234 0100 0001 0000 0000 0001 0000010001 00 0029"), 1),
]


@pytest.mark.parametrize(("packet", "rcode"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
async def test_malformed_packets_get_the_documented_answer_or_none(
    responder: Responder, packet: bytes, rcode: int | None
) -> None:
    raw = await ask(responder, packet)
    if rcode is None:
        assert raw is None
        return
    assert raw is not None
    assert raw[:2] == packet[:2]
    assert raw[3] & 0x0F == rcode
    assert raw[2] & 0x80  # QR


async def test_internal_error_answers_servfail(responder: Responder) -> None:
    def broken(ip: object) -> None:
        raise RuntimeError("boom")

    responder.engine.decide_fast = broken  # type: ignore[method-assign]
    raw = await ask(responder, dnslib.DNSRecord.question(f"2.0.0.127.{BL}", "A").pack())
    assert raw is not None
    assert dnslib.DNSRecord.parse(raw).header.rcode == 2


async def test_zone_transfer_is_refused(responder: Responder) -> None:
    reply = await query(responder, BL, "AXFR")
    assert reply.header.rcode == 5


async def test_concurrent_queries_for_one_address_share_one_lookup(responder: Responder) -> None:
    resolver = responder.engine.rdns._resolver
    assert isinstance(resolver, DictResolver)
    resolver.delay = 0.05
    name = f"{rev4('203.0.113.7')}.{BL}"
    replies = await asyncio.gather(*(query(responder, name, "A") for _ in range(20)))
    assert all(str(r.rr[0].rdata) == "127.0.0.2" for r in replies)
    ptr_calls = [c for c in resolver.calls if c[1] == 12]
    assert len(ptr_calls) == 1


async def test_any_at_the_apex_over_udp_is_minimal(responder: Responder) -> None:
    question = dnslib.DNSRecord.question(BL, "ANY").pack()
    udp = await ask(responder, question)
    tcp = await ask(responder, question, tcp=True)
    assert udp is not None and tcp is not None
    assert [dnslib.QTYPE[rr.rtype] for rr in dnslib.DNSRecord.parse(udp).rr] == ["SOA"]  # RFC 8482
    assert sorted(dnslib.QTYPE[rr.rtype] for rr in dnslib.DNSRecord.parse(tcp).rr) == ["NS", "SOA"]
    assert len(udp) < 4 * len(question)
