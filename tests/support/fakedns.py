"""A small authoritative DNS server that stands in for "the internet's DNS" in tests.

The server under test does PTR / A / AAAA lookups against an upstream; tests point it at a
``FakeAuthority`` on 127.0.0.1 and script the data (``add_host``, ``add_ptr``, ``add_cname``)
and failures (``behave``). It answers like a recursive resolver does to a stub: AA and RA
set, CNAME chains followed within its data, NXDOMAIN / NODATA with an SOA for negative
caching. UDP and TCP share one ephemeral port, as a real upstream's do.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
import threading
from types import TracebackType
from typing import Literal, Self, cast

from dnslib import AAAA, CNAME, EDNS0, PTR, QTYPE, RCODE, RR, SOA, A, DNSHeader, DNSLabel, DNSRecord

__all__ = ["MODES", "FakeAuthority", "Mode"]

Mode = Literal["timeout", "servfail", "refused", "nxdomain", "truncate"]
MODES: frozenset[str] = frozenset(("timeout", "servfail", "refused", "nxdomain", "truncate"))
Transport = Literal["udp", "tcp"]

# Negative answers carry this SOA; minimum and TTL 60 keep negative caching short but real.
_SOA_TTL = 60
_SOA_RDATA = SOA("ns.fake.test.", "hostmaster.fake.test.", (1, 3600, 600, 86400, 60))
# A recursive resolver gives up on long or looping CNAME chains; so do we.
_MAX_CHAIN = 8
# Without EDNS0 a UDP answer must fit the classic 512 octets (RFC 1035 4.2.1).
_PLAIN_UDP_LIMIT = 512
_OUR_EDNS_SIZE = 1232
_LENGTH = struct.Struct("!H")


def _norm(name: str | DNSLabel) -> str:
    """Compare names case-insensitively and without the trailing dot."""
    return str(name).strip().lower().rstrip(".")


def _ip_or_none(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _reverse(ip: str) -> str:
    """The in-addr.arpa / ip6.arpa name of ``ip``, without the trailing dot."""
    return ipaddress.ip_address(ip).reverse_pointer


class FakeAuthority:
    """A scriptable DNS server on 127.0.0.1, UDP and TCP on one port, in a daemon thread.

    All data methods are thread-safe and may be called before or after ``start()``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._wanted_port = port  # 0: a free port, chosen at each start()
        self._lock = threading.Lock()
        # name -> qtype number -> (rdata, ttl) in insertion order.
        self._records: dict[str, dict[int, list[tuple[object, int]]]] = {}
        # alias -> (target, ttl)
        self._cnames: dict[str, tuple[str, int]] = {}
        self._modes: dict[str, Mode] = {}
        self._queries: list[tuple[str, str, Transport]] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # ----------------------------------------------------------------- data API

    def add_host(self, name: str, *addresses: str, ttl: int = 300) -> Self:
        """Add A (IPv4) or AAAA (IPv6) records for ``name``, chosen by each address's family."""
        key = _norm(name)
        with self._lock:
            for address in addresses:
                ip = ipaddress.ip_address(address)
                rtype, rdata = (QTYPE.A, A(str(ip))) if ip.version == 4 else (QTYPE.AAAA, AAAA(str(ip)))
                self._records.setdefault(key, {}).setdefault(rtype, []).append((rdata, ttl))
        return self

    def add_ptr(self, ip: str, *names: str, ttl: int = 300) -> Self:
        """Add PTR records pointing at ``names`` on the reverse name of ``ip``."""
        key = _reverse(ip)
        with self._lock:
            rrs = self._records.setdefault(key, {}).setdefault(QTYPE.PTR, [])
            rrs.extend((PTR(_norm(n) + "."), ttl) for n in names)
        return self

    def add_cname(self, name: str, target: str, ttl: int = 300) -> Self:
        """Make ``name`` an alias of ``target`` (replacing any earlier alias)."""
        with self._lock:
            self._cnames[_norm(name)] = (_norm(target), ttl)
        return self

    def behave(self, name: str, mode: Mode) -> Self:
        """Make queries for ``name`` (or, for an IP, its reverse name) fail in ``mode``."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {sorted(MODES)}")
        key = _reverse(name) if _ip_or_none(name) is not None else _norm(name)
        with self._lock:
            self._modes[key] = mode
        return self

    def clear(self) -> None:
        """Forget all records, aliases, behaviours and the query log."""
        with self._lock:
            self._records.clear()
            self._cnames.clear()
            self._modes.clear()
            self._queries.clear()

    @property
    def queries(self) -> list[tuple[str, str, Transport]]:
        """A snapshot of (qname, qtype, transport) for every query received, oldest first."""
        with self._lock:
            return list(self._queries)

    def reset_log(self) -> None:
        """Empty the query log (e.g. after warming a cache)."""
        with self._lock:
            self._queries.clear()

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> tuple[str, int]:
        """Bind UDP and TCP on one port (ephemeral unless given), start serving, return (host, port)."""
        if self._thread is not None:
            raise RuntimeError("already started")
        udp, tcp = self._bind_pair()
        self.port = udp.getsockname()[1]
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(
            target=self._run, args=(udp, tcp), name=f"fakedns-{self.port}", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError("fake DNS server failed to start") from self._error
        return self.host, self.port

    def stop(self) -> None:
        """Close every socket and connection and join the server thread; idempotent."""
        thread, loop, stopped = self._thread, self._loop, self._stopped
        if thread is None:
            return
        if loop is not None and stopped is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stopped.set)
        thread.join(timeout=10)
        self._thread = None
        self._stopped = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _bind_pair(self) -> tuple[socket.socket, socket.socket]:
        # The kernel picks a free UDP port; the same TCP port may be taken, so try again.
        # A port given by the caller (53, to stand in for resolv.conf's resolver) is tried once.
        last: OSError | None = None
        for _ in range(1 if self._wanted_port else 50):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((self.host, self._wanted_port))
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                tcp.bind((self.host, udp.getsockname()[1]))
                tcp.listen(16)
            except OSError as err:
                last = err
                tcp.close()
                udp.close()
                continue
            udp.setblocking(False)
            tcp.setblocking(False)
            return udp, tcp
        raise OSError("no port free for both UDP and TCP") from last

    def _run(self, udp: socket.socket, tcp: socket.socket) -> None:
        # A private loop in a private thread: works the same under sync and async tests.
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(udp, tcp))
        except BaseException as err:  # reported to start() if it happens before ready
            self._error = err
        finally:
            udp.close()
            tcp.close()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._loop = None
            self._ready.set()

    async def _serve(self, udp: socket.socket, tcp: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        conns: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            conns[task] = writer
            try:
                await self._tcp_session(reader, writer)
            finally:
                conns.pop(task, None)

        transport, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), sock=udp)
        server = await asyncio.start_server(on_connect, sock=tcp)
        self._ready.set()
        try:
            await self._stopped.wait()
        finally:
            transport.close()
            server.close()
            # Server.close() leaves accepted connections open before 3.13; end them here.
            # Closing (not cancelling) lets each session see EOF and return: on 3.11 a
            # cancelled stream handler task is logged as an error by asyncio.
            for writer in list(conns.values()):
                writer.close()
            if conns:
                _, pending = await asyncio.wait(list(conns), timeout=5)
                for task in pending:
                    task.cancel()
            await server.wait_closed()

    async def _tcp_session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # RFC 7766: any number of length-prefixed queries on one connection, answered in order.
        try:
            while True:
                try:
                    (length,) = _LENGTH.unpack(await reader.readexactly(2))
                    wire = await reader.readexactly(length)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                answer = self.handle(wire, "tcp")
                if answer is not None:
                    writer.write(_LENGTH.pack(len(answer)) + answer)
                    await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # ----------------------------------------------------------------- answers

    def handle(self, wire: bytes, transport: Transport) -> bytes | None:
        """The packed answer to one query, or None to stay silent."""
        try:
            request = DNSRecord.parse(wire)
        except Exception:
            return None  # garbage: a real server would drop it too
        if request.header.qr or len(request.questions) != 1:
            return None
        question = request.q
        qname = _norm(question.qname)
        with self._lock:
            self._queries.append((qname, QTYPE.get(question.qtype), transport))
            mode = self._modes.get(qname)
            if mode == "timeout":
                return None
            reply = self._answer(request, mode, transport)
        return self._fit(request, reply, transport)

    def _answer(self, request: DNSRecord, mode: Mode | None, transport: Transport) -> DNSRecord:
        # Caller holds the lock.
        header = DNSHeader(
            id=request.header.id, qr=1, aa=1, ra=1, rd=request.header.rd, opcode=request.header.opcode
        )
        # The question object itself is reused so it is echoed exactly (0x20 case kept).
        reply = DNSRecord(header, q=request.q)
        if any(rr.rtype == QTYPE.OPT for rr in request.ar):
            reply.add_ar(EDNS0(udp_len=_OUR_EDNS_SIZE))
        if mode == "servfail":
            header.rcode = RCODE.SERVFAIL
            header.aa = 0
            return reply
        if mode == "refused":
            header.rcode = RCODE.REFUSED
            header.aa = 0
            return reply
        if mode == "nxdomain":
            return self._negative(reply, RCODE.NXDOMAIN)
        if mode == "truncate" and transport == "udp":
            header.tc = 1
            return reply

        qtype = request.q.qtype
        name = _norm(request.q.qname)
        seen: set[str] = set()
        # Follow CNAMEs like a recursive resolver would, adding each alias to ANSWER.
        while name in self._cnames and qtype != QTYPE.CNAME:
            if name in seen or len(seen) >= _MAX_CHAIN:
                header.rcode = RCODE.SERVFAIL
                header.aa = 0
                reply.rr = []
                return reply
            seen.add(name)
            target, ttl = self._cnames[name]
            reply.add_answer(RR(name + ".", QTYPE.CNAME, rdata=CNAME(target + "."), ttl=ttl))
            name = target
        if qtype == QTYPE.CNAME and name in self._cnames:
            target, ttl = self._cnames[name]
            reply.add_answer(RR(name + ".", QTYPE.CNAME, rdata=CNAME(target + "."), ttl=ttl))
            return reply

        types = self._records.get(name, {})
        wanted = list(types) if qtype == QTYPE.ANY else [qtype]
        found = [(rtype, rdata, ttl) for rtype in wanted for rdata, ttl in types.get(rtype, ())]
        for rtype, rdata, ttl in found:
            reply.add_answer(RR(name + ".", rtype, rdata=rdata, ttl=ttl))
        if found:
            return reply
        # Negative answers at the end of a chain keep the CNAMEs, as a recursive resolver's do.
        if self._exists(name):
            return self._negative(reply, RCODE.NOERROR)
        return self._negative(reply, RCODE.NXDOMAIN)

    def _exists(self, name: str) -> bool:
        # A name with data, an alias, or data below it (an empty non-terminal) exists.
        if name in self._records or name in self._cnames:
            return True
        suffix = "." + name
        return any(k.endswith(suffix) for k in (*self._records, *self._cnames))

    @staticmethod
    def _negative(reply: DNSRecord, rcode: int) -> DNSRecord:
        # The SOA at the root is an ancestor of every name, so any stub accepts it for
        # RFC 2308 negative caching (TTL = min(SOA TTL, minimum) = 60).
        reply.header.rcode = rcode
        reply.add_auth(RR(".", QTYPE.SOA, rdata=_SOA_RDATA, ttl=_SOA_TTL))
        return reply

    @staticmethod
    def _fit(request: DNSRecord, reply: DNSRecord, transport: Transport) -> bytes:
        packed: bytes = reply.pack()
        if transport == "tcp":
            return packed
        limit = _PLAIN_UDP_LIMIT
        for rr in request.ar:
            if rr.rtype == QTYPE.OPT:
                limit = max(_PLAIN_UDP_LIMIT, min(int(rr.rclass), _OUR_EDNS_SIZE))
        if len(packed) <= limit:
            return packed
        # Too big for the client's UDP buffer: an empty answer with TC=1 sends it to TCP.
        reply.rr, reply.auth = [], []
        reply.ar = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]
        reply.header.tc = 1
        truncated: bytes = reply.pack()
        return truncated


class _UdpProtocol(asyncio.DatagramProtocol):
    """Hands each datagram to the authority and sends back its answer, if any."""

    def __init__(self, authority: FakeAuthority) -> None:
        self._authority = authority
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector transport is not a registered DatagramTransport subclass; it is one.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, int]) -> None:
        answer = self._authority.handle(data, "udp")
        if answer is not None and self._transport is not None:
            self._transport.sendto(answer, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a client that went away: nothing to do.
        pass
