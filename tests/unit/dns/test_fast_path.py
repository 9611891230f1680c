"""Cached UDP answers in C (``s25rbl.dns.fast``): byte for byte the answers of the batched
Python path and of one recvfrom/sendto per datagram, over the same questions (DNS 0x20 mixed
case, EDNS with and without options, list changes, expired entries), the hits counted as
Python counts them, hostile datagrams, values of another shape, and the plain path when the
extension is missing, turned off or fails. Real loopback sockets.

The extension is built in place if it is not (as an editable install does); where it cannot
be built these tests skip, or fail under CI.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import random
import socket
import struct
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import dnslib
import pytest

from s25rbl.clock import SystemClock
from s25rbl.config import Endpoint
from s25rbl.dns import batch as batch_module
from s25rbl.dns import fast
from s25rbl.dns.answers import AnswerSettings
from s25rbl.dns.cache import INF, AnswerCache
from s25rbl.dns.handler import Responder
from s25rbl.dns.transport import _PATHS, Listeners
from s25rbl.dns.zones import ZoneKind, ZoneTable
from s25rbl.lists.values import EntryKind, EntryRow, EntrySource, ListName
from s25rbl.resolve.rdns import ReverseLookup
from s25rbl.verdict.hits import HitCounter
from s25rbl.verdict.lists import ListIndex
from s25rbl.verdict.pipeline import VerdictEngine
from tests.support.clock import FakeClock
from tests.support.udp import exchange
from tests.unit.dns.test_answer_cache import raw_query
from tests.unit.dns.test_udp_batch import pair, wait_readable
from tests.unit.fakes import DictResolver


def _build() -> None:
    if fast.available():
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    try:
        import hatch_build

        if hatch_build.compile_extension() is not None:
            fast._EXT = fast._load()
    finally:
        sys.path.pop(0)


_build()
if not fast.available() or not batch_module.available():
    if os.environ.get("S25RBL_CI"):
        raise RuntimeError("the C fast path could not be built (S25RBL_CI is set: CI must not skip)")
    pytest.skip("the C fast path cannot be built here", allow_module_level=True)

BL, WL = "bl.example", "wl.example"
LISTED = "198.51.100.7"  # blacklisted by CIDR entry 2
WHITE = "192.0.2.10"  # whitelisted by entry 1


def rows(black: bool = True) -> list[EntryRow]:
    found = [EntryRow(1, ListName.WHITE, EntryKind.IP, WHITE, EntrySource.MANUAL)]
    if black:
        found.append(EntryRow(2, ListName.BLACK, EntryKind.CIDR, "198.51.100.0/24", EntrySource.MANUAL))
    return found


class Node:
    """A responder on the system clock over lists a test can replace."""

    def __init__(self) -> None:
        self.index = ListIndex.build(rows(), version=1)
        self.engine = VerdictEngine(lambda: self.index, ReverseLookup(DictResolver(), deadline=1.0))
        zones = ZoneTable([(BL, ZoneKind.BLOCKLIST), (WL, ZoneKind.WHITELIST)])
        settings = AnswerSettings(nameservers=("ns1.example",), hostmaster="h.example")
        self.responder = Responder(zones, self.engine, settings, serial=lambda: self.index.version)

    def replace_lists(self, black: bool) -> None:
        self.index = ListIndex.build(rows(black), version=self.index.version + 1)


def rev(address: str, zone: str = BL) -> str:
    return ipaddress.ip_address(address).reverse_pointer.rsplit(".", 2)[0] + "." + zone


def mixed_case(name: str, seed: int) -> str:
    chooser = random.Random(seed)
    return "".join(c.upper() if chooser.random() < 0.5 else c for c in name)


def questions() -> list[bytes]:
    """Questions the cache keeps (asked twice: the second time is a hit), ID 0."""
    found = []
    for name in (rev(LISTED), rev(WHITE, WL), rev(WHITE), rev("198.51.100.9"), BL, f"nonsense.{BL}"):
        for qtype in ("A", "TXT"):
            found.append(dnslib.DNSRecord.question(name, qtype))
    for seed in range(4):  # DNS 0x20: the client's spelling comes back
        found.append(dnslib.DNSRecord.question(mixed_case(rev(LISTED), seed), "A"))
    edns = dnslib.DNSRecord.question(rev(LISTED), "TXT")
    edns.add_ar(dnslib.EDNS0(udp_len=1232))
    found.append(edns)
    signed = dnslib.DNSRecord.question(rev(LISTED), "A")
    signed.add_ar(dnslib.EDNS0(udp_len=4096, flags="do"))
    found.append(signed)
    packets = [bytes(record.pack()) for record in found]
    # an EDNS cookie option: kept under the key without it
    with_option = bytes(edns.pack())
    cookie = b"\x00\x0a\x00\x08" + b"c" * 8
    packets.append(with_option[:-2] + struct.pack("!H", len(cookie)) + cookie)
    # the longest name there is (255 octets), under the zone
    label = b"\x3f" + b"x" * 63
    longest = label * 3 + b"\x32" + b"y" * 50 + b"\x02bl\x07example\x00"
    assert len(longest) == 255
    packets.append(struct.pack("!HHHHHH", 0, 0x0100, 1, 0, 0, 0) + longest + b"\x00\x01\x00\x01")
    return packets


def with_id(packet: bytes, qid: int) -> bytes:
    return struct.pack("!H", qid) + packet[2:]


async def run(mode: str, host: str = "127.0.0.1") -> tuple[list[dict[int, bytes]], Node, Counter[Any]]:
    """Rounds of questions to one listener in ``mode`` ("c", "batched", "plain"): asked, asked
    again (hits), the lists changed, asked again twice. The answers of each round, the node,
    and the entry hits counted."""
    node = Node()
    batch = 0 if mode == "plain" else 64
    listeners = Listeners(node.responder, (Endpoint(host, 0),), None, 0, batch, mode == "c")
    await listeners.start()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    rounds = []
    hits: Counter[int] = Counter()
    try:
        assert listeners.udp[0].path == mode
        port = listeners.bound[0].port
        packets = questions()
        for number in range(4):
            if number == 2:
                node.replace_lists(black=False)
            base = 1000 * (number + 1)
            sent = [with_id(p, base + i) for i, p in enumerate(packets)]
            rounds.append(await exchange(port, sent, family))
        assert listeners.udp[0].path == mode  # nothing failed on the way
    finally:
        await listeners.stop()  # (drains what C counted)
    for entry_id, (count, _last) in node.engine.hits.take().items():
        hits[entry_id] += count
    return rounds, node, hits


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_c_batched_and_plain_answers_are_the_same_bytes(host: str) -> None:
    in_c, c_node, c_hits = await run("c", host)
    batched, b_node, b_hits = await run("batched", host)
    plain, p_node, p_hits = await run("plain", host)
    assert in_c == batched == plain
    # the hits counted: the answers' counters and the list entries' hit counts
    assert c_node.responder.counts == b_node.responder.counts == p_node.responder.counts
    assert c_hits == b_hits == p_hits
    assert c_hits[2] > 0  # the CIDR entry, until the lists changed
    cache = c_node.responder.cache
    assert cache is not None and cache.hits > 0
    assert b_node.responder.cache is not None and cache.hits == b_node.responder.cache.hits


async def test_the_c_path_answers_hits_without_python(caplog: pytest.LogCaptureFixture) -> None:
    """The second round's hits never reach the handler (it would count them as misses)."""
    node = Node()
    listeners = Listeners(node.responder, (Endpoint("127.0.0.1", 0),), None, 0, 64, True)
    with caplog.at_level(logging.INFO, logger="s25rbl.dns.transport"):
        await listeners.start()
    try:
        reader = listeners.udp[0]
        assert reader.path == "c"
        assert "UDP answers: " + _PATHS["c"] in caplog.messages
        packets = [p for p in questions() if len(p) < 100]  # lower-case names, no options
        port = listeners.bound[0].port
        await exchange(port, [with_id(p, 1 + i) for i, p in enumerate(packets)])
        cache = node.responder.cache
        assert cache is not None
        misses = cache.misses
        await exchange(port, [with_id(p, 500 + i) for i, p in enumerate(packets)])
        assert cache.misses == misses
        assert isinstance(reader._batch, fast.FastBatch)
        # the others (mixed case, EDNS options) are found by Python's second lookup
        exact = [p for p in packets if p[2:] in cache._entries]
        assert 0 < len(exact) < len(packets)
        assert reader._batch.stats()["hits"] == len(exact)
    finally:
        await listeners.stop()


def system_cache(max_bytes: int = 1 << 20, monotonic: Any = time.monotonic) -> tuple[AnswerCache, HitCounter]:
    snapshot = object()
    hits = HitCounter(SystemClock())
    cache = AnswerCache(
        max_bytes, lambda: snapshot, monotonic, Counter(), hits.hit_entry, hit_tables=hits.tables
    )
    return cache, hits


def store(cache: AnswerCache, n: int, expires: float = INF, edns: bool = False) -> bytes:
    request, question = raw_query(n, edns)
    record = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x01\x2c\x00\x04\x7f\x00\x00\x02"
    reply = request[:2] + b"\x84\x00\x00\x01\x00\x01\x00\x00\x00\x00" + request[12 : 12 + question] + record
    kept = cache.store(
        request,
        False,
        reply,
        question_length=question,
        lists=cache._snapshot,
        expires=expires,
        count=("blocklist", "127.0.0.2", "blacklist-address"),
        entry_id=n,
    )
    assert kept
    return reply


def test_an_expired_entry_is_answered_by_python_and_dropped() -> None:
    cache, _hits = system_cache()
    server, client = pair()
    batch = fast.FastBatch(server, 8, cache)
    try:
        fresh = store(cache, 1, expires=time.monotonic() + 3600)
        store(cache, 2, expires=time.monotonic() + 0.05)
        time.sleep(0.1)  # entry 2 expires
        handled: list[bytes] = []

        def handle(data: bytes, tcp: bool, peer: str | None) -> bytes:
            handled.append(data)
            return b"fresh:" + data[:2]

        for n in (1, 2):
            client.sendto(raw_query(n, False)[0], server.getsockname())
        wait_readable(server, 2)
        assert batch.serve(cache.answer, handle, lambda result, addr: None) == 2
        got = sorted(client.recv(4096) for _ in range(2))
        assert got == sorted([fresh, b"fresh:" + raw_query(2, False)[0][:2]])
        assert handled == [raw_query(2, False)[0]]
        assert cache.expired == 1 and len(cache) == 1
    finally:
        batch.close()
        server.close()
        client.close()


def test_hits_counted_in_c_reach_the_counters() -> None:
    cache, hits = system_cache()
    hits.hit_entry(7)  # one counted in Python before: added to
    hits.hit_entry(8)
    server, client = pair()
    batch = fast.FastBatch(server, 16, cache)
    try:
        store(cache, 7)
        for _ in range(5):
            client.sendto(raw_query(7, False)[0], server.getsockname())
        wait_readable(server, 5)
        batch.serve(None, lambda data, tcp, peer: None, lambda result, addr: None)
        assert len([client.recv(4096) for _ in range(5)]) == 5
        assert cache.hits == 0  # not yet drained
        batch.drain()
        assert cache.hits == 5
        taken = hits.take()
        assert {entry: count for entry, (count, _when) in taken.items()} == {7: 6, 8: 1}
        assert taken[7][1] >= taken[8][1]  # the last hit's time: C's, later
        assert cache._counts[("blocklist", "127.0.0.2", "blacklist-address")] == 5
    finally:
        batch.close()
        server.close()
        client.close()


def test_an_entry_that_is_not_what_the_cache_stores_is_left_to_python() -> None:
    """The C loop only reads the cache's dict: a value of another shape is never used."""
    cache, _hits = system_cache()
    server, client = pair()
    batch = fast.FastBatch(server, 8, cache)
    try:
        reply = store(cache, 3)
        key = raw_query(3, False)[0][2:]
        good = cache.entries[key]
        odd: list[Any] = [
            (good[0], 1, None),  # an int expiry
            ((good[0][0][:9], good[0][1], good[0][2]), INF, None),  # a short header
            (good[0], INF, -5),  # a negative entry id
            (good[0], INF, 1 << 70),  # an entry id past 64 bits
            good[:2],
        ]
        for value in [*odd, good]:
            cache.entries[key] = value
            client.sendto(raw_query(3, False)[0], server.getsockname())
            wait_readable(server, 1)
            batch.serve(None, lambda data, tcp, peer: b"python", lambda r, a: None)
            assert client.recv(4096) == (reply if value is good else b"python")
    finally:
        batch.close()
        server.close()
        client.close()


def test_a_clock_other_than_the_systems_keeps_the_python_path() -> None:
    cache, _hits = system_cache(monotonic=FakeClock().monotonic)
    server, _client = pair()
    try:
        assert fast.FastBatch.create(server, 8, cache) is None
    finally:
        server.close()
        _client.close()


# --- hostile datagrams ------------------------------------------------------------------------


def hostile(cached: list[bytes], seed: int) -> list[bytes]:
    """Cached questions cut short, grown, with flags flipped; random octets; empty ones."""
    chooser = random.Random(seed)
    found = [b"", b"\x00", b"\x00" * 11, b"\x00" * 12, b"\xff" * 17, bytes(range(256)) * 4, *cached]
    for packet in cached:
        for cut in (2, 3, 12, 13, len(packet) - 5, len(packet) - 1):
            found.append(packet[:cut])
        found.append(packet + b"\x00")
        found.append(packet[:2] + b"\x81" + packet[3:])  # QR set
        found.append(packet[:2] + b"\x01\x00" + packet[4:12] + b"\x00" * (len(packet) - 12))
        flipped = bytearray(packet)
        flipped[chooser.randrange(len(flipped))] ^= 1 << chooser.randrange(8)
        found.append(bytes(flipped))
    found.extend(bytes(chooser.randrange(256) for _ in range(chooser.randrange(1, 600))) for _ in range(60))
    return found


async def test_hostile_datagrams_get_the_plain_paths_answers() -> None:
    """Whatever arrives, the C path answers (or not) exactly as the plain path does, and
    keeps running. Each datagram from a socket of its own: answers cannot be told apart by ID."""
    cached = [p for p in questions() if len(p) < 300][::3]
    packets = hostile(cached, 1)
    results = []
    for mode in ("c", "plain"):
        node = Node()
        batch = 0 if mode == "plain" else 64
        listeners = Listeners(node.responder, (Endpoint("127.0.0.1", 0),), None, 0, batch, mode == "c")
        await listeners.start()
        sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in packets]
        try:
            port = listeners.bound[0].port
            await exchange(port, [with_id(p, i + 1) for i, p in enumerate(cached)])  # now cached
            for sock, packet in zip(sockets, packets, strict=True):
                sock.setblocking(False)
                sock.sendto(packet, ("127.0.0.1", port))
            assert (await exchange(port, [with_id(cached[0], 9999)]))[9999]  # all read, still answering
            await asyncio.sleep(0.2)  # answers after a reverse lookup
            answers = []
            for sock in sockets:
                try:
                    answers.append(sock.recv(65536))
                except BlockingIOError:
                    answers.append(b"")
            assert listeners.udp[0].path == mode
            results.append(answers)
        finally:
            for sock in sockets:
                sock.close()
            await listeners.stop()
    assert results[0] == results[1]
    assert 0 < results[0].count(b"") < len(packets)


# --- the plain path -------------------------------------------------------------------------


async def test_without_the_extension_the_server_answers_on_the_python_path(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(fast, "_EXT", None)
    node = Node()
    listeners = Listeners(node.responder, (Endpoint("127.0.0.1", 0),), None, 0, 64, True)
    with caplog.at_level(logging.INFO, logger="s25rbl.dns.transport"):
        await listeners.start()
    try:
        assert listeners.udp[0].path == "batched"
        started = [r.getMessage() for r in caplog.records if r.getMessage().startswith("UDP answers:")]
        assert started == ["UDP answers: " + _PATHS["batched"]]  # said once, at start
        packet = with_id(questions()[0], 77)
        got = await exchange(listeners.bound[0].port, [packet])
        assert dnslib.DNSRecord.parse(got[77]).a.rdata == dnslib.A("127.0.0.3")
    finally:
        await listeners.stop()


async def test_a_failure_of_the_c_path_falls_back_to_python_and_answers() -> None:
    node = Node()
    listeners = Listeners(node.responder, (Endpoint("127.0.0.1", 0),), None, 0, 64, True)
    await listeners.start()
    try:
        reader = listeners.udp[0]
        assert reader.path == "c" and isinstance(reader._batch, fast.FastBatch)

        class Broken:
            def __getattr__(self, name: str) -> Any:
                raise SystemError("broken")

        real = reader._batch._udp
        reader._batch._udp = Broken()
        try:
            packet = with_id(questions()[0], 78)
            got = await exchange(listeners.bound[0].port, [packet])
            assert dnslib.DNSRecord.parse(got[78]).a.rdata == dnslib.A("127.0.0.3")
            assert reader.path == "batched"
        finally:
            real.close()
    finally:
        await listeners.stop()
