"""``[dns] workers = 2``: two processes on one port share lists and changes, and stop together."""

from __future__ import annotations

import json
import os
import re
import socket
import time
import urllib.request
from pathlib import Path

import dns.message
import dns.query
import dns.rcode

from tests.integration.server import RunningServer, start_server, write_config
from tests.integration.test_responder import BL, name
from tests.support.fakedns import FakeAuthority


def ask_from_many_ports(host: str, port: int, qname: str, count: int = 40) -> list[int]:
    """Ask from ``count`` fresh sockets: SO_REUSEPORT spreads them over the workers."""
    rcodes: list[int] = []
    for _ in range(count):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            reply = dns.query.udp(dns.message.make_query(qname, "A"), host, port=port, timeout=5, sock=sock)
            rcodes.append(reply.rcode())
    return rcodes


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie (this sandbox's init reaps orphans lazily)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_two_workers_answer_and_follow_list_changes(tmp_path: Path, upstream: FakeAuthority) -> None:
    config = write_config(
        tmp_path / "s25rbl.toml",
        (upstream.host, upstream.port),
        tmp_path / "state" / "s25rbl.db",
        extra="",
    )
    text = config.read_text().replace("tcp_idle_timeout = 2", "tcp_idle_timeout = 2\nworkers = 2")
    config.write_text(text)
    server = start_server(config)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("dns-1" in line for line in server.output):
            time.sleep(0.2)
        qname = name("198.51.100.42")
        assert set(ask_from_many_ports(server.host, server.port, qname)) == {dns.rcode.NOERROR}  # no PTR: .4
        assert server.cli("entries", "add", "white", "ip", "198.51.100.42").returncode == 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if set(ask_from_many_ports(server.host, server.port, qname)) == {dns.rcode.NXDOMAIN}:
                break
            time.sleep(0.2)
        assert set(ask_from_many_ports(server.host, server.port, qname, 60)) == {dns.rcode.NXDOMAIN}
        workers = children(server.process.pid)
        assert workers, "the second worker should be a child process"
    finally:
        assert server.stop() == 0
    assert not [pid for pid in workers if running(pid)], "a worker outlived the server"


def scrape(server: RunningServer) -> str:
    assert server.api is not None
    host, port = server.api
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as reply:
        text: str = reply.read().decode()
    return text


def sample(text: str, metric: str, **labels: str) -> float:
    """The sum of ``metric``'s samples whose labels include ``labels``."""
    found = 0.0
    for line in text.splitlines():
        if not line.startswith(metric + "{"):
            continue
        body, value = line.rsplit(" ", 1)
        have = dict(re.findall(r'(\w+)="([^"]*)"', body))
        if all(have.get(k) == v for k, v in labels.items()):
            found += float(value)
    return found


def test_the_primary_reports_every_workers_counters(tmp_path: Path, upstream: FakeAuthority) -> None:
    # Questions from many source ports land on both workers; /metrics and /v1/stats, served by
    # the primary alone, must count all of them, and the workers' lookups and their latencies.
    upstream.add_ptr("198.51.100.77", "p77-dyn.example.net")
    upstream.add_host("p77-dyn.example.net", "198.51.100.77")
    config = write_config(
        tmp_path / "s25rbl.toml", (upstream.host, upstream.port), tmp_path / "state" / "s25rbl.db", extra=""
    )
    config.write_text(config.read_text().replace("tcp_idle_timeout = 2", "tcp_idle_timeout = 2\nworkers = 2"))
    server = start_server(config)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("dns-1" in line for line in server.output):
            time.sleep(0.2)
        asked = 200
        ask_from_many_ports(server.host, server.port, name("198.51.100.77"), asked // 2)  # no rule hit: NX
        ask_from_many_ports(server.host, server.port, f"2.0.0.127.{BL}", asked // 2)  # RFC 5782: listed
        deadline = time.monotonic() + 10
        while True:
            text = scrape(server)
            counted = sample(text, "s25rbl_dns_queries_total", zone="blocklist")
            if counted >= asked or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert counted == asked, text
        # Each worker looked the address up itself: more than one fresh lookup, all timed.
        fresh = sample(text, "s25rbl_rdns_lookups_total", outcome="fresh")
        timed = sample(text, "s25rbl_rdns_lookup_seconds_count")
        assert fresh == 2 and timed == 2, text
        token = server.cli("token", "create", "--name", "stats", "--scope", "read").stdout.strip()
        assert server.api is not None
        request = urllib.request.Request(
            f"http://{server.api[0]}:{server.api[1]}/v1/stats", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            stats = json.loads(reply.read())
        assert sum(stats["queries"]["blocklist"].values()) == asked
        assert stats["lookups"]["fresh"] == 2
    finally:
        assert server.stop() == 0
