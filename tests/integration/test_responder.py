"""The real server on real sockets: SQLite file, migrations, the tests' authoritative upstream."""

from __future__ import annotations

import ipaddress
import json
import signal
import socket
import struct
import time

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.integration.conftest import (
    CLEAN,
    DYNAMIC,
    DYNAMIC6,
    HOTMAIL,
    NO_PTR,
    SERVFAIL,
    TIMEOUT,
    UNCONFIRMED,
)
from tests.integration.server import RunningServer
from tests.support.fakedns import FakeAuthority

BL, WL = "bl.s25rbl.test", "wl.s25rbl.test"


def name(ip: str, zone: str = BL) -> str:
    rev = ipaddress.ip_address(ip).reverse_pointer
    return rev.removesuffix(".in-addr.arpa").removesuffix(".ip6.arpa") + "." + zone


def udp(
    server: RunningServer,
    qname: str,
    qtype: str = "A",
    host: str | None = None,
    port: int | None = None,
    timeout: float = 5,
) -> dns.message.Message:
    q = dns.message.make_query(qname, qtype)
    return dns.query.udp(q, host or server.host, port=port or server.port, timeout=timeout)


def answers(reply: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in reply.answer for rd in rrset)


# (id, address, expected A, expected TXT)
VERDICTS = [
    ("rfc5782-listed", "127.0.0.2", "127.0.0.2", None),
    ("rfc5782-unlisted", "127.0.0.1", None, None),
    ("dynamic-ptr-rule1", DYNAMIC[0], "127.0.0.2", '"S25R check, be patient [r1]"'),
    ("clean-mail-server", CLEAN[0], None, None),
    ("ptr-not-confirmed", UNCONFIRMED[0], "127.0.0.4", '"reverse lookup failure, be patient"'),
    ("no-ptr", NO_PTR, "127.0.0.4", '"reverse lookup failure, be patient"'),
    ("upstream-servfail", SERVFAIL, "127.0.0.5", '"reverse lookup temporarily failed, be patient"'),
    ("builtin-whitelist-hotmail", HOTMAIL[0], None, None),
    ("ipv6-dynamic-rule6", DYNAMIC6[0], "127.0.0.2", '"S25R check, be patient [r6]"'),
]


@pytest.mark.parametrize(("ip", "a", "txt"), [v[1:] for v in VERDICTS], ids=[v[0] for v in VERDICTS])
def test_verdicts_over_udp_from_live_lookups(
    server: RunningServer, ip: str, a: str | None, txt: str | None
) -> None:
    reply = udp(server, name(ip), "A")
    if a is None:
        assert reply.rcode() == dns.rcode.NXDOMAIN
        assert reply.authority and reply.authority[0].rdtype == dns.rdatatype.SOA
        return
    assert reply.rcode() == dns.rcode.NOERROR
    assert answers(reply) == [a]
    if txt is not None:
        assert answers(udp(server, name(ip), "TXT")) == [txt]


def test_upstream_timeout_answers_tempfail_within_the_deadline(server: RunningServer) -> None:
    started = time.monotonic()
    reply = udp(server, name(TIMEOUT), "A")
    elapsed = time.monotonic() - started
    assert answers(reply) == ["127.0.0.5"]
    assert reply.answer[0].ttl == 30
    assert elapsed < 3.0  # the configured deadline is 1 s: never silence, never a hang


def test_tcp_answers_several_queries_on_one_connection(server: RunningServer) -> None:
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        queries = [dns.message.make_query(name(ip), "A") for ip in ("127.0.0.2", DYNAMIC[0], CLEAN[0])]
        for q in queries:
            wire = q.to_wire()
            sock.sendall(struct.pack("!H", len(wire)) + wire)
        replies = {}
        for _ in queries:
            reply, _ = dns.query.receive_tcp(sock, expiration=time.time() + 5)
            replies[reply.id] = reply
    by_name = {str(r.question[0].name).rstrip("."): r for r in replies.values()}
    assert answers(by_name[name("127.0.0.2")]) == ["127.0.0.2"]
    assert answers(by_name[name(DYNAMIC[0])]) == ["127.0.0.2"]
    assert by_name[name(CLEAN[0])].rcode() == dns.rcode.NXDOMAIN


def test_tcp_idle_connection_is_closed(server: RunningServer) -> None:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        started = time.monotonic()
        assert sock.recv(1) == b""  # the server closes after tcp_idle_timeout (2 s)
        assert time.monotonic() - started < 8


def test_ipv6_listener_answers(server: RunningServer) -> None:
    v6 = [d for d in server.dns if ":" in d[0]]
    assert v6, "the server should listen on [::1] too"
    reply = udp(server, name("127.0.0.2"), "A", host=v6[0][0], port=v6[0][1])
    assert answers(reply) == ["127.0.0.2"]
    reply = dns.query.tcp(
        dns.message.make_query(name("127.0.0.2"), "TXT"), v6[0][0], port=v6[0][1], timeout=5
    )
    assert reply.answer


def test_garbage_does_not_stop_the_server(server: RunningServer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for junk in (b"", b"\x00", b"\xff" * 11, b"\x12\x34" + b"\xff" * 600, bytes(range(256)) * 2):
            sock.sendto(junk, (server.host, server.port))
    with socket.create_connection((server.host, server.port), timeout=5) as tcp:
        tcp.sendall(b"\x00\x05hello\xff\xff")  # a frame of garbage, then a truncated frame
    assert answers(udp(server, name("127.0.0.2"), "A")) == ["127.0.0.2"]
    assert server.process.poll() is None


def test_cli_change_reaches_the_running_server(server: RunningServer) -> None:
    assert answers(udp(server, name(DYNAMIC[0]), "A")) == ["127.0.0.2"]
    result = server.cli("entries", "add", "white", "domain", "ocn.ne.jp", "--reason", "partner ISP relay")
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        reply = udp(server, name(DYNAMIC[0]), "A")
        if reply.rcode() == dns.rcode.NXDOMAIN:
            break
        time.sleep(0.1)
    assert reply.rcode() == dns.rcode.NXDOMAIN
    whitelisted = udp(server, name(DYNAMIC[0], WL), "A")
    assert answers(whitelisted) == ["127.0.0.2"]


def test_import_of_an_s25r_white_list_changes_answers(server: RunningServer) -> None:
    table = "# white_list\n/^p[0-9]+-ipad[0-9]+\\.tokyo\\.ocn\\.ne\\.jp$/ OK\n203.0.113.10 OK\n"
    result = server.cli("import", "-", input=table)
    assert result.returncode == 0, result.stderr
    assert "imported 2 entries" in result.stdout
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and udp(server, name(NO_PTR), "A").rcode() != dns.rcode.NXDOMAIN:
        time.sleep(0.1)
    assert udp(server, name(NO_PTR), "A").rcode() == dns.rcode.NXDOMAIN
    assert udp(server, name(DYNAMIC[0]), "A").rcode() == dns.rcode.NXDOMAIN


def test_check_explains_a_verdict(server: RunningServer) -> None:
    result = server.cli("check", DYNAMIC[0], "--json")
    assert result.returncode == 0, result.stderr
    explained = json.loads(result.stdout)
    assert explained["code"] == "127.0.0.2"
    assert explained["step"] == "s25r-rule"
    assert explained["rule"] == "r1"
    assert explained["ptr_names"] == [DYNAMIC[1]]
    assert explained["confirmed_names"] == [DYNAMIC[1]]
    text = server.cli("check", UNCONFIRMED[0])
    assert "no-confirmed-name" in text.stdout and UNCONFIRMED[1] in text.stdout


def test_builtin_whitelist_is_loaded_on_first_start(server: RunningServer) -> None:
    listed = server.cli("entries", "list", "--source", "builtin", "--json")
    domains = {e["value"] for e in json.loads(listed.stdout)}
    assert {
        "google.com",
        "hotmail.com",
        "yahoo.com",
        "yahoo.co.jp",
        "mixi.jp",
        "outlook.com",
        "protection.outlook.com",
        "amazonses.com",
        "sendgrid.net",
    } <= domains


def test_sigterm_stops_cleanly(server: RunningServer) -> None:
    started = time.monotonic()
    assert server.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 10
    assert "Traceback" not in "".join(server.output)


def test_hits_are_counted_and_written_when_the_server_stops(server: RunningServer) -> None:
    result = server.cli("entries", "add", "black", "ip", "198.51.100.77", "--reason", "known spam source")
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and answers(udp(server, name("198.51.100.77"), "A")) != ["127.0.0.3"]:
        time.sleep(0.1)
    for _ in range(3):
        assert answers(udp(server, name("198.51.100.77"), "TXT")) == ['"domain check, be patient"']
    assert server.stop() == 0
    listed = json.loads(server.cli("entries", "list", "--search", "198.51.100.77", "--json").stdout)
    assert listed[0]["hit_count"] >= 4  # the answer that ended the wait, and three more
    assert listed[0]["last_hit_at"] is not None


def test_config_error_stops_with_one_line_and_status_2(server: RunningServer) -> None:
    env = {**server.env, "S25RBL_DNS__TTL": "forever"}
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "s25rbl", "--config", str(server.config), "serve"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "s25rbl: config: dns.ttl: 'forever' is not an integer"


HL = "hl.s25rbl.test"


@pytest.mark.parametrize(
    ("hostname", "a"),
    [
        (DYNAMIC[1], "127.0.0.2"),
        (HOTMAIL[1], None),  # the builtin whitelist decides by name too
        (CLEAN[1], None),
        ("TEST", "127.0.0.2"),
        ("INVALID", None),
    ],
    ids=["dynamic", "builtin-whitelist", "clean", "rfc5782-test", "rfc5782-invalid"],
)
def test_hostname_zone_over_udp_without_lookups(
    server: RunningServer, upstream: FakeAuthority, hostname: str, a: str | None
) -> None:
    before = len(upstream.queries)
    reply = udp(server, f"{hostname}.{HL}", "A")
    assert answers(reply) == ([a] if a else [])
    if a is None:
        assert reply.rcode() == dns.rcode.NXDOMAIN
    assert len(upstream.queries) == before


def test_check_explains_a_name(server: RunningServer) -> None:
    explained = json.loads(server.cli("check", "--name", DYNAMIC[1], "--json").stdout)
    assert (explained["code"], explained["rule"], explained["name"]) == ("127.0.0.2", "r1", DYNAMIC[1])
