"""The DNS fuzzer against the real server: 10^5 mutated and random packets over UDP and TCP.

Every reply must parse (dnslib), echo the id, be a response and fit the size the client
allows; a packet with QR set (or shorter than a header) must get nothing; nothing may be left
unanswered; the server's memory must stay flat. Marked ``adversarial``: about half a minute.
"""

from __future__ import annotations

import random
import socket
import struct
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.dns_abuse import (
    CACHE_BYTES,
    abused_server,
    answerable,
    check_answer,
    family,
    frames,
    mutate,
    query,
    rev,
    rss,
    seeds,
    udp_limit,
)
from tests.integration.server import RunningServer
from tests.support.fakedns import FakeAuthority

pytestmark = pytest.mark.adversarial

UDP_PACKETS = 60_000
TCP_PACKETS = 40_000
WINDOW = 256  # UDP queries in flight
SILENT_IDS = range(50_000, 65_536)  # ids of packets that must get no answer


@pytest.fixture
def server(tmp_path: Path, upstream: FakeAuthority) -> Iterator[RunningServer]:
    running = abused_server(tmp_path, upstream)
    try:
        yield running
    finally:
        running.stop()


def udp_fuzz(host: str, port: int, packets: list[bytes]) -> list[str]:
    """Send ``packets`` (at most WINDOW awaiting an answer at once); what went wrong."""
    problems: list[str] = []
    sock = socket.socket(family(host), socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.connect((host, port))
    sock.settimeout(0.2)
    waiting: dict[int, tuple[bytes, float]] = {}
    free = iter(range(50_000))
    silent = iter(SILENT_IDS)
    todo = iter(packets)
    more = True
    while more or waiting:
        while more and len(waiting) < WINDOW:
            packet = next(todo, None)
            if packet is None:
                more = False
                break
            if len(packet) >= 2:
                if answerable(packet):
                    qid = next(free, None)
                    if qid is None:
                        free = iter(i for i in range(50_000) if i not in waiting)
                        qid = next(free)
                    packet = struct.pack("!H", qid) + packet[2:]
                    waiting[qid] = (packet, time.monotonic())
                else:
                    qid = next(silent, None)
                    if qid is None:
                        silent = iter(SILENT_IDS)
                        qid = next(silent)
                    packet = struct.pack("!H", qid) + packet[2:]
            sock.send(packet)
        try:
            reply = sock.recv(65535)
        except TimeoutError:
            reply = b""
        if len(reply) >= 2:
            (qid,) = struct.unpack_from("!H", reply)
            if qid in SILENT_IDS:
                problems.append(f"a packet with QR set or no header was answered: {reply[:16].hex()}")
            elif qid in waiting:
                sent, _ = waiting.pop(qid)
                problem = check_answer(sent, reply, udp_limit(sent))
                if problem:
                    problems.append(f"{problem}: {sent[:40].hex()}")
        now = time.monotonic()
        for qid, (sent, at) in list(waiting.items()):
            if now - at > 5:
                del waiting[qid]
                problems.append(f"no answer: {sent[:40].hex()}")
    sock.close()
    return problems


def tcp_batch(host: str, port: int, batch: list[bytes]) -> list[str]:
    """One connection: the batch pipelined up to its first unanswerable message (the server
    ends the connection there), then end of file; every query before it must be answered."""
    problems: list[str] = []
    sent: dict[int, bytes] = {}
    stream = b""
    for n, packet in enumerate(batch):
        if len(packet) >= 2:
            packet = struct.pack("!H", n) + packet[2:]
        stream += struct.pack("!H", len(packet)) + packet
        if not answerable(packet):
            break
        sent[n] = packet
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(stream)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            problems.append("connection reset instead of closed")
    for reply in frames(data):
        if len(reply) < 2:
            problems.append("an answer shorter than an id")
            continue
        packet = sent.pop(struct.unpack_from("!H", reply)[0], b"")
        if not packet:
            problems.append(f"an answer to nothing asked: {reply[:16].hex()}")
            continue
        problem = check_answer(packet, reply, None)
        if problem:
            problems.append(f"{problem}: {packet[:40].hex()}")
    problems.extend(f"no answer over TCP: {packet[:40].hex()}" for packet in sent.values())
    return problems


def test_fuzzed_packets_get_valid_answers_or_none_and_memory_stays_flat(server: RunningServer) -> None:
    rng = random.Random(12)
    corpus = seeds()
    udp = [mutate(rng, rng.choice(corpus), udp=True) for _ in range(UDP_PACKETS)]
    # Over TCP an unanswerable message ends the connection: each batch of 99 mutated queries
    # ends with one (a response, or no header), or with the client's end of file.
    answerable_tcp: list[bytes] = []
    silent_tcp: list[bytes] = []
    while len(answerable_tcp) < TCP_PACKETS * 99 // 100:
        packet = mutate(rng, rng.choice(corpus), udp=False)
        (answerable_tcp if answerable(packet) else silent_tcp).append(packet)
    batches = [
        answerable_tcp[i : i + 99] + silent_tcp[i // 99 : i // 99 + 1]
        for i in range(0, len(answerable_tcp), 99)
    ]
    assert sum(map(len, batches)) >= TCP_PACKETS
    # Warm up: the caches fill towards their bounds on the first tenth.
    warm = udp_fuzz(server.host, server.port, udp[: UDP_PACKETS // 10])
    before = rss(server)
    problems = warm + udp_fuzz(server.host, server.port, udp[UDP_PACKETS // 10 :])
    with ThreadPoolExecutor(8) as pool:
        for found in pool.map(lambda batch: tcp_batch(server.host, server.port, batch), batches):
            problems.extend(found)
    grown = rss(server) - before
    assert problems == []
    assert server.process.poll() is None
    assert grown < 4 * CACHE_BYTES, f"RSS grew by {grown / 2**20:.1f} MiB"


def test_padded_queries_do_not_grow_memory(server: RunningServer) -> None:
    """The reproduction of the report: 2,000 queries of 60 KB (a listed name, then padding)."""
    sock = socket.socket(family(server.host), socket.SOCK_DGRAM)
    sock.connect((server.host, server.port))
    sock.settimeout(5)
    plain = query(rev("127.0.0.2"), qid=1)
    sock.send(plain)
    assert sock.recv(4096)[3] & 0x0F == 0
    before = rss(server)
    rng = random.Random(3)
    for n in range(2000):
        sock.send(struct.pack("!H", n) + plain[2:] + rng.randbytes(60_000))
        reply = sock.recv(4096)
        assert reply[:2] == struct.pack("!H", n) and reply[3] & 0x0F == 1  # FORMERR
    grown = rss(server) - before
    sock.close()
    assert grown < 8 << 20, f"RSS grew by {grown / 2**20:.1f} MiB for 120 MB of padded queries"
