"""Responses built by hand: TC when an answer does not fit, TXT split into character-strings."""

from __future__ import annotations

import struct

import dnslib
import pytest

from s25rbl.wire import message as wire
from s25rbl.wire.names import pointer

BL = "bl.s25rbl.test"


def test_answer_that_does_not_fit_sets_tc_and_keeps_the_question() -> None:
    request = wire.parse_request(dnslib.DNSRecord.question(f"2.0.0.127.{BL}", "TXT").pack())
    big = wire.record(pointer(12), wire.TYPE_TXT, 60, wire.txt_rdata("x" * 600))
    raw = wire.message(request, wire.NOERROR, aa=True, answer=[big], limit=512)
    reply = dnslib.DNSRecord.parse(raw)
    assert reply.header.tc == 1
    assert not reply.rr
    assert str(reply.q.qname) == f"2.0.0.127.{BL}."
    assert len(wire.message(request, wire.NOERROR, answer=[big], limit=65535)) > 600


def test_long_txt_is_split_into_255_octet_strings() -> None:
    rdata = wire.txt_rdata("y" * 300)
    assert rdata[0] == 255 and rdata[256] == 45


def _question(name: str = f"2.0.0.127.{BL}") -> bytes:
    return bytes(dnslib.DNSRecord.question(name, "A").pack())[12:]


def _header(qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return bytes.fromhex("abcd 0100") + struct.pack("!HHHH", qd, an, ns, ar)


OPT = b"\x00" + struct.pack("!HHIH", wire.TYPE_OPT, 1232, 0, 0)
COOKIE = struct.pack("!HH", 10, 8) + b"\x01" * 8
OPT_WITH_COOKIE = b"\x00" + struct.pack("!HHIH", wire.TYPE_OPT, 1232, 0, len(COOKIE)) + COOKIE
A_RECORD = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + b"\x7f\x00\x00\x02"

FORMERR_CASES = [
    ("one-trailing-octet", _header() + _question() + b"\x00"),
    ("trailing-garbage", _header() + _question() + b"garbage" * 100),
    ("trailing-after-opt", _header(ar=1) + _question() + OPT + b"\x00\x00"),
    ("opt-in-answer", _header(an=1) + _question() + OPT),
    ("opt-in-authority", _header(ns=1) + _question() + OPT),
    ("option-runs-past-packet", _header(ar=1) + _question() + OPT_WITH_COOKIE[:-1]),
    (
        "option-length-past-opt",
        _header(ar=1)
        + _question()
        + b"\x00"
        + struct.pack("!HHIH", wire.TYPE_OPT, 1232, 0, 6)
        + struct.pack("!HH", 10, 8)
        + b"\x01\x02",
    ),
    (
        "two-octets-of-option",
        _header(ar=1) + _question() + b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 2) + b"\x00\x0a",
    ),
]


@pytest.mark.parametrize("packet", [c[1] for c in FORMERR_CASES], ids=[c[0] for c in FORMERR_CASES])
def test_malformed_requests_are_formerr(packet: bytes) -> None:
    request = wire.parse_request(packet)
    assert request.error == wire.FORMERR, request.problem


WELL_FORMED = [
    ("plain", _header() + _question(), False),
    ("edns", _header(ar=1) + _question() + OPT, True),
    ("edns-cookie", _header(ar=1) + _question() + OPT_WITH_COOKIE, True),
    ("answer-record", _header(an=1) + _question() + A_RECORD, False),
    ("answer-record-then-opt", _header(an=1, ar=1) + _question() + A_RECORD + OPT, True),
]


@pytest.mark.parametrize(("packet", "edns"), [c[1:] for c in WELL_FORMED], ids=[c[0] for c in WELL_FORMED])
def test_well_formed_requests_parse(packet: bytes, edns: bool) -> None:
    request = wire.parse_request(packet)
    assert request.error is None, request.problem
    assert request.edns is edns
    assert request.question == _question()
