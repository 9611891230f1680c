"""Queries in, answers out: parse a request once into a ``Request``, build a response as bytes.

Hand-parsing the fixed header and the one question costs a few microseconds where a generic
library costs tens; every request is read exactly once.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from s25rbl.errors import Drop
from s25rbl.wire.names import encode_name, skip_name

# Types and codes used by the responder.
TYPE_A, TYPE_NS, TYPE_SOA, TYPE_TXT, TYPE_OPT = 1, 2, 6, 16, 41
TYPE_IXFR, TYPE_AXFR, TYPE_ANY = 251, 252, 255
CLASS_IN, CLASS_ANY = 1, 255
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16

FLAG_QR = 0x8000
FLAG_AA = 0x0400
FLAG_TC = 0x0200
FLAG_RD = 0x0100
FLAG_CD = 0x0010
OPCODE_MASK = 0x7800

_HEADER = struct.Struct("!HHHHHH")
_TYPE_CLASS = struct.Struct("!HH")
_RR_FIXED = struct.Struct("!HHIH")


@dataclass(slots=True)
class Request:
    """One parsed query. ``labels`` keep the case they came with (DNS 0x20)."""

    id: int
    flags: int
    labels: list[bytes]
    qtype: int = 0
    qclass: int = 0
    question: bytes = b""  # the question section exactly as received
    edns: bool = False
    payload: int = 512
    edns_version: int = 0
    do: bool = False
    error: int | None = None  # an rcode to answer with instead of looking anything up
    problem: str = ""

    @property
    def opcode(self) -> int:
        return (self.flags & OPCODE_MASK) >> 11


def parse_request(data: bytes) -> Request:
    """Parse a query. Raises Drop for what gets no answer; FORMERR cases set ``error``."""
    if len(data) < 12:
        raise Drop("shorter than a DNS header")
    if type(data) is not bytes:  # labels must be hashable: a bytearray's slices are not
        data = bytes(data)
    ident, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    if flags & FLAG_QR:
        raise Drop("a response, not a query")
    request = Request(ident, flags, [])
    if request.opcode != 0:
        request.error, request.problem = NOTIMP, f"opcode {request.opcode}"
        return request
    if qdcount != 1:
        request.error, request.problem = FORMERR, f"{qdcount} questions"
        return request
    try:
        offset = _read_question(data, 12, request)
        offset = _skip_records(data, offset, ancount + nscount)
        offset = _read_additional(data, offset, arcount, request)
        if offset != len(data):
            # RFC 1035 leaves no room for octets after the last record: a request padded so
            # is malformed, and answering it as if it were not would let the padding pass
            # for part of the question (a cache key, say).
            raise ValueError(f"{len(data) - offset} octets after the last record")
    except (ValueError, IndexError, struct.error) as exc:
        request.error, request.problem = FORMERR, str(exc) or "truncated packet"
    return request


def _read_question(data: bytes, offset: int, request: Request) -> int:
    start = offset
    labels = request.labels
    total = 1
    while True:
        length = data[offset]
        if length == 0:
            offset += 1
            break
        if length > 63:
            raise ValueError("compressed or invalid label in the question")
        total += length + 1
        if total > 255:
            raise ValueError("question name longer than 255 octets")
        labels.append(data[offset + 1 : offset + 1 + length])
        offset += 1 + length
        if offset > len(data):
            raise ValueError("question name runs past the packet")
    if offset + 4 > len(data):
        raise ValueError("question without type and class")
    request.qtype, request.qclass = _TYPE_CLASS.unpack_from(data, offset)
    offset += 4
    request.question = data[start:offset]
    return offset


def _skip_records(data: bytes, offset: int, count: int) -> int:
    """Skip the answer and authority records; an OPT record there is malformed (RFC 6891 6.1.1)."""
    for _ in range(count):
        offset = skip_name(data, offset)
        rtype, _rclass, _ttl, rdlength = _RR_FIXED.unpack_from(data, offset)
        if rtype == TYPE_OPT:
            raise ValueError("OPT record outside the additional section")
        offset += 10 + rdlength
        if offset > len(data):
            raise ValueError("record runs past the packet")
    return offset


def _read_additional(data: bytes, offset: int, count: int, request: Request) -> int:
    for _ in range(count):
        name_start = offset
        offset = skip_name(data, offset)
        rtype, rclass, ttl, rdlength = _RR_FIXED.unpack_from(data, offset)
        offset += 10
        end = offset + rdlength
        if end > len(data):
            raise ValueError("record runs past the packet")
        if rtype == TYPE_OPT:
            if request.edns:
                raise ValueError("more than one OPT record")
            if data[name_start] != 0:
                raise ValueError("OPT record not owned by the root")
            if options_end(data, offset, end) != end:
                raise ValueError("EDNS option runs past the OPT record")
            request.edns = True
            request.payload = max(512, rclass)
            request.edns_version = (ttl >> 16) & 0xFF
            request.do = bool(ttl & 0x8000)
        offset = end
    return offset


def options_end(data: bytes, offset: int, end: int) -> int:
    """Where the EDNS options from ``offset`` stop: ``end`` when they fill the OPT RDATA
    exactly, anything else when one (its 4-octet code and length, or its data) runs past it."""
    while offset + 4 <= end:
        offset += 4 + ((data[offset + 2] << 8) | data[offset + 3])
    return offset


# --- encoding ----------------------------------------------------------------------------


def record(owner: bytes, rtype: int, ttl: int, rdata: bytes, rclass: int = CLASS_IN) -> bytes:
    return owner + _RR_FIXED.pack(rtype, rclass, ttl, len(rdata)) + rdata


def txt_rdata(text: str) -> bytes:
    """A TXT RDATA of one or more character-strings of at most 255 octets each."""
    raw = text.encode("utf-8")
    chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
    return b"".join(bytes([len(c)]) + c for c in chunks)


def soa_rdata(
    mname: str, rname: str, serial: int, refresh: int, retry: int, expire: int, minimum: int
) -> bytes:
    return (
        encode_name(mname)
        + encode_name(rname)
        + struct.pack("!IIIII", serial & 0xFFFFFFFF, refresh, retry, expire, minimum)
    )


def opt_record(payload: int, version: int = 0, do: bool = False, ext_rcode: int = 0) -> bytes:
    ttl = (ext_rcode << 24) | (version << 16) | (0x8000 if do else 0)
    return b"\x00" + _RR_FIXED.pack(TYPE_OPT, payload, ttl, 0)


def message(
    request: Request,
    rcode: int,
    *,
    aa: bool = False,
    answer: list[bytes] | None = None,
    authority: list[bytes] | None = None,
    limit: int = 65535,
    server_payload: int = 1232,
) -> bytes:
    """The response to ``request``: question echoed byte for byte, TC set when it won't fit."""
    answer = answer or []
    authority = authority or []
    flags = FLAG_QR | (request.flags & (OPCODE_MASK | FLAG_RD | FLAG_CD))
    if aa:
        flags |= FLAG_AA
    opt = b""
    if request.edns:
        ext = 0
        if rcode > 15:
            ext, rcode = rcode >> 4, rcode & 0xF
        opt = opt_record(server_payload, 0, request.do, ext)
    flags |= rcode & 0xF
    qd = 1 if request.question else 0
    body = request.question + b"".join(answer) + b"".join(authority)
    if 12 + len(body) + len(opt) > limit:
        # RFC 2181 9: drop the whole answer and let the client retry over TCP.
        flags |= FLAG_TC
        header = _HEADER.pack(request.id, flags, qd, 0, 0, 1 if opt else 0)
        return header + request.question + opt
    header = _HEADER.pack(request.id, flags, qd, len(answer), len(authority), 1 if opt else 0)
    return header + body + opt
