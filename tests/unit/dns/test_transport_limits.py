"""The listeners under abuse, on real loopback sockets in this process: TCP clients that never
read, trickle bytes, hold every connection or end a pipeline with garbage; UDP bursts."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator

import dnslib
import pytest

from s25rbl.config import Endpoint
from s25rbl.dns.answers import AnswerSettings
from s25rbl.dns.handler import Responder
from s25rbl.dns.tcp import WRITE_HIGH, TcpLimits
from s25rbl.dns.transport import Listeners, set_receive_buffer
from s25rbl.dns.zones import ZoneKind, ZoneTable
from s25rbl.resolve.rdns import ReverseLookup
from s25rbl.verdict.lists import ListIndex
from s25rbl.verdict.pipeline import VerdictEngine
from tests.unit.fakes import DictResolver

BL = "bl.example"
SLOW = "203.0.113.7"  # its lookup takes SLOW_DELAY (PTR, then A)
SLOW_DELAY = 0.2
FAST = f"2.0.0.127.{BL}"  # the RFC 5782 test entry: answered from memory


def make_responder() -> Responder:
    resolver = DictResolver()
    resolver.delay = SLOW_DELAY / 2
    resolver.ptr(SLOW, "p1234-ipad12.tokyo.ocn.ne.jp").host("p1234-ipad12.tokyo.ocn.ne.jp", SLOW)
    index = ListIndex.build([], version=1)
    engine = VerdictEngine(lambda: index, ReverseLookup(resolver, deadline=5.0))
    zones = ZoneTable([(BL, ZoneKind.BLOCKLIST)])
    return Responder(zones, engine, AnswerSettings(nameservers=("ns1.example",), hostmaster="h.example"))


@contextlib.asynccontextmanager
async def listening(limits: TcpLimits, receive_buffer: int = 0) -> AsyncIterator[Listeners]:
    listeners = Listeners(make_responder(), (Endpoint("127.0.0.1", 0),), limits, receive_buffer)
    await listeners.start()
    try:
        yield listeners
    finally:
        await listeners.stop()


def query(name: str, qid: int = 1) -> bytes:
    q = dnslib.DNSRecord.question(name, "A")
    q.header.id = qid
    return bytes(q.pack())


def slow_name() -> str:
    return ipaddress.ip_address(SLOW).reverse_pointer.removesuffix(".in-addr.arpa") + "." + BL


def frame(message: bytes) -> bytes:
    return struct.pack("!H", len(message)) + message


def connect(port: int, source: str = "127.0.0.1", rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def read_answers(sock: socket.socket) -> list[dnslib.DNSRecord]:
    """Every framed answer until the server closes the connection."""
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    answers = []
    while len(data) >= 2:
        (length,) = struct.unpack_from("!H", data)
        answers.append(dnslib.DNSRecord.parse(data[2 : 2 + length]))
        data = data[2 + length :]
    return answers


def closed_by_server(sock: socket.socket, within: float = 10) -> bool:
    """True once the server closed the connection (EOF or reset); False if it is still open
    after ``within`` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError("closed by the server")
        data += chunk
    return data


def still_served(sock: socket.socket, qid: int = 77) -> bool:
    """The connection answers a new query (answers to earlier ones may come first)."""
    try:
        sock.sendall(frame(query(FAST, qid)))
        sock.settimeout(5)
        for _ in range(4):
            (length,) = struct.unpack("!H", recv_exactly(sock, 2))
            if dnslib.DNSRecord.parse(recv_exactly(sock, length)).header.id == qid:
                return True
    except OSError:
        return False
    return False


def port_of(listeners: Listeners) -> int:
    return listeners.bound[0].port


# --- write backpressure ---------------------------------------------------------------------


def pipeline_without_reading(port: int, total: int) -> tuple[int, socket.socket]:
    """Send up to ``total`` octets of pipelined queries, never reading; stop when the server
    stops taking them. The octets sent, and the socket (still open, still not read)."""
    sock = connect(port, rcvbuf=4096)
    sock.settimeout(0.5)
    batch = frame(query(FAST)) * 1000
    sent = 0
    try:
        while sent < total:
            sent += sock.send(batch)
    except (TimeoutError, OSError):
        pass
    return sent, sock


async def test_a_client_that_never_reads_holds_a_bounded_buffer_and_is_dropped() -> None:
    async with listening(TcpLimits(idle_timeout=0.5)) as listeners:
        assert listeners.tcp is not None
        tcp, counts = listeners.tcp, listeners._responder.counts
        sending = asyncio.ensure_future(
            asyncio.to_thread(pipeline_without_reading, port_of(listeners), 8_000_000)
        )
        most_buffered = 0
        for _ in range(1000):  # the server answers until the client's buffers are full, then ...
            for conn in list(tcp.connections):
                if conn._transport is not None:
                    most_buffered = max(most_buffered, conn._transport.get_write_buffer_size())
            if sending.done() and sum(counts.values()) > 2000 and not tcp.connections:
                break
            await asyncio.sleep(0.01)
        sent, client = await sending
        assert sent > 500_000  # it did pipeline a lot (into the kernel's buffers, at least)
        assert sum(counts.values()) > 2000
        # ... it stopped taking queries rather than buffer their answers, and then dropped
        # the client, which does not drain, and everything it held.
        assert most_buffered <= 2 * WRITE_HIGH
        assert not tcp.connections and not tcp.live
        client.close()


# --- time and room --------------------------------------------------------------------------


def trickle(port: int) -> bool:
    """A frame of 100 octets announced, then one octet every 0.1 s: closed by the server?"""
    sock = connect(port)
    sock.sendall(b"\x00\x64")
    try:
        for _ in range(100):
            time.sleep(0.1)
            sock.send(b"\x00")
    except OSError:
        return True  # the server closed it
    finally:
        sock.close()
    return False


async def test_a_trickle_of_bytes_does_not_keep_a_connection() -> None:
    async with listening(TcpLimits(idle_timeout=0.5)) as listeners:
        assert await asyncio.to_thread(trickle, port_of(listeners))


def hold(port: int, sources: list[str]) -> list[socket.socket]:
    socks = []
    for source in sources:
        socks.append(connect(port, source))
        time.sleep(0.05)  # in order: the server sees the first as the oldest
    return socks


async def test_one_prefix_holds_at_most_its_share_of_connections() -> None:
    async with listening(TcpLimits(idle_timeout=30, max_per_prefix=3)) as listeners:
        port = port_of(listeners)
        mine = await asyncio.to_thread(hold, port, ["127.0.0.1"] * 3 + ["127.0.0.2"] * 3)
        other = await asyncio.to_thread(hold, port, ["127.0.9.1"])
        # The same /24 made room for its newest three by closing its three oldest idle ones.
        closed = [await asyncio.to_thread(closed_by_server, s, 0.5) for s in mine]
        assert closed == [True, True, True, False, False, False]
        assert await asyncio.to_thread(still_served, mine[-1])
        assert await asyncio.to_thread(still_served, other[0])
        for sock in mine + other:
            sock.close()
        # What /metrics reports as s25rbl_dns_shed_total.
        assert listeners.shed() == {
            "udp_answer_dropped": 0,
            "tcp_connection_refused": 0,
            "tcp_connection_evicted": 3,
        }


async def test_idle_connections_make_room_for_a_new_client() -> None:
    async with listening(TcpLimits(idle_timeout=30, max_connections=4)) as listeners:
        port = port_of(listeners)
        idle = await asyncio.to_thread(hold, port, [f"127.0.{n}.1" for n in range(1, 5)])
        newcomer = await asyncio.to_thread(hold, port, ["127.0.5.1"])
        assert await asyncio.to_thread(still_served, newcomer[0])
        assert await asyncio.to_thread(closed_by_server, idle[0], 1)  # the longest idle made room
        assert await asyncio.to_thread(still_served, idle[-1])
        for sock in idle + newcomer:
            sock.close()


def busy(port: int, sources: list[str]) -> list[socket.socket]:
    socks = hold(port, sources)
    for sock in socks:
        sock.sendall(frame(query(slow_name(), 5)))
    return socks


async def test_busy_connections_are_not_evicted_the_newcomer_is_refused() -> None:
    async with listening(TcpLimits(idle_timeout=30, max_connections=2)) as listeners:
        port = port_of(listeners)
        working = await asyncio.to_thread(busy, port, ["127.0.1.1", "127.0.2.1"])
        await asyncio.sleep(0.05)
        newcomer = await asyncio.to_thread(hold, port, ["127.0.3.1"])
        assert await asyncio.to_thread(closed_by_server, newcomer[0], 2)
        for sock in working:
            assert await asyncio.to_thread(still_served, sock)  # the slow answer came, then this
            sock.close()
        newcomer[0].close()
        assert listeners.tcp is not None and listeners.tcp.refused == 1
        assert listeners.shed()["tcp_connection_refused"] == 1
        assert listeners.shed()["tcp_connection_evicted"] == 0


async def test_udp_drops_are_counted_once_while_the_listeners_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    # A /metrics scrape may come while stop() waits for the TCP side: a counter must not
    # count the UDP readers' drops twice then, nor lose them after.
    listeners = Listeners(make_responder(), (Endpoint("127.0.0.1", 0),), TcpLimits(), 0)
    await listeners.start()
    (reader,) = listeners.udp
    reader._dropped = 5  # answers its socket did not take
    assert listeners.tcp is not None
    close = listeners.tcp.close
    seen: list[int] = []

    async def close_and_look() -> None:
        seen.append(listeners.shed()["udp_answer_dropped"])
        await close()

    monkeypatch.setattr(listeners.tcp, "close", close_and_look)
    await listeners.stop()
    assert seen == [5] and listeners.shed()["udp_answer_dropped"] == 5


# --- the end of a pipeline ------------------------------------------------------------------

ENDINGS = [
    ("short-message", lambda: frame(b"\x00\x01")),
    ("response-bit", lambda: frame(b"\x00\x09\x81\x00" + query(FAST)[4:])),
    ("end-of-file", lambda: b""),
]


def ask_then(port: int, ending: bytes) -> list[dnslib.DNSRecord]:
    sock = connect(port)
    sock.sendall(frame(query(slow_name(), 1)) + frame(query(FAST, 2)) + ending)
    if not ending:
        sock.shutdown(socket.SHUT_WR)
    try:
        return read_answers(sock)
    finally:
        sock.close()


@pytest.mark.parametrize("ending", [e[1] for e in ENDINGS], ids=[e[0] for e in ENDINGS])
async def test_what_was_asked_before_the_end_of_a_pipeline_is_answered(ending: object) -> None:
    async with listening(TcpLimits(idle_timeout=5)) as listeners:
        answers = await asyncio.to_thread(ask_then, port_of(listeners), ending())  # type: ignore[operator]
    assert sorted(a.header.id for a in answers) == [1, 2]
    slow = next(a for a in answers if a.header.id == 1)
    assert str(slow.rr[0].rdata) == "127.0.0.2"  # a real verdict, not a cancelled lookup


# --- UDP ------------------------------------------------------------------------------------


def burst(port: int, count: int, server_busy: threading.Event) -> int:
    """Send ``count`` queries while the server is busy, then count the answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.connect(("127.0.0.1", port))
    packet = query(FAST)
    for _ in range(count):
        sock.send(packet)
    server_busy.set()
    sock.settimeout(2)
    answered = 0
    with contextlib.suppress(TimeoutError):
        while sock.recv(4096):
            answered += 1
    sock.close()
    return answered


async def test_a_burst_that_arrives_while_the_server_is_busy_waits_in_the_kernel() -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    granted = set_receive_buffer(probe, 4 << 20)
    probe.close()
    if granted < 4 << 20:
        pytest.skip(f"the kernel grants {granted} octets (net.core.rmem_max, no CAP_NET_ADMIN)")
    async with listening(TcpLimits(), receive_buffer=4 << 20) as listeners:
        assert listeners.receive_buffers[0] >= 4 << 20
        sent = threading.Event()
        answered = asyncio.ensure_future(asyncio.to_thread(burst, port_of(listeners), 3000, sent))
        await asyncio.sleep(0.01)  # the client's thread starts
        sent.wait(10)  # the event loop is busy elsewhere (blocked) while the burst arrives
        assert await answered == 3000
