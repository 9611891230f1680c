"""TCP abuse and lookup floods against the real server, while well-behaved clients are served.

Never-reading clients, one source holding many connections, more idle connections than the
server takes, byte trickles; a flood of random addresses from one prefix (whose reverse zone
never answers) while a steady client keeps asking about fresh addresses. Marked
``adversarial``: about a minute in all.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dnslib
import pytest

from tests.integration.dns_abuse import abused_server, family, query, rev, rss
from tests.integration.server import RunningServer
from tests.integration.test_workers import sample, scrape
from tests.support.fakedns import FakeAuthority

pytestmark = pytest.mark.adversarial

FAST = rev("127.0.0.2")  # answered from memory


@pytest.fixture
def server(tmp_path: Path, upstream: FakeAuthority) -> Iterator[RunningServer]:
    running = abused_server(tmp_path, upstream, dns="tcp_max_per_prefix = 16\n")
    try:
        yield running
    finally:
        running.stop()


def connect(server: RunningServer, source: str = "127.0.0.1", rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect((server.host, server.port))
    return sock


def tcp_answer(sock: socket.socket, qid: int = 7) -> dnslib.DNSRecord | None:
    """Ask FAST on ``sock`` and read frames until its answer; None if the connection ends."""
    try:
        sock.sendall(struct.pack("!H", len(packet := query(FAST, qid=qid))) + packet)
        sock.settimeout(5)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
            while len(data) >= 2 and len(data) >= 2 + struct.unpack_from("!H", data)[0]:
                (length,) = struct.unpack_from("!H", data)
                reply = dnslib.DNSRecord.parse(data[2 : 2 + length])
                data = data[2 + length :]
                if reply.header.id == qid:
                    return reply
    except OSError:
        return None


def served(server: RunningServer, source: str = "127.0.0.1") -> bool:
    """A new well-behaved client gets its answer over TCP, and over UDP."""
    with connect(server, source) as sock:
        over_tcp = tcp_answer(sock)
    udp = socket.socket(family(server.host), socket.SOCK_DGRAM)
    udp.settimeout(5)
    udp.sendto(query(FAST, qid=9), (server.host, server.port))
    over_udp = dnslib.DNSRecord.parse(udp.recv(4096))
    udp.close()
    return over_tcp is not None and str(over_tcp.rr[0].rdata) == "127.0.0.2" and over_udp.header.id == 9


def closed(sock: socket.socket, within: float) -> bool:
    """True once the server has closed ``sock`` (end of file or reset) within ``within`` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
    return False


def open_now(sock: socket.socket) -> bool:
    """Not closed by the server, as far as a look without waiting tells."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


# --- TCP ------------------------------------------------------------------------------------


def flood_without_reading(server: RunningServer, total: int) -> socket.socket:
    """Pipeline up to ``total`` octets of queries and never read; stop when the server stops
    taking them."""
    sock = connect(server, rcvbuf=4096)
    sock.settimeout(0.5)
    batch = (struct.pack("!H", len(packet := query(FAST, qid=1))) + packet) * 2000
    sent = 0
    try:
        while sent < total:
            sent += sock.send(batch)
    except (TimeoutError, OSError):
        pass
    return sock


def established(port: int) -> int:
    """The server's established TCP connections on ``port``, as the kernel lists them."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                local, _remote, state = line.split()[1:4]
                if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


def test_clients_that_never_read_hold_little_and_are_dropped(server: RunningServer) -> None:
    before = rss(server)
    hogs: list[socket.socket] = []
    threads = [
        threading.Thread(target=lambda: hogs.append(flood_without_reading(server, 8_000_000)))
        for _ in range(12)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    peak = before
    for _ in range(30):  # while the server works through what they sent (the idle timeout is 2 s)
        peak = max(peak, rss(server))
        time.sleep(0.1)
    assert served(server)  # others are answered meanwhile
    assert peak - before < 16 << 20, f"RSS grew by {(peak - before) / 2**20:.1f} MiB"
    deadline = time.monotonic() + 15
    while established(server.port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert established(server.port) == 0  # they do not drain: dropped, with what they held
    for sock in hogs:
        sock.close()


def test_one_source_holds_at_most_its_share_of_connections(server: RunningServer) -> None:
    mine = [connect(server) for _ in range(100)]
    time.sleep(0.5)
    assert sum(open_now(sock) for sock in mine) <= 16  # tcp_max_per_prefix
    assert open_now(mine[-1])  # the newest stay; the longest idle made room
    assert served(server, "127.0.1.1")
    # The operator sees it: every connection closed to make room is counted in /metrics.
    text = scrape(server)
    assert sample(text, "s25rbl_dns_shed_total", event="tcp_connection_evicted") >= 84, text
    assert sample(text, "s25rbl_dns_shed_total", event="udp_answer_dropped") == 0, text
    for sock in mine:
        sock.close()


def test_idle_connections_make_room_for_new_clients(server: RunningServer) -> None:
    # 1,100 idle connections from 70 /24s: more than the 1,024 the server takes.
    idle = [connect(server, f"127.0.{n // 16 + 1}.{n % 16 + 1}") for n in range(1100)]
    time.sleep(0.5)
    assert sum(open_now(sock) for sock in idle) <= 1024
    assert served(server, "127.0.200.1")  # a new client is not refused
    for sock in idle:
        sock.close()


def trickle(server: RunningServer, stop: threading.Event) -> bool:
    """A frame of 100 octets announced, then one octet every 0.3 s; True once the server
    closed the connection."""
    sock = connect(server, "127.0.3.1")
    try:
        sock.sendall(b"\x00\x64")
        while not stop.wait(0.3):
            sock.send(b"\x00")
    except OSError:
        return True
    finally:
        sock.close()
    return False


def test_byte_trickles_do_not_keep_connections(server: RunningServer) -> None:
    stop = threading.Event()
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(trickle(server, stop))) for _ in range(16)]
    for thread in threads:
        thread.start()
    assert served(server)
    deadline = time.monotonic() + 15  # the idle timeout is 2 s
    while len(results) < len(threads) and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    for thread in threads:
        thread.join()
    assert results == [True] * len(threads)


# --- lookup floods --------------------------------------------------------------------------

STEADY = [f"203.0.113.{n}" for n in range(100, 130)]


def steady_names(upstream: FakeAuthority) -> None:
    for address in STEADY:
        name = f"p{address.rsplit('.', 1)[1]}-ipad12.tokyo.ocn.ne.jp"
        upstream.add_ptr(address, name)
        upstream.add_host(name, address)


def flood(
    server: RunningServer, source: str, network: str, stop: threading.Event, progress: list[int]
) -> int:
    """Random addresses of ``network`` from ``source``, as fast as a thread sends; how many
    (``progress[0]`` says how many so far)."""
    rng = random.Random(5)
    net = ipaddress.ip_network(network)
    sock = socket.socket(family(source), socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sock.setblocking(False)
    target = next(host for host, _port in server.dns if family(host) == family(source))
    port = next(port for host, port in server.dns if host == target)
    sent = 0
    while not stop.is_set():
        for _ in range(50):
            address = net[rng.randrange(net.num_addresses)]
            sock.sendto(query(rev(str(address)), qid=sent & 0xFFFF), (target, port))
            sent += 1
        try:
            while sock.recv(4096):  # keep the socket's buffer from filling
                pass
        except BlockingIOError:
            pass
        progress[0] = sent
        time.sleep(0.005)
    sock.close()
    return sent


@pytest.mark.parametrize(
    ("source", "network"),
    [
        ("::1", "2001:db8:bad:1::/64"),  # another client; one /64 of targets
        ("::1", "100.64.0.0/16"),  # another client; targets in 256 /24s
        ("127.0.0.1", "2001:db8:bad:1::/64"),  # the steady client's own address (a shared resolver)
    ],
    ids=["other-client-one-64", "other-client-many-24s", "same-client-one-64"],
)
def test_a_flood_from_one_prefix_does_not_switch_s25r_off(
    server: RunningServer, upstream: FakeAuthority, source: str, network: str
) -> None:
    steady_names(upstream)
    upstream.behave_network(network, "timeout")  # its owner's reverse zone never answers
    stop = threading.Event()
    counted: list[int] = []
    progress = [0]
    flooder = threading.Thread(target=lambda: counted.append(flood(server, source, network, stop, progress)))
    flooder.start()
    try:
        # Every lookup slot taken, the waiting room full: at least 1.5 s and 5,000 queries of
        # the flood before the steady client asks (a slow or busy machine sends them slower).
        time.sleep(1.5)
        deadline = time.monotonic() + 120
        while progress[0] <= 5000 and time.monotonic() < deadline:
            time.sleep(0.1)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.settimeout(5)
        verdicts = []
        for n, address in enumerate(STEADY):
            udp.sendto(query(rev(address), qid=n), (server.dns[0][0], server.dns[0][1]))
            reply = dnslib.DNSRecord.parse(udp.recv(4096))
            verdicts.append(str(reply.rr[0].rdata) if reply.rr else dnslib.RCODE[reply.header.rcode])
            time.sleep(0.05)
        udp.close()
    finally:
        stop.set()
        flooder.join()
    assert counted[0] > 5000  # it was a flood: the lookup bound is 32 (and as many waiting)
    assert verdicts == ["127.0.0.2"] * len(STEADY)  # real verdicts, not .5
