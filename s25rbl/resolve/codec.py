"""The stub resolver's message codec, with no I/O: questions built, answers parsed and checked.

Packets are built and parsed by hand because per-lookup client CPU limits fresh verdicts.
Everything here is plain code on bytes, tested without sockets; ``client`` drives it.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
import struct
import typing
from dataclasses import dataclass

from s25rbl.wire.names import encode_labels, skip_name

PTR, A, AAAA = 12, 1, 28
_CNAME, _SOA = 5, 6
SUPPORTED = frozenset((PTR, A, AAAA))


class LookupStatus(enum.Enum):
    """How a lookup ended."""

    OK = "ok"
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"
    # REFUSED, FORMERR, NOTIMP and malformed answers from upstream all map to SERVFAIL.
    SERVFAIL = "servfail"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class LookupResult:
    """The outcome of one lookup: status, values and how long they may be kept."""

    status: LookupStatus
    # PTR: target names, lower case, no trailing dot; A/AAAA: ipaddress-normalised addresses.
    values: tuple[str, ...]
    # OK: min TTL of the answer RRs used (CNAMEs included); NXDOMAIN/NODATA: negative TTL
    # from the SOA in AUTHORITY, else the configured default; SERVFAIL/TIMEOUT: 0.
    ttl: int


class Resolver(typing.Protocol):
    """What reverse lookups need of a resolver (``StubResolver``; unit tests use a dict)."""

    async def lookup(self, name: str, rdtype: int) -> LookupResult: ...

    async def close(self) -> None: ...


TIMEOUT = LookupResult(LookupStatus.TIMEOUT, (), 0)
SERVFAIL = LookupResult(LookupStatus.SERVFAIL, (), 0)

_MAX_CHAIN = 8
# Flags RD=1; one question; no answer/authority; one additional record (the OPT RR).
QUERY_HEADER_TAIL = b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01"
# EDNS0 OPT RR: root owner, TYPE 41, CLASS = 1232-byte UDP payload, TTL 0, empty RDATA.
# 1232 avoids IP fragmentation (DNS flag day 2020) while leaving room for big PTR sets.
QUERY_OPT_RR = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
_RR = struct.Struct("!HHIH")
_U32 = struct.Struct("!I")
# Bytes that may appear unescaped in a presentation-format label.
_SAFE = bytes(range(0x21, 0x7F)).replace(b".", b"").replace(b"\\", b"")


def reverse_name(ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """Return the in-addr.arpa / ip6.arpa name of ``ip`` without a trailing dot."""
    addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    return addr.reverse_pointer


# ---------------------------------------------------------------------------------------
# Names


def encode_query_name(name: str) -> bytes:
    """Encode a presentation-format name as uncompressed wire format; ValueError if invalid."""
    if "\\" in name:
        return _encode_escaped(name)
    if name.endswith("."):
        name = name[:-1]
    if not name:
        return b"\x00"
    try:
        raw = name.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"non-ASCII DNS name (IDNA-encode it first): {name!r}") from None
    return encode_labels(raw.split(b"."), name)


def _encode_escaped(name: str) -> bytes:
    """Slow path of _encode_name for RFC 1035 ``\\DDD`` / ``\\X`` escapes (rare)."""
    try:
        raw = name.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"non-ASCII DNS name: {name!r}") from None
    if raw in (b"", b"."):
        return b"\x00"
    labels: list[bytes] = []
    cur = bytearray()
    after_dot = False
    i, end = 0, len(raw)
    while i < end:
        c = raw[i]
        after_dot = False
        if c == 0x2E:
            labels.append(bytes(cur))
            cur = bytearray()
            after_dot = True
            i += 1
        elif c == 0x5C:
            digits = raw[i + 1 : i + 4]
            if len(digits) == 3 and digits.isdigit():
                value = int(digits)
                if value > 255:
                    raise ValueError(f"bad escape in DNS name: {name!r}")
                cur.append(value)
                i += 4
            elif i + 1 < end:
                cur.append(raw[i + 1])
                i += 2
            else:
                raise ValueError(f"dangling backslash in DNS name: {name!r}")
        else:
            cur.append(c)
            i += 1
    if not after_dot:
        labels.append(bytes(cur))
    return encode_labels(labels, name)


def _read_name(data: bytes, off: int) -> tuple[bytes, int]:
    """Read a possibly compressed name at ``off``.

    Returns the name as lower-case uncompressed wire format (unambiguous to compare, unlike
    dotted text) and the offset just past it in the packet.
    """
    parts: list[bytes] = []
    end = -1
    # Every pointer must jump strictly before the start of the run that contains it, so
    # the offsets decrease and a hostile pointer loop cannot make this spin.
    run_start = off
    total = 1
    while True:
        size = data[off]
        if size == 0:
            off += 1
            break
        if size >= 0xC0:
            target = ((size & 0x3F) << 8) | data[off + 1]
            if end < 0:
                end = off + 2
            if target >= run_start:
                raise ValueError("forward or looping compression pointer")
            off = run_start = target
            continue
        if size > 63:
            raise ValueError("unknown label type")
        label = data[off : off + size + 1]
        if len(label) != size + 1:
            raise ValueError("label runs past the packet")
        total += size + 1
        if total > 255:
            raise ValueError("name longer than 255 bytes")
        parts.append(label)
        off += size + 1
    if end < 0:
        end = off
    # Length bytes are <= 63, below b"A", so lower() only touches label characters.
    return b"".join(parts).lower() + b"\x00", end


def _escape_label(label: bytes) -> bytes:
    return b"".join(bytes((c,)) if c in _SAFE else b"\\%03d" % c for c in label)


def _wire_to_text(wire: bytes) -> str:
    """Presentation form without trailing dot; odd bytes (and dots inside labels) escaped."""
    labels: list[bytes] = []
    off = 0
    size = wire[0]
    while size:
        label = wire[off + 1 : off + 1 + size]
        if label.translate(None, _SAFE):
            # A dot or space inside a label must not read as a label boundary later on.
            label = _escape_label(label)
        labels.append(label)
        off += size + 1
        size = wire[off]
    if not labels:
        return "."
    return b".".join(labels).decode("ascii")


# ---------------------------------------------------------------------------------------
# Responses


def _clamp(ttl: int, max_ttl: int) -> int:
    # RFC 2181 section 8: a TTL with the top bit set is treated as zero.
    if ttl > 0x7FFFFFFF:
        return 0
    return ttl if ttl < max_ttl else max_ttl


def parse_answer(
    data: bytes, qname: bytes, qend: int, rdtype: int, negative_ttl: int, max_ttl: int
) -> LookupResult | None:
    """Turn a response whose header and question already matched into a result.

    ``None`` means "no useful answer" (SERVFAIL, REFUSED, other rcodes, chain too long);
    malformed packets raise (IndexError, struct.error or ValueError).
    """
    rcode = data[3] & 0x0F
    if rcode != 0 and rcode != 3:
        return None
    ancount = (data[6] << 8) | data[7]
    size = len(data)
    off = qend
    found: dict[bytes, list[tuple[int, int, int]]] = {}
    cnames: dict[bytes, tuple[int, int, int]] = {}
    for _ in range(ancount):
        if data[off] == 0xC0 and data[off + 1] == 12:
            # Fast path: the owner is a pointer to the question name (the usual case).
            owner = qname
            off += 2
        else:
            owner, off = _read_name(data, off)
        rtype, rclass, ttl, rdlen = _RR.unpack_from(data, off)
        rdata = off + 10
        off = rdata + rdlen
        if off > size:
            raise ValueError("RDATA runs past the packet")
        if rclass != 1:
            continue
        if rtype == rdtype:
            rrs = found.get(owner)
            if rrs is None:
                found[owner] = [(rdata, rdlen, ttl)]
            else:
                rrs.append((rdata, rdlen, ttl))
        elif rtype == _CNAME:
            cnames[owner] = (rdata, rdlen, ttl)

    ttl_used = max_ttl
    name = qname
    rrs = found.get(name)
    steps = 0
    while rrs is None:
        cname = cnames.get(name)
        if cname is None:
            break
        steps += 1
        if steps > _MAX_CHAIN:
            return None
        rdata, rdlen, ttl = cname
        name, end = _read_name(data, rdata)
        if end != rdata + rdlen:
            raise ValueError("CNAME RDATA length mismatch")
        ttl_used = min(ttl_used, _clamp(ttl, max_ttl))
        rrs = found.get(name)

    if rcode == 0 and rrs is not None:
        values: list[str] = []
        for rdata, rdlen, ttl in rrs:
            ttl_used = min(ttl_used, _clamp(ttl, max_ttl))
            if rdtype == A:
                if rdlen != 4:
                    raise ValueError("A RDATA is not 4 bytes")
                values.append(socket.inet_ntoa(data[rdata : rdata + 4]))
            elif rdtype == AAAA:
                if rdlen != 16:
                    raise ValueError("AAAA RDATA is not 16 bytes")
                values.append(str(ipaddress.IPv6Address(data[rdata : rdata + 16])))
            else:
                target, end = _read_name(data, rdata)
                if end != rdata + rdlen:
                    raise ValueError("PTR RDATA length mismatch")
                values.append(_wire_to_text(target))
        if len(values) > 1:
            values = list(dict.fromkeys(values))
        return LookupResult(LookupStatus.OK, tuple(values), ttl_used)

    status = LookupStatus.NXDOMAIN if rcode == 3 else LookupStatus.NODATA
    return LookupResult(status, (), _negative_ttl(data, off, negative_ttl, max_ttl))


def _negative_ttl(data: bytes, off: int, default: int, max_ttl: int) -> int:
    """RFC 2308: min(SOA TTL, SOA MINIMUM) of the first SOA in AUTHORITY."""
    nscount = (data[8] << 8) | data[9]
    size = len(data)
    for _ in range(nscount):
        off = skip_name(data, off)
        rtype, _rclass, ttl, rdlen = _RR.unpack_from(data, off)
        rdata = off + 10
        off = rdata + rdlen
        if off > size:
            raise ValueError("RDATA runs past the packet")
        if rtype == _SOA:
            fixed = skip_name(data, skip_name(data, rdata))
            if fixed + 20 != off:
                raise ValueError("SOA RDATA length mismatch")
            (minimum,) = _U32.unpack_from(data, fixed + 16)
            return min(_clamp(ttl, max_ttl), _clamp(minimum, max_ttl))
    return min(default, max_ttl)


def answers_question(data: bytes, qid: int, question: bytes) -> bool:
    """Header id, QR=1, opcode QUERY, exactly one question equal (case-insensitively) to
    ``question`` (lower-cased)."""
    return (
        len(data) >= 12
        and ((data[0] << 8) | data[1]) == qid
        and (data[2] & 0xF8) == 0x80
        and data[4] == 0
        and data[5] == 1
        and data[12 : 12 + len(question)].lower() == question
    )


# 0x20 at the octets that are ASCII letters, 0 elsewhere (a label's length is at most 63: never one).
_LETTERS = bytes(0x20 if 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A else 0 for c in range(256))


def mix_case(qwire: bytes, noise: bytes) -> bytes:
    """``qwire`` with the case of each letter flipped where ``noise`` (as long) has bit 0x20:
    DNS 0x20, the bits of a question a spoofer must guess besides the id and the port."""
    flips = int.from_bytes(qwire.translate(_LETTERS), "big") & int.from_bytes(noise, "big")
    return (int.from_bytes(qwire, "big") ^ flips).to_bytes(len(qwire), "big")


def query_body(qwire: bytes, rdtype: int) -> tuple[bytes, bytes]:
    """(the query after its 2-octet id, the question as answers must echo it, lower-cased)."""
    qtail = qwire + rdtype.to_bytes(2, "big") + b"\x00\x01"
    return QUERY_HEADER_TAIL + qtail + QUERY_OPT_RR, qtail.lower()
