"""The answer cache: same bytes as a fresh answer (ID and question aside), invalidated precisely."""

from __future__ import annotations

import gc
import ipaddress
import struct
import tracemalloc
from collections import Counter
from collections.abc import Callable

import dnslib
import pytest

from s25rbl.dns.answers import AnswerSettings
from s25rbl.dns.cache import INF, AnswerCache
from s25rbl.dns.handler import Responder
from s25rbl.dns.zones import ZoneKind, ZoneTable
from s25rbl.lists.values import EntryKind, EntryRow, EntrySource, ListName
from s25rbl.resolve.codec import LookupStatus
from s25rbl.resolve.rdns import TEMPFAIL_CACHE_TTL, ReverseLookup
from s25rbl.verdict.lists import ListIndex
from s25rbl.verdict.pipeline import VerdictEngine
from tests.support.clock import FakeClock
from tests.unit.fakes import DictResolver

BL, WL, HL = "bl.example", "wl.example", "hl.example"
SETTINGS = AnswerSettings(
    ttl=300, negative_ttl=120, tempfail_ttl=30, nameservers=("ns1.example",), hostmaster="hostmaster.example"
)
LISTED = "198.51.100.7"  # blacklisted by CIDR entry 2
DYNAMIC = "203.0.113.7"  # S25R rule, from a reverse lookup
CLEAN = "203.0.113.8"
FAILING = "203.0.113.10"


class Node:
    """A responder over a list snapshot that a test can replace, on a fake clock."""

    def __init__(self, cache_size: int = 1000, rows: list[EntryRow] | None = None) -> None:
        self.clock = FakeClock()
        self.index = ListIndex.build(rows if rows is not None else default_rows(), version=1)
        self.resolver = DictResolver()
        dynamic_name = "p1234-ipad12.tokyo.ocn.ne.jp"
        self.resolver.ptr(DYNAMIC, dynamic_name).host(dynamic_name, DYNAMIC)
        self.resolver.ptr(CLEAN, "mail.example.org").host("mail.example.org", CLEAN)
        self.resolver.fail(FAILING, LookupStatus.SERVFAIL)
        self.rdns = ReverseLookup(self.resolver, deadline=1.0, clock=self.clock)
        self.engine = VerdictEngine(lambda: self.index, self.rdns, tempfail_ttl=30, clock=self.clock)
        zones = ZoneTable([(BL, ZoneKind.BLOCKLIST), (WL, ZoneKind.WHITELIST), (HL, ZoneKind.HOSTNAME)])
        self.responder = Responder(
            zones, self.engine, SETTINGS, serial=lambda: self.index.version, cache_size=cache_size
        )

    def replace_lists(self, rows: list[EntryRow]) -> None:
        self.index = ListIndex.build(rows, version=self.index.version + 1)

    async def ask(self, packet: bytes, tcp: bool = False) -> bytes:
        result = self.responder.handle(packet, tcp)
        if result is not None and not isinstance(result, bytes):
            result = await result
        assert result is not None
        return result

    @property
    def cache_hits(self) -> int:
        assert self.responder.cache is not None
        return self.responder.cache.hits


def default_rows() -> list[EntryRow]:
    return [
        EntryRow(1, ListName.WHITE, EntryKind.IP, "192.0.2.10", EntrySource.MANUAL),
        EntryRow(2, ListName.BLACK, EntryKind.CIDR, "198.51.100.0/24", EntrySource.MANUAL),
    ]


def rev(address: str, zone: str = BL) -> str:
    return ipaddress.ip_address(address).reverse_pointer.rsplit(".", 2)[0] + "." + zone


def packet(
    name: str, qtype: str = "A", qid: int = 0x1234, edns: int | None = None, do: bool = False
) -> bytes:
    q = dnslib.DNSRecord.question(name, qtype)
    q.header.id = qid
    if edns is not None:
        q.add_ar(dnslib.EDNS0(udp_len=edns, flags="do" if do else ""))
    raw: bytes = q.pack()
    return raw


def a_code(response: bytes) -> int | None:
    reply = dnslib.DNSRecord.parse(response)
    for rr in reply.rr:
        if rr.rtype == dnslib.QTYPE.A:
            return int(str(rr.rdata).rsplit(".", 1)[1])
    return None


async def test_hit_is_the_same_answer_with_the_new_id() -> None:
    node = Node()
    first = await node.ask(packet(rev(LISTED), qid=1))
    second = await node.ask(packet(rev(LISTED), qid=0xBEEF))
    assert node.cache_hits == 1
    assert second[:2] == b"\xbe\xef"
    assert second[2:] == first[2:]
    assert a_code(second) == 3


@pytest.mark.parametrize(
    "name, qtype",
    [
        (rev(LISTED), "A"),
        (rev(LISTED), "TXT"),
        (rev(LISTED), "ANY"),
        (rev(LISTED), "MX"),
        (rev(DYNAMIC), "TXT"),
        (rev(CLEAN), "A"),
        (rev(FAILING), "A"),
        (rev("192.0.2.10", WL), "A"),
        ("2.0.0.127." + BL, "A"),
        ("1.2." + BL, "A"),
        ("bogus." + BL, "A"),
        (BL, "SOA"),
        (BL, "NS"),
        ("p1234-ipad12.tokyo.ocn.ne.jp." + HL, "TXT"),
        ("hotmail.com." + HL, "A"),
    ],
)
async def test_cached_answers_equal_built_answers(name: str, qtype: str) -> None:
    cached, uncached = Node(), Node(cache_size=0)
    assert uncached.responder.cache is None
    for qid, edns in ((7, None), (8, 1232), (9, None)):
        expected = await uncached.ask(packet(name, qtype, qid, edns))
        assert await cached.ask(packet(name, qtype, qid, edns)) == expected
    assert cached.cache_hits == 1  # the third; the EDNS query has its own key


async def test_question_case_is_echoed_from_the_request_dns_0x20() -> None:
    node = Node()
    await node.ask(packet(rev(LISTED)))
    mixed = rev(LISTED).replace("bl.example", "bL.ExAmPlE")
    reply = await node.ask(packet(mixed, qid=42))
    assert node.cache_hits == 1
    assert mixed.encode().split(b".")[-2] in reply  # spelled as asked, byte for byte
    assert reply == await Node(cache_size=0).ask(packet(mixed, qid=42))


async def test_a_mixed_case_question_stored_first_is_found_in_lower_case_too() -> None:
    """Keys hold the name lower-cased: a lower-case request finds the entry by its own bytes,
    a mixed-case one by the lower-cased key; both get the answer built for them."""
    node = Node()
    mixed = rev(LISTED).replace("bl.example", "Bl.Example")
    await node.ask(packet(mixed, qid=1))
    lower = await node.ask(packet(rev(LISTED), qid=2))
    again = await node.ask(packet(mixed, qid=3))
    assert node.cache_hits == 2
    assert lower == await Node(cache_size=0).ask(packet(rev(LISTED), qid=2))
    assert again == await Node(cache_size=0).ask(packet(mixed, qid=3))


async def test_a_udp_request_never_finds_a_tcp_answer_by_its_bytes() -> None:
    """A TCP entry's key starts with 0xff: a UDP request whose octets after the ID spell that
    key (flags 0xff..: never a query) gets no stored answer."""
    node = Node()
    tcp_request = packet(rev(LISTED), qid=5)
    await node.ask(tcp_request, tcp=True)
    assert node.responder.cache is not None
    forged = b"\x00\x05\xff" + tcp_request[2:]
    assert node.responder.cache.answer(forged, False) is None


async def test_transport_edns_and_do_bit_are_keyed_apart() -> None:
    node = Node()
    name = rev(LISTED)
    variants = [
        (packet(name), False),
        (packet(name), True),
        (packet(name, edns=1232), False),
        (packet(name, edns=4096), False),
        (packet(name, edns=1232, do=True), False),
    ]
    for raw, tcp in variants:
        await node.ask(raw, tcp)
    assert node.cache_hits == 0
    for raw, tcp in variants:
        expected = await Node(cache_size=0).ask(raw, tcp)
        assert await node.ask(raw, tcp) == expected
    assert node.cache_hits == len(variants)


async def test_a_list_change_is_answered_at_once() -> None:
    node = Node()
    assert a_code(await node.ask(packet(rev(LISTED)))) == 3
    assert a_code(await node.ask(packet(rev(LISTED)))) == 3
    node.replace_lists([])  # the blacklist entry is gone: lookups decide now
    node.resolver.ptr(LISTED, "mail.example.net").host("mail.example.net", LISTED)
    reply = dnslib.DNSRecord.parse(await node.ask(packet(rev(LISTED))))
    assert reply.header.rcode == dnslib.RCODE.NXDOMAIN
    assert reply.auth[0].rdata.times[0] == 2  # the SOA serial follows the list version


async def test_answers_from_a_reverse_lookup_expire_with_it() -> None:
    node = Node()
    node.resolver.ttl = 300
    assert a_code(await node.ask(packet(rev(DYNAMIC)))) == 2
    lookups = len(node.resolver.calls)
    node.clock.advance(299)
    assert a_code(await node.ask(packet(rev(DYNAMIC)))) == 2
    assert node.cache_hits == 1 and len(node.resolver.calls) == lookups
    node.clock.advance(2)  # past the lookup's TTL: asked again, not served from the cache
    node.resolver.ptr(DYNAMIC, "mail.example.jp").host("mail.example.jp", DYNAMIC)
    reply = dnslib.DNSRecord.parse(await node.ask(packet(rev(DYNAMIC))))
    assert reply.header.rcode == dnslib.RCODE.NXDOMAIN
    assert len(node.resolver.calls) > lookups
    assert node.responder.cache is not None and node.responder.cache.expired == 1


async def test_a_lookup_with_ttl_0_is_never_reused() -> None:
    node = Node()
    node.resolver.ttl = 0
    for _ in range(3):
        assert a_code(await node.ask(packet(rev(DYNAMIC)))) == 2
    assert node.cache_hits == 0


async def test_temporary_failure_is_kept_only_as_long_as_the_lookup() -> None:
    node = Node()
    assert a_code(await node.ask(packet(rev(FAILING)))) == 5
    assert a_code(await node.ask(packet(rev(FAILING)))) == 5
    assert node.cache_hits == 1
    node.clock.advance(TEMPFAIL_CACHE_TTL + 0.1)
    node.resolver.failing.clear()
    node.resolver.ptr(FAILING, "mail.example.com").host("mail.example.com", FAILING)
    reply = dnslib.DNSRecord.parse(await node.ask(packet(rev(FAILING))))
    assert reply.header.rcode == dnslib.RCODE.NXDOMAIN


async def test_servfail_is_never_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    node = Node()
    calls = 0
    real = node.engine.decide_fast

    def broken(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> object:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug")
        return real(ip)

    monkeypatch.setattr(node.engine, "decide_fast", broken)
    first = dnslib.DNSRecord.parse(await node.ask(packet(rev(LISTED))))
    assert first.header.rcode == dnslib.RCODE.SERVFAIL
    assert a_code(await node.ask(packet(rev(LISTED)))) == 3
    assert node.cache_hits == 0 and calls == 2


async def test_refused_and_formerr_are_not_cached() -> None:
    node = Node()
    for _ in range(2):
        await node.ask(packet("example.com", "A"))
        await node.ask(b"\x00\x01\x01\x00\x00\x02" + b"\x00" * 6)  # two questions: FORMERR
    assert node.cache_hits == 0
    assert node.responder.cache is not None and len(node.responder.cache) == 0


async def test_a_zero_octet_inside_a_label_is_never_mistaken_for_the_end() -> None:
    node = Node()
    # "7\x00" as one label: find(0) stops early; the entry must not be stored under a key that
    # another question could match.
    labels = [b"7\x00", b"100", b"51", b"198", b"bl", b"example"]
    name = b"".join(bytes([len(x)]) + x for x in labels) + b"\x00"
    raw = b"\x00\x05\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + name + struct.pack("!HH", 1, 1)
    for _ in range(2):
        await node.ask(raw)
    assert node.cache_hits == 0


async def test_size_is_bounded() -> None:
    node = Node(cache_size=16)
    for i in range(200):
        await node.ask(packet(rev(f"198.51.100.{i}")))
    cache = node.responder.cache
    assert cache is not None
    assert 0 < len(cache) <= 16
    assert cache.evicted >= 200 - 16


async def test_hits_count_like_fresh_answers() -> None:
    node = Node()
    for _ in range(5):
        await node.ask(packet(rev(LISTED)))
    assert node.cache_hits == 4
    assert node.engine.hits.take()[2][0] == 5  # the CIDR entry, counted on every answer
    assert node.responder.counts["blocklist", "127.0.0.3", "blacklist-address"] == 5


def with_cookie(raw: bytes, cookie: bytes) -> bytes:
    """``raw`` (a query with an empty OPT record last) with a COOKIE option in that record."""
    option = struct.pack("!HH", 10, len(cookie)) + cookie
    return raw[:-2] + struct.pack("!H", len(option)) + option


async def test_edns_options_do_not_make_new_keys() -> None:
    node = Node()
    name = rev(LISTED)
    first = await node.ask(packet(name, edns=1232))
    for n in range(50):
        reply = await node.ask(with_cookie(packet(name, edns=1232), bytes([n]) * 8))
        assert reply == first
    assert node.cache_hits == 50
    assert node.responder.cache is not None and len(node.responder.cache) == 1


PADDED = [
    ("octets-after-question", lambda raw: raw + b"\x00" * 60_000),
    ("octets-after-opt", lambda raw: raw + b"\x00" * 60_000),
    ("option-past-opt", lambda raw: raw[:-2] + b"\x00\x06" + b"\x00\x0a\x00\x08\x01\x02"),
]


@pytest.mark.parametrize("pad", [c[1] for c in PADDED], ids=[c[0] for c in PADDED])
async def test_padded_requests_are_formerr_and_never_stored(pad: Callable[[bytes], bytes]) -> None:
    node = Node()
    for edns in (None, 1232):
        for qid in range(3):
            reply = dnslib.DNSRecord.parse(await node.ask(pad(packet(rev(LISTED), qid=qid, edns=edns))))
            assert reply.header.rcode == dnslib.RCODE.FORMERR
            assert reply.header.id == qid
    assert node.responder.cache is not None and len(node.responder.cache) == 0


async def test_a_flood_of_large_padded_queries_does_not_grow_memory() -> None:
    node = Node()
    await node.ask(packet(rev(LISTED)))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(2000):
            await node.ask(packet(rev(f"198.51.100.{n % 250}"), qid=n) + bytes([n % 256]) * 60_000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 1 << 20  # 120 MB of queries went in; (almost) nothing stayed


def raw_query(n: int, edns: bool) -> tuple[bytes, int]:
    """A query for the n-th address of 10/8 (built by hand: quick), and its question length."""
    labels = [str(n & 255), str(n >> 8 & 255), str(n >> 16 & 255), "10", "bl", "example"]
    name = b"".join(bytes([len(x)]) + x.encode() for x in labels) + b"\x00"
    header = struct.pack("!HHHHHH", n & 0xFFFF, 0x0100, 1, 0, 0, 1 if edns else 0)
    opt = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00" if edns else b""
    return header + name + b"\x00\x01\x00\x01" + opt, len(name) + 4


def fill(cache_bytes: int, mix: str) -> tuple[AnswerCache, int]:
    """An answer cache of ``cache_bytes`` filled past its bound with answers of one kind; the
    memory it holds, as tracemalloc counts it."""
    snapshot = object()
    cache = AnswerCache(cache_bytes, lambda: snapshot, lambda: 0.0, Counter(), lambda entry: None)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(cache_bytes // 80):
            request, question = raw_query(n, edns=n % 2 == 1)
            record = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x01\x2c\x00\x04\x7f\x00\x00" + bytes([2 + n % 3])
            reply = (
                request[:2]
                + b"\x84\x00\x00\x01\x00\x01\x00\x00\x00\x00"
                + request[12 : 12 + question]
                + record
            )
            cache.store(
                request,
                n % 3 == 0,
                reply,
                question_length=question,
                lists=snapshot,
                expires=INF if mix == "until-list-change" else 100.0 + n,
                count=("blocklist", f"127.0.0.{2 + n % 3}", "s25r-rule"),
                entry_id=n + 100_000 if mix == "entry-per-answer" else None,
            )
        del request, reply
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return cache, held


@pytest.mark.parametrize("mix", ["until-list-change", "own-expiry", "entry-per-answer"])
@pytest.mark.parametrize("cache_bytes", [256 * 1024, 1024 * 1024])
def test_the_cache_holds_no_more_memory_than_its_byte_bound(cache_bytes: int, mix: str) -> None:
    cache, held = fill(cache_bytes, mix)
    assert cache.evicted > 0
    assert held <= cache_bytes
    assert cache.bytes <= cache_bytes
    assert held > cache_bytes // 2  # and it does use the room it has


async def test_odd_flags_are_answered_but_never_stored() -> None:
    node = Node()
    raw = bytearray(packet(rev(LISTED)))
    raw[3] |= 0x40  # the Z bit
    for _ in range(2):
        assert a_code(await node.ask(bytes(raw))) == 3
    assert node.responder.cache is not None and len(node.responder.cache) == 0
