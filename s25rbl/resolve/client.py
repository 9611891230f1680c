"""A minimal asyncio DNS stub client for PTR/A/AAAA lookups against recursive upstreams.

Packets are built and parsed by hand because per-lookup client CPU limits fresh verdicts.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import os
import socket
import struct
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from s25rbl.dns.wire import encode_labels, skip_name

__all__ = [
    "AAAA",
    "PTR",
    "A",
    "LookupResult",
    "LookupStatus",
    "Resolver",
    "StubResolver",
    "reverse_name",
]

PTR, A, AAAA = 12, 1, 28
_CNAME, _SOA = 5, 6
_SUPPORTED = frozenset((PTR, A, AAAA))


class LookupStatus(enum.Enum):
    OK = "ok"
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"
    # REFUSED, FORMERR, NOTIMP and malformed answers from upstream all map to SERVFAIL.
    SERVFAIL = "servfail"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class LookupResult:
    status: LookupStatus
    # PTR: target names, lower case, no trailing dot; A/AAAA: ipaddress-normalised addresses.
    values: tuple[str, ...]
    # OK: min TTL of the answer RRs used (CNAMEs included); NXDOMAIN/NODATA: negative TTL
    # from the SOA in AUTHORITY, else the configured default; SERVFAIL/TIMEOUT: 0.
    ttl: int


class Resolver(typing.Protocol):
    async def lookup(self, name: str, rdtype: int) -> LookupResult: ...

    async def close(self) -> None: ...


_TIMEOUT = LookupResult(LookupStatus.TIMEOUT, (), 0)
_SERVFAIL = LookupResult(LookupStatus.SERVFAIL, (), 0)

_MAX_CHAIN = 8
# Flags RD=1; one question; no answer/authority; one additional record (the OPT RR).
_HEADER_TAIL = b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01"
# EDNS0 OPT RR: root owner, TYPE 41, CLASS = 1232-byte UDP payload, TTL 0, empty RDATA.
# 1232 avoids IP fragmentation (DNS flag day 2020) while leaving room for big PTR sets.
_OPT_RR = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"
_RR = struct.Struct("!HHIH")
_U32 = struct.Struct("!I")
# Bytes that may appear unescaped in a presentation-format label.
_SAFE = bytes(range(0x21, 0x7F)).replace(b".", b"").replace(b"\\", b"")


class _MalformedError(ValueError):
    """An upstream packet that cannot be parsed; the attempt counts as SERVFAIL."""


def reverse_name(ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """Return the in-addr.arpa / ip6.arpa name of ``ip`` without a trailing dot."""
    addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    return addr.reverse_pointer


# ---------------------------------------------------------------------------------------
# Names


def _encode_name(name: str) -> bytes:
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
                raise _MalformedError("forward or looping compression pointer")
            off = run_start = target
            continue
        if size > 63:
            raise _MalformedError("unknown label type")
        label = data[off : off + size + 1]
        if len(label) != size + 1:
            raise _MalformedError("label runs past the packet")
        total += size + 1
        if total > 255:
            raise _MalformedError("name longer than 255 bytes")
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


def _parse(
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
            raise _MalformedError("RDATA runs past the packet")
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
            raise _MalformedError("CNAME RDATA length mismatch")
        ttl_used = min(ttl_used, _clamp(ttl, max_ttl))
        rrs = found.get(name)

    if rcode == 0 and rrs is not None:
        values: list[str] = []
        for rdata, rdlen, ttl in rrs:
            ttl_used = min(ttl_used, _clamp(ttl, max_ttl))
            if rdtype == A:
                if rdlen != 4:
                    raise _MalformedError("A RDATA is not 4 bytes")
                values.append(socket.inet_ntoa(data[rdata : rdata + 4]))
            elif rdtype == AAAA:
                if rdlen != 16:
                    raise _MalformedError("AAAA RDATA is not 16 bytes")
                values.append(str(ipaddress.IPv6Address(data[rdata : rdata + 16])))
            else:
                target, end = _read_name(data, rdata)
                if end != rdata + rdlen:
                    raise _MalformedError("PTR RDATA length mismatch")
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
            raise _MalformedError("RDATA runs past the packet")
        if rtype == _SOA:
            fixed = skip_name(data, skip_name(data, rdata))
            if fixed + 20 != off:
                raise _MalformedError("SOA RDATA length mismatch")
            (minimum,) = _U32.unpack_from(data, fixed + 16)
            return min(_clamp(ttl, max_ttl), _clamp(minimum, max_ttl))
    return min(default, max_ttl)


def _matches(data: bytes, qid: int, question: bytes) -> bool:
    """Header id, QR=1, opcode QUERY, exactly one question equal (case-insensitively)."""
    return (
        len(data) >= 12
        and ((data[0] << 8) | data[1]) == qid
        and (data[2] & 0xF8) == 0x80
        and data[4] == 0
        and data[5] == 1
        and data[12 : 12 + len(question)].lower() == question
    )


# ---------------------------------------------------------------------------------------
# Transport

_Pending: typing.TypeAlias = "tuple[asyncio.Future[bytes | None], bytes]"


class _IdSource:
    """Unpredictable 16-bit query ids; os.urandom is called once per 4096 ids."""

    __slots__ = ("_ids",)

    def __init__(self) -> None:
        self._ids: Iterator[int] = iter(())

    def next(self) -> int:
        for qid in self._ids:
            return qid
        self._ids = iter(memoryview(os.urandom(8192)).cast("H").tolist())
        return next(self._ids)


class _UdpProtocol(asyncio.DatagramProtocol):
    """One connected UDP socket; the kernel already drops datagrams from other sources."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: dict[int, _Pending] = {}
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | typing.Any, int]) -> None:
        # Anything that is not the answer to an outstanding question is dropped silently:
        # that is the anti-spoofing rule, and a hostile packet must never break the socket.
        try:
            if len(data) < 12:
                return
            qid = (data[0] << 8) | data[1]
            entry = self.pending.get(qid)
            if entry is None or not _matches(data, qid, entry[1]):
                return
            del self.pending[qid]
            fut = entry[0]
            if not fut.done():
                fut.set_result(data)
        except Exception:
            return

    def error_received(self, exc: Exception) -> None:
        # ICMP errors on a connected socket cannot be tied to one query; the per-attempt
        # timer moves the lookup on to the next upstream.
        return

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.fail_all()

    def fail_all(self) -> None:
        pending, self.pending = self.pending, {}
        for fut, _question in pending.values():
            if not fut.done():
                fut.set_result(None)


def _expire(fut: asyncio.Future[bytes | None]) -> None:
    if not fut.done():
        fut.set_result(None)


class StubResolver:
    """Resolver that sends queries straight to recursive upstreams over UDP (TCP on TC=1).

    Sockets are created lazily in the running loop on first use; use one instance per loop.
    """

    def __init__(
        self,
        upstreams: Sequence[tuple[str, int]],
        *,
        timeout: float = 1.0,
        attempts: int = 2,
        sockets: int = 8,
        negative_ttl: int = 60,
        max_ttl: int = 86400,
    ) -> None:
        if not upstreams:
            raise ValueError("at least one upstream is required")
        if timeout <= 0 or attempts < 1 or sockets < 1:
            raise ValueError("timeout must be > 0, attempts and sockets >= 1")
        self._upstreams = [(str(host), int(port)) for host, port in upstreams]
        self._timeout = float(timeout)
        self._attempts = int(attempts)
        self._sockets = int(sockets)
        self._negative_ttl = int(negative_ttl)
        self._max_ttl = int(max_ttl)
        self._pools: list[list[_UdpProtocol] | None] = [None] * len(self._upstreams)
        self._creating: list[asyncio.Task[list[_UdpProtocol]] | None] = [None] * len(self._upstreams)
        self._next_socket = 0
        self._ids = _IdSource()
        self._tcp_writers: set[asyncio.StreamWriter] = set()
        self._closed = False

    async def lookup(self, name: str, rdtype: int) -> LookupResult:
        if rdtype not in _SUPPORTED:
            raise ValueError(f"unsupported query type {rdtype}")
        qwire = _encode_name(name)
        if self._closed:
            return _TIMEOUT
        qtail = qwire + rdtype.to_bytes(2, "big") + b"\x00\x01"
        question = qtail.lower()
        qname = question[:-4]
        body = _HEADER_TAIL + qtail + _OPT_RR
        qend = 12 + len(question)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        attempts = self._attempts
        upstreams = len(self._upstreams)
        failed = False
        # Queries of earlier attempts stay registered until the lookup ends, so a slow but
        # working upstream whose answer arrives during a later attempt still counts.
        outstanding: list[tuple[dict[int, _Pending], int]] = []
        entry: _Pending | None = None
        try:
            for attempt in range(attempts):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                index = attempt % upstreams
                pool = self._pools[index]
                if pool is None:
                    pool = await self._open_pool(index)
                    if self._closed:
                        return _TIMEOUT
                    if pool is None:
                        failed = True
                        continue
                proto = pool[self._next_socket % len(pool)]
                self._next_socket += 1
                transport = proto.transport
                if proto.closed or transport is None:
                    self._drop_pool(index, pool)
                    failed = True
                    continue

                pending = proto.pending
                qid = self._ids.next()
                while qid in pending:
                    qid = self._ids.next()
                # The whole lookup is bounded by `timeout`; each attempt gets an equal share
                # of what is left, so an early SERVFAIL leaves more time for the next one.
                attempt_end = loop.time() + remaining / (attempts - attempt)
                sent = False
                while True:
                    fut: asyncio.Future[bytes | None] = loop.create_future()
                    previous, entry = entry, (fut, question)
                    if previous is not None:
                        for earlier, earlier_id in outstanding:
                            if earlier.get(earlier_id) is previous:
                                earlier[earlier_id] = entry
                    if not sent:
                        pending[qid] = entry
                        outstanding.append((pending, qid))
                    timer = loop.call_at(attempt_end, _expire, fut)
                    try:
                        if not sent:
                            sent = True
                            transport.sendto(qid.to_bytes(2, "big") + body)
                        data = await fut
                    finally:
                        timer.cancel()
                    if self._closed:
                        return _TIMEOUT
                    if data is None:
                        break
                    if data[2] & 0x02:
                        # Truncated: the records may be incomplete, so ask again over TCP.
                        tcp = await self._tcp_query(index, body, question, deadline - loop.time())
                        if self._closed:
                            return _TIMEOUT
                        if tcp is None:
                            break
                        data = tcp
                    try:
                        result = _parse(data, qname, qend, rdtype, self._negative_ttl, self._max_ttl)
                    except (IndexError, ValueError, struct.error):
                        result = None
                    if result is not None:
                        return result
                    failed = True
                    # A late failure from an earlier upstream must not cut this attempt short.
                    if pending.get(qid) is not entry or loop.time() >= attempt_end:
                        break
            return _SERVFAIL if failed else _TIMEOUT
        finally:
            # Identity check: an answered id may already belong to another lookup.
            for earlier, earlier_id in outstanding:
                if earlier.get(earlier_id) is entry:
                    del earlier[earlier_id]

    async def _tcp_query(self, index: int, body: bytes, question: bytes, budget: float) -> bytes | None:
        """One query over a fresh TCP connection (RFC 7766 framing).

        Returns the response, ``None`` on timeout, or ``b""`` (parses as malformed, so the
        attempt counts as SERVFAIL) when the connection fails or the answer does not match.
        """
        if budget <= 0:
            return None
        host, port = self._upstreams[index]
        qid = self._ids.next()
        packet = qid.to_bytes(2, "big") + body
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(budget):
                reader, writer = await asyncio.open_connection(host, port)
                self._tcp_writers.add(writer)
                writer.write(len(packet).to_bytes(2, "big") + packet)
                size = int.from_bytes(await reader.readexactly(2), "big")
                data = await reader.readexactly(size)
        except TimeoutError:
            return None
        except (OSError, asyncio.IncompleteReadError):
            return b""
        finally:
            if writer is not None:
                self._tcp_writers.discard(writer)
                writer.close()
        return data if _matches(data, qid, question) else b""

    async def _open_pool(self, index: int) -> list[_UdpProtocol] | None:
        task = self._creating[index]
        if task is None:
            task = asyncio.get_running_loop().create_task(self._create_pool(index))
            task.add_done_callback(self._pool_created)
            self._creating[index] = task
        try:
            # Shielded: one cancelled lookup must not cancel the pool others wait for.
            await asyncio.shield(task)
        except Exception:
            # Unreachable or invalid upstream: this attempt fails, a later lookup retries.
            return None
        return self._pools[index]

    def _pool_created(self, task: asyncio.Task[list[_UdpProtocol]]) -> None:
        # Runs even when every waiting lookup was cancelled, so a finished pool is never
        # orphaned; after close() it is closed at once instead of installed.
        index = self._creating.index(task) if task in self._creating else -1
        if index >= 0:
            self._creating[index] = None
        if task.cancelled() or task.exception() is not None:
            return
        pool = task.result()
        if self._closed or index < 0:
            for proto in pool:
                if proto.transport is not None:
                    proto.transport.close()
            return
        self._pools[index] = pool

    async def _create_pool(self, index: int) -> list[_UdpProtocol]:
        loop = asyncio.get_running_loop()
        remote = self._upstreams[index]
        pool: list[_UdpProtocol] = []
        try:
            for _ in range(self._sockets):
                # Each socket is bound to its own OS-chosen ephemeral port: a spoofer has to
                # guess the port as well as the 16-bit id.
                _transport, proto = await loop.create_datagram_endpoint(_UdpProtocol, remote_addr=remote)
                pool.append(proto)
        except BaseException:
            for proto in pool:
                if proto.transport is not None:
                    proto.transport.close()
            raise
        return pool

    def _drop_pool(self, index: int, pool: list[_UdpProtocol]) -> None:
        """Close a pool with a dead socket; its queries move on and a new pool is made."""
        if self._pools[index] is pool:
            self._pools[index] = None
        for proto in pool:
            proto.fail_all()
            if proto.transport is not None:
                proto.transport.close()

    async def close(self) -> None:
        """Close every socket; outstanding lookups return TIMEOUT."""
        self._closed = True
        for index, pool in enumerate(self._pools):
            if pool is not None:
                self._drop_pool(index, pool)
        for writer in list(self._tcp_writers):
            writer.close()
        self._tcp_writers.clear()
