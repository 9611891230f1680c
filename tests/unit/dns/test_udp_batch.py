"""Batched UDP (recvmmsg/sendmmsg): many datagrams per call, the same answers as one datagram
per recvfrom/sendto, partial sends, datagrams larger than a buffer, IPv6, and the fallback to
the plain calls when batching is off, unavailable or fails. Real loopback sockets throughout."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import select
import socket
import time
from collections.abc import Awaitable
from typing import Any

import dnslib
import pytest

from s25rbl.config import Endpoint
from s25rbl.dns import batch as batch_module
from s25rbl.dns.batch import BatchUnsupported, UdpBatch
from s25rbl.dns.transport import Listeners
from tests.support.udp import exchange
from tests.unit.dns.test_transport_limits import FAST, make_responder, query, slow_name

pytestmark = pytest.mark.skipif(not batch_module.available(), reason="recvmmsg/sendmmsg not available")

BL = "bl.example"


def pair(host: str = "127.0.0.1") -> tuple[socket.socket, socket.socket]:
    """A server socket (non-blocking, as the listener's) and a client socket on loopback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = socket.socket(family, socket.SOCK_DGRAM)
    server.bind((host, 0))
    server.setblocking(False)
    client = socket.socket(family, socket.SOCK_DGRAM)
    client.bind((host, 0))
    client.settimeout(5)
    return server, client


def wait_readable(sock: socket.socket, count: int) -> None:
    """Until ``count`` datagrams wait on ``sock``. Loopback queues a datagram before sendto
    returns; the peek is a bound all the same."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if len(select.select([sock], [], [], 0.1)[0]) == 1:
            break
    time.sleep(0.05)
    assert count > 0


def collect(client: socket.socket, count: int) -> list[bytes]:
    return [client.recv(65536) for _ in range(count)]


def echo(data: bytes, tcp: bool, client: str | None) -> bytes:
    return b"re:" + data


def test_many_datagrams_are_read_and_answered_in_one_call() -> None:
    server, client = pair()
    batch = UdpBatch(server, 32)
    try:
        seen: list[tuple[bytes, str | None]] = []

        def handle(data: bytes, tcp: bool, peer: str | None) -> bytes:
            seen.append((data, peer))
            return b"re:" + data

        for n in range(20):
            client.sendto(b"q%02d" % n, server.getsockname())
        wait_readable(server, 20)
        assert batch.serve(None, handle, lambda result, addr: None) == 20
        assert [data for data, _ in seen] == [b"q%02d" % n for n in range(20)]
        assert {peer for _, peer in seen} == {"127.0.0.1"}
        assert sorted(collect(client, 20)) == [b"re:q%02d" % n for n in range(20)]
        assert batch.serve(None, handle, lambda result, addr: None) == 0  # nothing left: no error
    finally:
        batch.close()
        server.close()
        client.close()


def test_a_cached_answer_needs_no_handler() -> None:
    """What the answer cache gives is sent as it is; only the rest reach the handler."""
    server, client = pair()
    batch = UdpBatch(server, 8)
    try:
        handled: list[bytes] = []

        def cached(data: bytes, tcp: bool) -> bytes | None:
            return b"cached:" + data if data.startswith(b"c") else None

        def handle(data: bytes, tcp: bool, peer: str | None) -> bytes:
            handled.append(data)
            return b"handled:" + data

        for name in (b"c1", b"h1", b"c2"):
            client.sendto(name, server.getsockname())
        wait_readable(server, 3)
        assert batch.serve(cached, handle, lambda result, addr: None) == 3
        assert handled == [b"h1"]
        assert sorted(collect(client, 3)) == [b"cached:c1", b"cached:c2", b"handled:h1"]
    finally:
        batch.close()
        server.close()
        client.close()


def test_a_batch_reads_at_most_its_size_and_leaves_the_rest() -> None:
    server, client = pair()
    batch = UdpBatch(server, 4)
    try:
        for n in range(10):
            client.sendto(b"%d" % n, server.getsockname())
        wait_readable(server, 10)
        counts = [batch.serve(None, echo, lambda result, addr: None) for _ in range(4)]
        assert counts == [4, 4, 2, 0]
        assert sorted(collect(client, 10)) == sorted(b"re:%d" % n for n in range(10))
    finally:
        batch.close()
        server.close()
        client.close()


def test_an_answer_the_socket_refuses_is_dropped_and_the_rest_are_sent() -> None:
    """A partial send: sendmmsg stops at the answer it cannot send (larger than any IPv4
    datagram: EMSGSIZE); that one is dropped and counted, those after it still go out."""
    server, client = pair()
    batch = UdpBatch(server, 8)
    try:

        def handle(data: bytes, tcp: bool, peer: str | None) -> bytes:
            return b"x" * 65_520 if data == b"2" else b"re:" + data

        for n in range(5):
            client.sendto(b"%d" % n, server.getsockname())
        wait_readable(server, 5)
        assert batch.serve(None, handle, lambda result, addr: None) == 5
        assert sorted(collect(client, 4)) == [b"re:0", b"re:1", b"re:3", b"re:4"]
        assert batch.dropped == 1
    finally:
        batch.close()
        server.close()
        client.close()


def test_a_datagram_larger_than_a_buffer_is_not_answered() -> None:
    """A datagram cut short is never answered from its first octets (with the default 64 KiB
    buffers none can be: this uses small ones); the next one is."""
    server, client = pair()
    batch = UdpBatch(server, 4, slot=512)
    try:
        client.sendto(b"a" * 1000, server.getsockname())
        client.sendto(b"small", server.getsockname())
        wait_readable(server, 2)
        assert batch.serve(None, echo, lambda result, addr: None) == 2
        assert collect(client, 1) == [b"re:small"]
        assert batch.truncated == 1
    finally:
        batch.close()
        server.close()
        client.close()


def test_the_largest_datagram_is_read_whole() -> None:
    server, client = pair()
    batch = UdpBatch(server, 2)
    try:
        big = bytes(range(256)) * 255  # 65,280 octets
        client.sendto(big, server.getsockname())
        wait_readable(server, 1)
        got: list[bytes] = []
        batch.serve(None, lambda data, tcp, peer: got.append(data), lambda result, addr: None)
        assert got == [big]
    finally:
        batch.close()
        server.close()
        client.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_client_address_and_later_address_are_those_recvfrom_gives(host: str) -> None:
    server, client = pair(host)
    batch = UdpBatch(server, 4)
    try:
        peers: list[str | None] = []
        later: list[Any] = []

        def handle(data: bytes, tcp: bool, peer: str | None) -> Awaitable[bytes | None]:
            peers.append(peer)

            async def never() -> None:
                return None

            return never()

        def keep(result: Awaitable[bytes | None], addr: Any) -> None:
            later.append(addr)
            result.close()  # type: ignore[attr-defined]

        client.sendto(b"q", server.getsockname())
        wait_readable(server, 1)
        batch.serve(None, handle, keep)
        expected = client.getsockname()
        assert peers == [expected[0]]
        assert later == [expected]
        server.sendto(b"reply", later[0])  # the address works for sendto as it is
        assert client.recv(100) == b"reply"
    finally:
        batch.close()
        server.close()
        client.close()


def test_a_failing_call_raises_batch_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    server, client = pair()
    batch = UdpBatch(server, 4)
    monkeypatch.setattr(batch_module, "_LIBC", _Failing())
    try:
        with pytest.raises(BatchUnsupported):
            batch.serve(None, echo, lambda result, addr: None)
    finally:
        batch.close()
        server.close()
        client.close()


class _Failing:
    """A C library whose batched calls exist but fail as an old kernel's would."""

    def recvmmsg(self, *args: object) -> int:
        ctypes.set_errno(errno.ENOSYS)
        return -1

    sendmmsg = recvmmsg


# --- the listener: the same answers either way, and the fallback ----------------------------


async def answers(
    host: str, batch: int, packets: list[bytes], fast_path: bool = False
) -> tuple[dict[int, bytes], bool]:
    """Every answer by ID to ``packets`` sent at once, and whether the listener batched
    (in Python, unless ``fast_path``: the C path's own tests are in test_fast_path.py)."""
    listeners = Listeners(make_responder(), (Endpoint(host, 0),), None, 0, batch, fast_path)
    await listeners.start()
    try:
        batched = listeners.udp[0].batched
        port = listeners.bound[0].port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        got = await exchange(port, packets, family)
        return got, batched
    finally:
        await listeners.stop()


def mixed_packets() -> list[bytes]:
    """Cached and fresh answers, a lookup, errors, EDNS, a TC answer, a large request."""
    packets = []
    for qid in range(1, 121):
        kind = qid % 6
        if kind == 0:
            packets.append(query(slow_name(), qid))  # answered after a lookup
        elif kind == 1:
            record = dnslib.DNSRecord.question(f"2.0.0.127.{BL}", "TXT")
            record.add_ar(dnslib.EDNS0(udp_len=4096))
            record.header.id = qid
            packets.append(bytes(record.pack()))
        elif kind == 2:
            packets.append(query(f"nonsense.{BL}", qid))
        elif kind == 3:
            packets.append(query("example.org", qid))  # REFUSED
        elif kind == 4:
            record = dnslib.DNSRecord.question(BL, "ANY")
            record.header.id = qid
            padded = bytes(record.pack())
            packets.append(padded + b"\0" * 3000)  # trailing octets: answered in full
        else:
            packets.append(query(FAST, qid))
    return packets


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_batched_answers_are_the_plain_answers_byte_for_byte(host: str) -> None:
    packets = mixed_packets()
    batched, was_batched = await answers(host, 64, packets)
    plain, was_plain = await answers(host, 0, packets)
    in_c, was_c = await answers(host, 64, packets, fast_path=True)
    assert was_batched and was_c and not was_plain
    assert len(batched) == len(packets)
    assert batched == plain
    assert in_c == plain


async def test_batching_unavailable_falls_back_to_recvfrom(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_module, "_LIBC", None)
    got, batched = await answers("127.0.0.1", 64, [query(FAST, 7)])
    assert not batched
    assert dnslib.DNSRecord.parse(got[7]).a.rdata == dnslib.A("127.0.0.2")


async def test_a_batch_that_fails_at_run_time_falls_back_and_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    listeners = Listeners(make_responder(), (Endpoint("127.0.0.1", 0),), None, 0, 64, False)
    await listeners.start()
    try:
        reader = listeners.udp[0]
        assert reader.batched
        monkeypatch.setattr(batch_module, "_LIBC", _Failing())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.sendto(query(FAST, 9), ("127.0.0.1", listeners.bound[0].port))
            loop = asyncio.get_running_loop()
            data = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
        assert int.from_bytes(data[:2], "big") == 9
        assert not reader.batched  # one datagram per call from now on
    finally:
        await listeners.stop()
