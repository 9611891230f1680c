"""What the DNS adversarial suite shares: a real server configured small enough to fill its
bounds quickly, its memory as the kernel sees it, hostile packets, and checks of answers."""

from __future__ import annotations

import ipaddress
import random
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dnslib

from tests.integration.conftest import CLEAN, DYNAMIC, DYNAMIC6, NO_PTR, SERVFAIL, UNCONFIRMED
from tests.integration.server import RunningServer, start_server, write_config
from tests.support.fakedns import FakeAuthority

BL, WL, HL = "bl.s25rbl.test", "wl.s25rbl.test", "hl.s25rbl.test"
CACHE_BYTES = 8 * 1024 * 1024  # each of the two caches: small, so the fuzzer fills them


def abused_server(
    tmp_path: Path, upstream: FakeAuthority, dns: str = "", resolver: str = ""
) -> RunningServer:
    """A running node on SQLite with small caches, a low lookup bound and a 2 s TCP idle
    timeout; ``dns`` and ``resolver`` are more lines for those sections."""
    config = write_config(tmp_path / "s25rbl.toml", (upstream.host, upstream.port), tmp_path / "s25rbl.db")
    text = config.read_text()
    text = text.replace("[dns]\n", f"[dns]\nanswer_cache_bytes = {CACHE_BYTES}\n{dns}", 1)
    text = text.replace(
        "[resolver]\n", f"[resolver]\ncache_bytes = {CACHE_BYTES}\nmax_inflight = 32\n{resolver}", 1
    )
    config.write_text(text)
    return start_server(config)


def rss(server: RunningServer) -> int:
    """The server process's resident memory, in bytes."""
    with open(f"/proc/{server.process.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for the server process")


def rev(ip: str, zone: str = BL) -> str:
    address = ipaddress.ip_address(ip)
    return address.reverse_pointer.removesuffix(".in-addr.arpa").removesuffix(".ip6.arpa") + "." + zone


def query(name: str, qtype: str = "A", qid: int = 0, edns: int | None = None, do: bool = False) -> bytes:
    q = dnslib.DNSRecord.question(name, qtype)
    q.header.id = qid
    if edns is not None:
        q.add_ar(dnslib.EDNS0(udp_len=edns, flags="do" if do else ""))
    return bytes(q.pack())


def with_cookie(packet: bytes) -> bytes:
    """A query ending in an empty OPT record, with a COOKIE option in it."""
    option = struct.pack("!HH", 10, 8) + b"\x01\x02\x03\x04\x05\x06\x07\x08"
    return packet[:-2] + struct.pack("!H", len(option)) + option


def seeds() -> list[bytes]:
    """Well-formed questions of every kind the server answers, to mutate."""
    names = [
        rev("127.0.0.2"),
        rev("127.0.0.1"),
        rev(DYNAMIC[0]),
        rev(CLEAN[0]),
        rev(UNCONFIRMED[0]),
        rev(NO_PTR),
        rev(SERVFAIL),
        rev(DYNAMIC6[0]),
        rev("::ffff:127.0.0.2"),
        rev(DYNAMIC[0], WL),
        "3.2.1." + BL,
        "www." + BL,
        "256.0.0.1." + BL,
        BL,
        WL,
        f"{DYNAMIC[1]}.{HL}",
        f"hotmail.com.{HL}",
        f"test.{HL}",
        "example.com",
        "Bl.S25rbl.TeSt",
    ]
    out: list[bytes] = []
    for name in names:
        for qtype in ("A", "TXT", "ANY", "SOA", "NS", "MX", "AXFR"):
            out.append(query(name, qtype))
        out.append(query(name, "A", edns=1232))
        out.append(query(name, "TXT", edns=4096, do=True))
        out.append(with_cookie(query(name, "A", edns=512)))
    return out


def mutate(rng: random.Random, seed: bytes, udp: bool) -> bytes:
    """One hostile variant of ``seed``: flipped bits, bytes replaced, cut, grown, header
    fields set at random, or random bytes outright (60 KB of padding now and then, on UDP)."""
    packet = bytearray(seed)
    kind = rng.randrange(10)
    if kind == 0:
        for _ in range(rng.randint(1, 8)):
            packet[rng.randrange(len(packet))] ^= 1 << rng.randrange(8)
    elif kind == 1:
        for _ in range(rng.randint(1, 4)):
            packet[rng.randrange(len(packet))] = rng.randrange(256)
    elif kind == 2:
        del packet[rng.randrange(len(packet)) :]
    elif kind == 3:
        packet += rng.randbytes(rng.randint(1, 64))
    elif kind == 4:
        at = rng.randrange(12, len(packet))
        packet[at:at] = rng.randbytes(rng.randint(1, 16))
    elif kind == 5:
        struct.pack_into("!HHHHH", packet, 2, *(rng.randrange(65536) for _ in range(5)))
    elif kind == 6:
        struct.pack_into("!H", packet, 4 + 2 * rng.randrange(4), rng.choice((0, 1, 2, 255, 65535)))
    elif kind == 7:
        packet = bytearray(rng.randbytes(rng.randint(0, 600)))
    elif kind == 8 and udp and rng.random() < 0.05:
        packet += rng.randbytes(60_000)
    else:
        packet[2] |= 0x80  # a response: must never be answered
    return bytes(packet)


def answerable(packet: bytes) -> bool:
    """What the contract answers: at least a header, and not a response."""
    return len(packet) >= 12 and not packet[2] & 0x80


def udp_limit(packet: bytes) -> int:
    """The largest UDP answer the client of ``packet`` allows (its EDNS payload size, or 512);
    512 when the packet is too broken to say."""
    try:
        request = dnslib.DNSRecord.parse(packet)
    except Exception:
        return 512
    return max([512] + [int(rr.rclass) for rr in request.ar if rr.rtype == dnslib.QTYPE.OPT])


def check_answer(packet: bytes, reply: bytes, limit: int | None) -> str | None:
    """What is wrong with ``reply`` to ``packet`` (None: nothing): it must parse (dnslib, an
    independent codec), echo the id, be a response, and fit ``limit`` (UDP)."""
    if reply[:2] != packet[:2]:
        return "id not echoed"
    if len(reply) < 12 or not reply[2] & 0x80:
        return "not a response"
    if limit is not None and len(reply) > limit:
        return f"{len(reply)} octets for a client that takes {limit}"
    try:
        dnslib.DNSRecord.parse(reply)
    except Exception as exc:
        if "Invalid label" not in str(exc):
            return f"unparseable: {exc}"
        # dnslib takes only UTF-8 labels; the question echoed may hold any octets (RFC 2181
        # 11), so such an answer is parsed with dnspython instead.
        try:
            dns.message.from_wire(reply)
        except Exception as exc2:
            return f"unparseable: {exc2}"
    return None


def family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def frames(data: bytes) -> Iterator[bytes]:
    """The messages of a TCP stream (RFC 7766 framing); a cut last one is left out."""
    while len(data) >= 2:
        (length,) = struct.unpack_from("!H", data)
        if len(data) < 2 + length:
            return
        yield data[2 : 2 + length]
        data = data[2 + length :]
