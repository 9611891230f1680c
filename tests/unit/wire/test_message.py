"""Responses built by hand: TC when an answer does not fit, TXT split into character-strings."""

from __future__ import annotations

import dnslib

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
