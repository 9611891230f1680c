"""Property tests of the request parser and the handler (hypothesis): any bytes in, never an
exception out; an answer, when there is one, is a valid response to the request that fits
what the client takes, and is never given to a response or a packet without a header."""

from __future__ import annotations

import asyncio
import struct

import dns.message
import dnslib
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s25rbl.dns.answers import AnswerSettings
from s25rbl.dns.handler import Responder
from s25rbl.dns.zones import ZoneKind, ZoneTable
from s25rbl.errors import Drop
from s25rbl.lists.values import EntryKind, EntryRow, EntrySource, ListName
from s25rbl.resolve.rdns import ReverseLookup
from s25rbl.verdict.lists import ListIndex
from s25rbl.verdict.pipeline import VerdictEngine
from s25rbl.wire import message as wire
from s25rbl.wire.names import encode_name
from tests.unit.fakes import DictResolver

pytestmark = pytest.mark.adversarial

BL, WL, HL = "bl.example", "wl.example", "hl.example"
NAMES = [
    f"2.0.0.127.{BL}",
    f"7.113.0.203.{BL}",
    f"3.100.51.198.{WL}",
    f"1.2.{BL}",
    f"www.{BL}",
    BL,
    f"p1234-ipad12.tokyo.ocn.ne.jp.{HL}",
    "example.com",
]


def plain(name: str, qtype: int, edns: int | None) -> bytes:
    """A query built by hand (dnslib would draw its id from ``random``, which hypothesis forbids)."""
    header = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0 if edns is None else 1)
    opt = b"" if edns is None else b"\x00" + struct.pack("!HHIH", 41, edns, 0, 0)
    return header + encode_name(name) + struct.pack("!HH", qtype, 1) + opt


# Requests: well-formed ones, the same with bytes changed, cut or added, and arbitrary bytes.
wellformed = st.builds(
    plain,
    st.sampled_from(NAMES),
    st.sampled_from([1, 2, 6, 12, 15, 16, 28, 99, 251, 252, 255, 65535]),
    st.one_of(st.none(), st.integers(0, 65535)),
)


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    packet = bytearray(draw(wellformed))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(packet) - 1))
        packet[at] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(packet)))
    return bytes(packet[:cut] if draw(st.booleans()) else packet) + draw(st.binary(max_size=40))


requests = st.one_of(wellformed, damaged(), st.binary(max_size=600))


def make_responder() -> Responder:
    resolver = DictResolver()
    resolver.ptr("203.0.113.7", "p1234-ipad12.tokyo.ocn.ne.jp").host(
        "p1234-ipad12.tokyo.ocn.ne.jp", "203.0.113.7"
    )
    index = ListIndex.build(
        [EntryRow(1, ListName.BLACK, EntryKind.CIDR, "198.51.100.0/24", EntrySource.MANUAL)], version=1
    )
    engine = VerdictEngine(lambda: index, ReverseLookup(resolver, deadline=1.0))
    zones = ZoneTable([(BL, ZoneKind.BLOCKLIST), (WL, ZoneKind.WHITELIST), (HL, ZoneKind.HOSTNAME)])
    return Responder(zones, engine, AnswerSettings(nameservers=("ns1.example",), hostmaster="h.example"))


RESPONDER = make_responder()  # one for every example: its caches see them all


@settings(max_examples=3000, deadline=None, database=None)
@given(requests)
def test_the_parser_takes_any_bytes(packet: bytes) -> None:
    try:
        request = wire.parse_request(packet)
    except Drop:
        assert len(packet) < 12 or packet[2] & 0x80
        return
    assert request.id == struct.unpack_from("!H", packet)[0]
    if request.error is None:
        assert 12 + len(request.question) <= len(packet)


def limit(packet: bytes, tcp: bool) -> int:
    if tcp:
        return 65535
    request = wire.parse_request(packet)
    return 512 if not request.edns else max(512, request.payload)


def answer(packet: bytes, tcp: bool) -> bytes | None:
    result = RESPONDER.handle(packet, tcp, "192.0.2.1")
    if result is None or isinstance(result, bytes):
        return result
    return asyncio.run(_wait(result))


async def _wait(result: object) -> bytes | None:
    return await result  # type: ignore[misc, no-any-return]


@settings(max_examples=3000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests, st.booleans())
def test_the_handler_answers_any_bytes_validly_or_not_at_all(packet: bytes, tcp: bool) -> None:
    reply = answer(packet, tcp)
    if len(packet) < 12 or packet[2] & 0x80:
        assert reply is None  # no header, or a response: never answered
        return
    assert reply is not None
    assert reply[:2] == packet[:2] and reply[2] & 0x80
    assert len(reply) <= limit(packet, tcp)
    dns.message.from_wire(reply)  # an independent codec takes it (any octets in its labels)
    try:
        request = dnslib.DNSRecord.parse(packet)
    except Exception:
        return
    if request.questions and reply[3] & 0x0F not in (wire.FORMERR, wire.NOTIMP):
        assert dnslib.DNSRecord.parse(reply).q == request.q  # the question echoed
